// The browser end-to-end test: serves nothing itself; expects the built page at BASE_URL.
// Drops a modality, checks that the prediction and the kept/biased drawing change and match
// the native model (EXPECTED_* files from `cargo run -p mgr-web --example expected`), checks
// bad URL state and bad model URLs (missing, refused schemes, over 64 MB), the model's source
// line, the embed code (opened in an <iframe>), the PNG export, the edge view, the canvas text
// summary, the guided tour, and the AV-MNIST model (data switch, recording, credit; EXPECTED_AV*),
// and saves screenshots to SHOT_DIR.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const base = process.env.BASE_URL;
const sample = Number(process.env.SAMPLE ?? '3');
const expectedFull = JSON.parse(readFileSync(process.env.EXPECTED_FULL, 'utf8'));
const expectedDrop = JSON.parse(readFileSync(process.env.EXPECTED_DROP, 'utf8'));
const shots = process.env.SHOT_DIR ?? '.';

function fail(msg) { console.error(`e2e FAILED: ${msg}`); process.exit(1); }

function keptSets(trace) {
  return trace.layers.map(l => l.tokens.filter(t => t.kept).map(t => `${t.origin.modality}:${t.origin.position}`).sort().join(' '));
}

function compare(label, got, want) {
  if (got.predicted_class !== want.predicted_class) fail(`${label}: predicted ${got.predicted_class}, native ${want.predicted_class}`);
  got.output.forEach((p, i) => {
    if (Math.abs(p - want.output[i]) > 1e-3) fail(`${label}: p[${i}] = ${p}, native ${want.output[i]}`);
  });
  const [g, w] = [keptSets(got), keptSets(want)];
  g.forEach((s, l) => { if (s !== w[l]) fail(`${label}: layer ${l} kept {${s}} vs native {${w[l]}}`); });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--autoplay-policy=no-user-gesture-required', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
// What the default view downloads, gzipped as a static host serves it (-9, the bound a host's
// gzip reaches): page, JS, wasm, the synthetic model. Measured first, in a fresh context.
const BUDGET = 1.5e6;
{
  const context = await browser.newContext();
  const fresh = await context.newPage();
  const bodies = [];
  fresh.on('response', r => bodies.push(r.body().then(b => [r.url(), b]).catch(() => [r.url(), Buffer.alloc(0)])));
  await fresh.goto(`${base}/`);
  await fresh.waitForFunction(() => document.getElementById('status')?.dataset.ready !== undefined, null, { timeout: 60000 });
  const files = await Promise.all(bodies);
  const sizes = files.map(([url, b]) => [url.replace(base, ''), gzipSync(b, { level: 9 }).length]);
  const total = sizes.reduce((a, [, n]) => a + n, 0);
  console.log(`default view: ${sizes.map(([u, n]) => `${u} ${(n / 1e3).toFixed(0)} kB`).join(', ')}; ${(total / 1e6).toFixed(2)} MB gzipped in all`);
  if (total > BUDGET) fail(`the default view downloads ${total} bytes gzipped, over ${BUDGET}`);
  if (sizes.some(([u]) => /model-avmnist/.test(u))) fail('the default view fetches the AV-MNIST model');
  if (sizes.some(([u]) => /favicon/.test(u))) fail('the page requests a favicon');
  await context.close();
}

const page = await browser.newPage({ viewport: { width: 1000, height: 1100 } });
const errors = [];
page.on('pageerror', e => errors.push(String(e)));
// Console errors (a 404, an uncaught rejection) on every view but the deliberately broken model
// URLs (?model=...), which log their failed fetch.
const consoleErrors = [];
page.on('console', m => { if (m.type() === 'error' && !page.url().includes('?model=')) consoleErrors.push(`${page.url()}: ${m.text()}`); });

async function traceAfter(hashPart) {
  await page.waitForFunction(h => (document.getElementById('status')?.dataset.ready ?? '').includes(h), hashPart, { timeout: 60000 });
  return JSON.parse(await page.textContent('#mgr-trace'));
}

await page.goto(`${base}/#sample=${sample}`);
const full = await traceAfter(`sample=${sample}`);
compare('all present', full.trace, expectedFull.trace);

// One palette: the legend's swatches have the canvas's colours (web/src/palette.rs), and the
// modality checkboxes come from the model (none are in index.html).
const swatches = await page.$$eval('#legend .swatch', els => els.map(e => {
  const s = getComputedStyle(e);
  return [s.borderTopColor, s.backgroundColor];
}));
const wantSwatches = [['rgb(0, 150, 70)', null], [null, 'rgba(220, 30, 30, 0.35)'], [null, 'rgba(30, 30, 30, 0.55)'], [null, 'rgb(230, 120, 0)']];
wantSwatches.forEach(([border, fill], i) => {
  const [gotBorder, gotFill] = swatches[i] ?? [];
  if ((border && gotBorder !== border) || (fill && gotFill !== fill)) fail(`legend swatch ${i}: border ${gotBorder}, fill ${gotFill}; the canvas draws ${border ?? fill}`);
});
const boxes = await page.$$eval('#modalities input[type=checkbox]', els => els.map(e => e.id));
if (boxes.join() !== full.trace.modalities.map(m => `keep-${m}`).join()) fail(`modality checkboxes ${boxes} for modalities ${full.trace.modalities}`);

// Half precision: the page's weights are f16, their f32 originals (web/reference/) predict the
// same class on each view, every probability within HALF_TOLERANCE (web/src/engine.rs).
const HALF_TOLERANCE = 2e-3;
const [f32Full, f32Drop, f32AvDrop] = process.env.EXPECTED_F32.split(',').map(f => JSON.parse(readFileSync(f, 'utf8')));
function compareHalf(label, got, want) {
  if (got.predicted_class !== want.predicted_class) fail(`${label}: predicted ${got.predicted_class}, f32 weights ${want.predicted_class}`);
  const worst = Math.max(...got.output.map((p, i) => Math.abs(p - want.output[i])));
  if (worst > HALF_TOLERANCE) fail(`${label}: a probability ${worst} from the f32 weights'`);
  return worst;
}
const halfDiffs = [compareHalf('all present, f32 weights', full.trace, f32Full.trace)];

// The ranking's AUC against the ground-truth noise: shown, and equal to the native engine's.
const aucText = await page.textContent('#ranking-auc');
if (!/layer 0/.test(aucText)) fail(`no ranking AUC shown: "${aucText}"`);
if (!Array.isArray(full.ranking_auc) || full.ranking_auc.length !== expectedFull.ranking_auc.length) fail(`ranking_auc ${JSON.stringify(full.ranking_auc)} vs native ${JSON.stringify(expectedFull.ranking_auc)}`);
full.ranking_auc.forEach((a, l) => {
  if (Math.abs(a - expectedFull.ranking_auc[l]) > 1e-3) fail(`layer ${l} AUC ${a}, native ${expectedFull.ranking_auc[l]}`);
});
// What the learned ranking keeps, in plain words, with the class evidence it follows.
const driversText = await page.textContent('#drivers');
if (!/What the learned ranking keeps in layer 0/.test(driversText) || !/class evidence/.test(driversText)) fail(`drivers line: "${driversText}"`);
if (!Array.isArray(full.ranking_drivers) || full.ranking_drivers.length !== full.ranking_auc.length) fail(`ranking_drivers ${JSON.stringify(full.ranking_drivers)}`);

await page.uncheck('#keep-audio');
const dropped = await traceAfter('drop=audio');
if (!page.url().includes('drop=audio')) fail(`the URL does not hold the state: ${page.url()}`);
compare('audio dropped', dropped.trace, expectedDrop.trace);
halfDiffs.push(compareHalf('audio dropped, f32 weights', dropped.trace, f32Drop.trace));

// What the ranking does with the missing audio, next to the picture: per layer the placeholders'
// share of the kept slots against their share of the tokens, and the below-chance sentence where
// a layer's AUC is under 0.5 or the placeholders take at least their share.
const BELOW_CHANCE = 'this layer does not tell noise from signal better than chance';
if (JSON.stringify(dropped.honesty) !== JSON.stringify(expectedDrop.honesty)) fail(`honesty ${JSON.stringify(dropped.honesty)} vs native ${JSON.stringify(expectedDrop.honesty)}`);
for (const [l, layer] of dropped.trace.layers.entries()) {
  const kept = layer.tokens.filter(t => t.kept);
  const audioKept = kept.filter(t => t.origin.modality === 1).length;
  const text = await page.textContent(`#honesty-${l}`);
  if (!text.includes(`audio placeholders take ${audioKept} of ${kept.length} kept slots`)) fail(`layer ${l} placeholders: "${text}"`);
  const share = audioKept / kept.length, tokenShare = layer.tokens.filter(t => t.origin.modality === 1).length / layer.tokens.length;
  const belowChance = full.ranking_auc[l] < 0.5 || (audioKept > 0 && share >= tokenShare);
  if (text.includes(BELOW_CHANCE) !== belowChance) fail(`layer ${l} (AUC ${full.ranking_auc[l]}, share ${share} vs ${tokenShare}): "${text}"`);
}
if (!(await page.textContent('#ranking-honesty')).includes(BELOW_CHANCE)) fail('sample 3 without audio: no below-chance sentence (layer 1 AUC below 0.5)');

// The token table as CSV for a worksheet: one row per token of the shown layer, by rank.
await page.click('#tokens-box summary');
await page.click('#copy-csv');
const csv = (await page.inputValue('#tokens-csv')).trim().split('\n');
if (csv[0] !== 'layer,rank,modality,position,xi_f,xi_e,xi,split,truth,placeholder') fail(`CSV header "${csv[0]}"`);
const shownLayer = dropped.trace.layers[0];
if (csv.length !== shownLayer.tokens.length + 1) fail(`CSV has ${csv.length - 1} rows for ${shownLayer.tokens.length} tokens`);
const byRank = [...shownLayer.tokens].sort((a, b) => a.rank - b.rank);
csv.slice(1).forEach((row, i) => {
  const f = row.split(','), t = byRank[i];
  const want = [0, t.rank, dropped.trace.modalities[t.origin.modality], t.origin.position];
  if (f.slice(0, 4).join() !== want.join() || Math.abs(Number(f[6]) - t.xi) > 1e-6 || f[7] !== (t.kept ? 'kept' : 'biased')
    || f[9] !== (t.origin.modality === 1 ? 'yes' : 'no') || !['signal', 'noise', 'conflicting'].includes(f[8])) fail(`CSV row ${i}: "${row}" for ${JSON.stringify(t)}`);
});
if (!/CSV/.test(await page.textContent('#csv-status'))) fail('no CSV status');
compare('comparison panel', dropped.complete, expectedFull.trace);
if (dropped.trace.available[1] !== false) fail('the trace does not say audio is absent');
const changed = dropped.trace.predicted_class !== full.trace.predicted_class
  || dropped.trace.output.some((p, i) => Math.abs(p - full.trace.output[i]) > 1e-4);
if (!changed) fail('dropping audio changed nothing in the prediction');
if (JSON.stringify(keptSets(dropped.trace)) === JSON.stringify(keptSets(full.trace))) fail('dropping audio changed nothing in the kept/biased split');
await page.screenshot({ path: `${shots}/e2e-drop-audio.png`, fullPage: true });
const timing = await page.textContent('#timing');

// "Copy embed code": an <iframe> of this view in embed mode; opened, it shows the same trace.
await page.click('#copy-embed');
const snippet = await page.inputValue('#embed-code');
const src = (snippet.match(/^<iframe src="([^"]+)" width="400" height="600"/) ?? [])[1];
if (!src) fail(`embed code is not a 400 x 600 iframe: "${snippet}"`);
const embedUrl = src.replaceAll('&amp;', '&');
if (!embedUrl.includes('drop=audio') || !embedUrl.includes('embed=1')) fail(`embed URL ${embedUrl}`);
const host = await browser.newPage({ viewport: { width: 1000, height: 800 } });
await host.setContent(`<!doctype html><body>${snippet}</body>`);
const frame = await (await host.waitForSelector('iframe')).contentFrame();
await frame.waitForFunction(() => (document.getElementById('status')?.dataset.ready ?? '').includes('embed=1'), null, { timeout: 60000 });
const embedded = JSON.parse(await frame.textContent('#mgr-trace'));
compare('embed snippet', embedded.trace, expectedDrop.trace);
if (await frame.isVisible('#controls')) fail('the embedded view shows the controls');
// The embedded view keeps the below-chance line (layer 1's AUC is under 0.5), not the full reading.
if (!(await frame.isVisible('#ranking-honesty .compact')) || !(await frame.textContent('#ranking-honesty .compact')).includes(BELOW_CHANCE)) fail('the embedded view drops the below-chance line');
if (await frame.isVisible('#ranking-honesty .full')) fail('the embedded view shows the full ranking reading');
await host.close();

// "Save image": a PNG of the canvas, named after the view.
const [download] = await Promise.all([page.waitForEvent('download'), page.click('#save-png')]);
const pngPath = `${shots}/${download.suggestedFilename()}`;
await download.saveAs(pngPath);
const png = readFileSync(pngPath);
if (!/^mgr-sample-\d+-drop-audio-layer-\d+\.png$/.test(download.suggestedFilename())) fail(`PNG name ${download.suggestedFilename()}`);
if (png.length < 1000 || png.readUInt32BE(0) !== 0x89504e47) fail(`not a PNG: ${png.length} bytes`);

// The canvas in words (aria-label) says what the picture shows.
const aria = await page.getAttribute('#view', 'aria-label');
const keptNow = dropped.trace.layers[0].tokens.filter(t => t.kept).length;
if (!/audio missing/.test(aria) || !aria.includes(`keeps ${keptNow} of ${dropped.trace.layers[0].tokens.length} tokens`)) fail(`canvas summary: "${aria}"`);

// Edges: by default one per biased token (its strongest), all strong ones on request.
const layer0 = dropped.trace.layers[0];
const biasedWithEdges = new Set(layer0.edges.filter(e => e.weight > 0).map(e => e.from)).size;
if (dropped.drawn_edges !== biasedWithEdges) fail(`default view draws ${dropped.drawn_edges} edges, expected one per biased token (${biasedWithEdges})`);
await page.selectOption('#edges', 'all');
const allEdges = await traceAfter('edges=all');
const maxW = Math.max(...layer0.edges.map(e => e.weight));
const strong = layer0.edges.filter(e => e.weight > 0 && e.weight >= 0.25 * maxW).length;
if (allEdges.drawn_edges !== strong) fail(`edges=all draws ${allEdges.drawn_edges}, expected ${strong}`);
console.log(`edges drawn with audio dropped: ${dropped.drawn_edges} (strongest per biased token) vs ${allEdges.drawn_edges} (all strong)`);
await page.screenshot({ path: `${shots}/e2e-drop-audio-all-edges.png`, fullPage: true });
await page.selectOption('#edges', 'strongest');
await traceAfter('layer=0');

// The ranking control: each reference ranking a view of its own (#ranking=NAME), equal to the
// native engine under that ranking, its grades on the page, and the URL round trip through the
// control. The oracles only where the data has ground truth.
for (const ranking of ['random', 'inverted', 'oracle-noise', 'oracle-conflict', 'oracle-majority']) {
  const want = JSON.parse(readFileSync(`${process.env.EXPECTED_RANKING_DIR}/expected-ranking-${ranking}.json`, 'utf8'));
  await page.goto(`${base}/#sample=${sample}&layer=0&ranking=${ranking}`);
  const view = await traceAfter(`ranking=${ranking}`);
  compare(`ranking ${ranking}`, view.trace, want.trace);
  if (view.ranking !== ranking || (await page.inputValue('#ranking')) !== ranking) fail(`ranking control shows ${await page.inputValue('#ranking')} for ${ranking}`);
  const grades = view.ranking_grades;
  if (!Array.isArray(grades) || grades.length !== want.ranking_grades.length) fail(`ranking ${ranking}: grades ${JSON.stringify(grades)}`);
  grades.forEach((g, l) => {
    const w = want.ranking_grades[l];
    for (const key of ['auc_modality_mean', 'auc_pooled']) if (Math.abs(g[key] - w[key]) > 1e-3) fail(`ranking ${ranking} layer ${l} ${key} ${g[key]}, native ${w[key]}`);
    if ((g.conflict.auc === null) !== (w.conflict.auc === null) || Math.abs((g.conflict.auc ?? 0) - (w.conflict.auc ?? 0)) > 1e-3) fail(`ranking ${ranking} layer ${l} conflict AUC ${g.conflict.auc}, native ${w.conflict.auc}`);
  });
  const gradeText = await page.textContent('#grade-0');
  if (!/within each modality/.test(gradeText) || !/conflict AUC/.test(gradeText)) fail(`ranking ${ranking}: grade line "${gradeText}"`);
  if (!(await page.isVisible('#conflict-line'))) fail(`ranking ${ranking}: no conflict line`);
  // The noise oracle ranks every signal token above every noise token: its noise AUC is 1.
  if (ranking === 'oracle-noise' && grades[0].auc_modality_mean < 0.999) fail(`oracle-noise layer 0 within-modality AUC ${grades[0].auc_modality_mean}, not 1`);
  await page.screenshot({ path: `${shots}/e2e-ranking-${ranking}.png`, fullPage: true });
}
await page.selectOption('#ranking', 'learned');
const backToLearned = await traceAfter(`sample=${sample}&layer=0`);
if (page.url().includes('ranking=')) fail(`the learned ranking keeps ranking= in the URL: ${page.url()}`);
compare('ranking back to learned', backToLearned.trace, expectedFull.trace);
await page.selectOption('#ranking', 'random');
await traceAfter('ranking=random');
if (!page.url().includes('ranking=random')) fail(`the ranking control does not reach the URL: ${page.url()}`);
await page.goto(`${base}/#data=avmnist&sample=0&ranking=oracle-noise`);
await traceAfter('data=avmnist&sample=0');
if (!/ground truth/.test(await page.textContent('#message'))) fail('no message for an oracle ranking on AV-MNIST');
if ((await page.$$eval('#ranking option', os => os.map(o => o.value))).some(v => v.startsWith('oracle'))) fail('AV-MNIST offers an oracle ranking');

// The guided tour: each step a URL (#tour=N) with its paragraph; next/back walk the steps, and
// leaving keeps the view.
await page.goto(`${base}/#sample=0`);
await traceAfter('sample=0');
if (await page.isVisible('#tour')) fail('the tour box shows outside the tour');
await page.click('#tour-start');
const step0 = await traceAfter('tour=0');
if (!(await page.isVisible('#tour')) || !/present/.test(await page.textContent('#tour-title'))) fail('tour step 1 not shown');
compare('tour step 1', step0.trace, expectedFull.trace);
await page.click('#tour-next');
const step1 = await traceAfter('tour=1');
if (!page.url().endsWith('#tour=1')) fail(`tour URL ${page.url()}`);
compare('tour step 2 (audio dropped)', step1.trace, expectedDrop.trace);
if (!/E_miss/.test(await page.textContent('#tour-text'))) fail('tour step 2 text');
for (let n = 2; n < 6; n++) { await page.click('#tour-next'); await traceAfter(`tour=${n}`); }
const lastStep = await traceAfter('tour=5');
if (!(await page.isDisabled('#tour-next')) || !/oracle/.test(await page.textContent('#tour-text'))) fail('last tour step');
if (lastStep.ranking !== 'oracle-conflict') fail(`the last tour step splits by ${lastStep.ranking}, not the oracle`);
if ((await page.getAttribute('#tour-link', 'href')) !== '#tour=5') fail('tour step link');
await page.click('#tour-back');
await traceAfter('tour=4');
if (!/AUC/.test(await page.textContent('#tour-text'))) fail('tour step 5 text');
await page.click('#tour-back');
const step3 = await traceAfter('tour=3');
if (step3.drawn_edges <= dropped.drawn_edges) fail(`tour step 4 should draw every strong edge (${step3.drawn_edges})`);
await page.click('#tour-exit');
await traceAfter('edges=all');
if (await page.isVisible('#tour') || !page.url().includes('drop=audio')) fail(`leaving the tour: ${page.url()}`);
await page.goto(`${base}/#tour=9`);
await traceAfter('sample=0');
if (!/tour step/.test(await page.textContent('#message'))) fail('no message for a missing tour step');

// Out-of-range URL state: a visible message, and the page keeps working.
await page.goto(`${base}/#sample=99999999&layer=7&rho=5&drop=vision,audio,text`);
await traceAfter('sample=0');
const msg = await page.textContent('#message');
if (!/sample/.test(msg) || !(await page.isVisible('#message'))) fail(`no visible message for bad URL state: "${msg}"`);

// A model URL that is not a model: a message, and the shipped model still answers.
await page.goto(`${base}/?model=does-not-exist/#sample=${sample}`);
const again = await traceAfter(`sample=${sample}`);
const msg2 = await page.textContent('#message');
if (!/could not load/.test(msg2)) fail(`no message for a bad ?model=: "${msg2}"`);
compare('shipped model after a bad ?model=', again.trace, expectedFull.trace);

// Where the model came from is on the page.
await page.goto(`${base}/#sample=${sample}`);
await traceAfter(`sample=${sample}`);
const shippedSource = await page.textContent('#model-source');
if (!/shipped/.test(shippedSource) || !shippedSource.includes(`${base}/model/model.json`)) fail(`model source: "${shippedSource}"`);

// A model loaded from a relative path: named as the link's, and used.
await page.goto(`${base}/?model=model/#sample=${sample}`);
const linked = await traceAfter(`sample=${sample}`);
const linkedSource = await page.textContent('#model-source');
if (!linkedSource.includes(`${base}/model/model.json`) || !/\?model=/.test(linkedSource)) fail(`linked model source: "${linkedSource}"`);
if (await page.isVisible('#message')) fail(`a good ?model= gave a message: "${await page.textContent('#message')}"`);
compare('model from ?model=model/', linked.trace, expectedFull.trace);

// Schemes other than http(s) are refused by name, nothing is fetched, the shipped model answers.
for (const [url, scheme] of [['javascript:alert(1)', 'javascript'], ['data:application/json,{}', 'data'], ['file:///etc/passwd', 'file']]) {
  await page.goto(`${base}/?model=${encodeURIComponent(url)}#sample=${sample}`);
  const refused = await traceAfter(`sample=${sample}`);
  const m = await page.textContent('#message');
  if (!m.includes(`\`${scheme}:\``) || !/showing the shipped model/.test(m)) fail(`?model=${url}: message "${m}"`);
  if (!/shipped/.test(await page.textContent('#model-source'))) fail(`?model=${url}: source not the shipped model`);
  compare(`shipped model after ?model=${url}`, refused.trace, expectedFull.trace);
}

// A model over 64 MB (big/model.bpk, made by web-e2e.sh) is refused from its announced size,
// before its body is downloaded.
await page.goto(`${base}/?model=big/#sample=${sample}`);
const big = await traceAfter(`sample=${sample}`);
const bigMsg = await page.textContent('#message');
if (!/64 MB/.test(bigMsg) || !/not downloaded/.test(bigMsg)) fail(`no size refusal for big/: "${bigMsg}"`);
compare('shipped model after a too-large ?model=', big.trace, expectedFull.trace);

// Embed mode at 400 px: controls hidden, canvas drawn.
await page.setViewportSize({ width: 400, height: 600 });
await page.goto(`${base}/#sample=${sample}&drop=text&embed=1`);
await traceAfter('embed=1');
if (await page.isVisible('#controls')) fail('embed mode shows the controls');
// It fits the 400 x 600 iframe the embed code gives: no scrolling either way.
const [scrollW, scrollH] = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]);
if (scrollW > 400 || scrollH > 600) fail(`embed view is ${scrollW} x ${scrollH} px, over 400 x 600`);
console.log(`embed view: ${scrollW} x ${scrollH} px`);
await page.screenshot({ path: `${shots}/e2e-embed-400px.png`, fullPage: true });

// Real data: the AV-MNIST model (#data=avmnist), its digit and spectrogram, the recording's
// play button and the FSDD credit; equal to the native engine on the same shipped sample.
await page.setViewportSize({ width: 1000, height: 1100 });
const expectedAv = JSON.parse(readFileSync(process.env.EXPECTED_AV, 'utf8'));
const expectedAvDrop = JSON.parse(readFileSync(process.env.EXPECTED_AV_DROP, 'utf8'));
const avSample = expectedAv.sample;
await page.goto(`${base}/#sample=${sample}`);
await traceAfter(`sample=${sample}`);
await page.selectOption('#data', 'avmnist');
const av0 = await traceAfter('data=avmnist&sample=0');
if (av0.data !== 'avmnist' || av0.trace.modalities.join(',') !== 'vision,audio') fail(`data switch: ${av0.data} ${av0.trace.modalities}`);
await page.goto(`${base}/#data=avmnist&sample=${avSample}`);
const av = await traceAfter(`data=avmnist&sample=${avSample}`);
compare('AV-MNIST all present', av.trace, expectedAv.trace);
if (av.recording !== expectedAv.recording || av.label !== expectedAv.label) fail(`AV-MNIST sample: ${av.recording} ${av.label} vs ${expectedAv.recording} ${expectedAv.label}`);
if (await page.isVisible('#keep-text')) fail('AV-MNIST shows a text checkbox');
if (!(await page.isVisible('#play'))) fail('no play button for AV-MNIST');
const credit = await page.textContent('#credit');
if (!(await page.isVisible('#credit')) || !/Free Spoken Digit Dataset/.test(credit) || !/CC BY-SA 4\.0/.test(credit)) fail(`FSDD credit: "${credit}"`);
if (!(await page.textContent('#prediction')).includes(av.recording)) fail('the sample text does not name its recording');
await page.click('#play');
await page.waitForFunction(() => /playing/.test(document.getElementById('audio-status')?.textContent ?? ''), null, { timeout: 10000 })
  .catch(async () => fail(`play: "${await page.textContent('#audio-status')}"`));
const audioText = await page.textContent('#audio-status');
if (!audioText.includes(av.recording)) fail(`play status: "${audioText}"`);
await page.uncheck('#keep-audio');
const avDrop = await traceAfter('data=avmnist&sample=' + avSample + '&drop=audio');
compare('AV-MNIST audio dropped', avDrop.trace, expectedAvDrop.trace);
halfDiffs.push(compareHalf('AV-MNIST audio dropped, f32 weights', avDrop.trace, f32AvDrop.trace));
console.log(`half-precision weights: largest probability difference from f32 ${Math.max(...halfDiffs).toExponential(1)} (tolerance ${HALF_TOLERANCE})`);
for (const [l, layer] of avDrop.trace.layers.entries()) {
  const kept = layer.tokens.filter(t => t.kept);
  const audioKept = kept.filter(t => t.origin.modality === 1).length;
  if (!(await page.textContent(`#honesty-${l}`)).includes(`audio placeholders take ${audioKept} of ${kept.length} kept slots`)) fail(`AV-MNIST layer ${l} placeholders`);
}
if (avDrop.trace.available[1] !== false) fail('AV-MNIST trace does not say audio is absent');
await page.screenshot({ path: `${shots}/e2e-avmnist-drop-audio.png`, fullPage: true });
const [avDownload] = await Promise.all([page.waitForEvent('download'), page.click('#save-png')]);
if (avDownload.suggestedFilename() !== `mgr-avmnist-sample-${avSample}-drop-audio-layer-0.png`) fail(`AV-MNIST PNG name ${avDownload.suggestedFilename()}`);
await page.goto(`${base}/#data=avmnist&sample=999`);
await traceAfter('data=avmnist&sample=0');
if (!/sample `999`/.test(await page.textContent('#message'))) fail('no message for an AV-MNIST sample that is not shipped');
// Back to synthetic from the data menu: the three checkboxes again, no play button.
await page.selectOption('#data', 'synthetic');
await traceAfter('sample=0');
if (!(await page.isVisible('#keep-text')) || (await page.isVisible('#play'))) fail('switching back to synthetic');
// A view with nothing to warn about: AV-MNIST (no ground truth to rank against) with both
// modalities present has no placeholder line and no below-chance sentence.
await page.goto(`${base}/#data=avmnist&sample=${avSample}`);
await traceAfter(`data=avmnist&sample=${avSample}`);
if ((await page.textContent('#ranking-honesty')).trim() !== '') fail(`AV-MNIST, nothing dropped: "${await page.textContent('#ranking-honesty')}"`);
// AV-MNIST embedded at 400 x 600: fits, credit included.
await page.setViewportSize({ width: 400, height: 600 });
await page.goto(`${base}/#data=avmnist&sample=${avSample}&drop=audio&embed=1`);
await traceAfter('embed=1');
const [avW, avH] = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]);
if (avW > 400 || avH > 600) fail(`AV-MNIST embed view is ${avW} x ${avH} px, over 400 x 600`);
if (!(await page.isVisible('#credit'))) fail('the embedded AV-MNIST view drops the credit');
if (!(await page.isVisible('#ranking-honesty .compact'))) fail('the embedded AV-MNIST view (placeholders take 77% of layer 0) drops the below-chance line');
await page.screenshot({ path: `${shots}/e2e-avmnist-embed-400px.png`, fullPage: true });

// A phone, 390 px wide: the picture in the first screen, above the controls, nothing wider than
// the screen.
await page.setViewportSize({ width: 390, height: 844 });
await page.goto(`${base}/#sample=${sample}&drop=audio`);
await traceAfter('drop=audio');
const phone = await page.evaluate(() => ({
  canvas: document.getElementById('view').getBoundingClientRect().top,
  controls: document.getElementById('controls').getBoundingClientRect().top,
  width: document.documentElement.scrollWidth,
}));
if (phone.canvas >= 844 * 0.5 || phone.canvas > phone.controls || phone.width > 390) fail(`390 px: canvas at ${phone.canvas} px, controls at ${phone.controls}, page ${phone.width} px wide`);
await page.screenshot({ path: `${shots}/e2e-phone-390px.png`, fullPage: false });

if (errors.length) fail(`page errors: ${errors.join('; ')}`);
if (consoleErrors.length) fail(`console errors: ${consoleErrors.join('; ')}`);
await browser.close();
console.log(`e2e ok: prediction all=${full.trace.predicted_class} drop-audio=${dropped.trace.predicted_class}; ${timing}`);
