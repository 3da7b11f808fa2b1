// The page's inference time after a change, as its corner shows it (#timing, the same number as
// the trace's "ms"): loads the built page at BASE_URL, walks ROUNDS changes of sample and of the
// dropped modality, and prints the median and quartiles in ms for each shipped model and kind
// of change.
import { chromium } from 'playwright-core';

const base = process.env.BASE_URL;
const rounds = Number(process.env.ROUNDS ?? '90');
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1000, height: 1100 } });

const ready = () => page.evaluate(() => document.getElementById('status')?.dataset.ready ?? '');

// Each change differs from the one before (the sample changes), so the page's ready mark does.
async function msAfter(hash) {
  const before = await ready();
  await page.evaluate(h => { location.hash = h; }, hash);
  await page.waitForFunction(b => (document.getElementById('status')?.dataset.ready ?? '') !== b,
    before, { timeout: 60000 });
  return JSON.parse(await page.textContent('#mgr-trace')).ms;
}

function quantile(sorted, q) { return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]; }

for (const data of ['synthetic', 'avmnist']) {
  const prefix = data === 'synthetic' ? '' : 'data=avmnist&';
  await page.goto(`${base}/#${prefix}sample=23`);
  await page.waitForFunction(() => (document.getElementById('status')?.dataset.ready ?? '') !== '',
    null, { timeout: 60000 });
  // Three kinds of change, in turn: a new sample with every modality (the model runs on one
  // sample), the audio of that sample dropped (one: the trace with everything is kept from the
  // change before), and a new sample with the audio dropped (two: with and without it).
  const kinds = ['new sample, every modality', 'same sample, audio dropped', 'new sample, audio dropped'];
  const times = Object.fromEntries(kinds.map(k => [k, []]));
  for (let i = 0; i < rounds; i++) {
    const kind = i % 3;
    const sample = Math.floor(i / 3) * 2 + (kind === 2 ? 1 : 0);
    times[kinds[kind]].push(await msAfter(`#${prefix}sample=${sample % 24}${kind ? '&drop=audio' : ''}`));
  }
  for (const [kind, list] of Object.entries(times)) {
    list.sort((a, b) => a - b);
    console.log(`page inference ${data}, ${kind}: ` +
      `median ${quantile(list, 0.5).toFixed(1)} ms, quartiles ${quantile(list, 0.25).toFixed(1)}-` +
      `${quantile(list, 0.75).toFixed(1)} ms over ${list.length} changes`);
  }
}
await browser.close();
