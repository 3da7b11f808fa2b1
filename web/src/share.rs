//! What a teacher takes away from a view: its embed code, the token table as CSV, the picture
//! as a PNG, and (AV-MNIST) the sample's recording played.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{HtmlAnchorElement, HtmlCanvasElement, HtmlTextAreaElement};

use crate::fetch::window;
use crate::page::{TOKENS_CSV, current_state, document, el, set_text, with_engine};
use crate::sample::PageSample;
use crate::state::{Data, embed_snippet};

/// Shows the `<iframe>` code of the current view (embed mode) and copies it to the clipboard
/// where the browser allows; the code stays selected in its box either way.
pub(crate) fn copy_embed_code() {
    let (state, _) = current_state();
    let location = window().location();
    let page = format!(
        "{}{}{}",
        location.origin().unwrap_or_default(),
        location.pathname().unwrap_or_default(),
        location.search().unwrap_or_default()
    );
    let snippet = embed_snippet(&page, &state);
    if let Some(area) = el::<HtmlTextAreaElement>("embed-code") {
        area.set_value(&snippet);
        area.set_hidden(false);
        area.select();
    }
    set_text(
        "share-status",
        if copy_to_clipboard(&snippet) {
            "embed code copied"
        } else {
            "embed code selected: copy it with Ctrl+C"
        },
    );
}

/// Puts `text` on the clipboard where the browser allows it (a secure page); false where not.
fn copy_to_clipboard(text: &str) -> bool {
    // navigator.clipboard is an unstable web-sys API: reached through JS reflection.
    js_sys::Reflect::get(&window(), &"navigator".into())
        .and_then(|navigator| js_sys::Reflect::get(&navigator, &"clipboard".into()))
        .ok()
        .filter(|c| !c.is_undefined())
        .and_then(|clipboard| {
            let write: js_sys::Function = js_sys::Reflect::get(&clipboard, &"writeText".into())
                .ok()?
                .dyn_into()
                .ok()?;
            let promise: js_sys::Promise = write
                .call1(&clipboard, &text.into())
                .ok()?
                .dyn_into()
                .ok()?;
            // A refused write (no permission) rejects later: caught, so it is not an uncaught
            // error in the console; the text stays selected in its box for Ctrl+C.
            let ignore = Closure::<dyn FnMut(JsValue)>::new(|_: JsValue| {});
            let _ = promise.catch(&ignore);
            ignore.forget();
            Some(())
        })
        .is_some()
}

/// Shows the shown layer's token table as CSV (for a worksheet), selected, and copies it.
pub(crate) fn copy_tokens_csv() {
    let csv = TOKENS_CSV.with(|c| c.borrow().clone());
    if let Some(area) = el::<HtmlTextAreaElement>("tokens-csv") {
        area.set_value(&csv);
        area.set_hidden(false);
        area.select();
    }
    set_text(
        "csv-status",
        if copy_to_clipboard(&csv) {
            "table copied as CSV"
        } else {
            "table selected as CSV: copy it with Ctrl+C"
        },
    );
}

/// Downloads the canvas as a PNG named after the view, for slides.
pub(crate) fn save_png() {
    let (state, _) = current_state();
    let Some(canvas) = el::<HtmlCanvasElement>("view") else {
        return;
    };
    let Ok(url) = canvas.to_data_url_with_type("image/png") else {
        set_text("share-status", "this browser cannot export the picture");
        return;
    };
    let drop = if state.drop.is_empty() {
        String::new()
    } else {
        format!("-drop-{}", state.drop.join("-"))
    };
    // Synthetic keeps the names slides already use; other data says which it is.
    let data = if state.data == Data::default() {
        String::new()
    } else {
        format!("{}-", state.data.name())
    };
    let name = format!(
        "mgr-{data}sample-{}{drop}-layer-{}.png",
        state.sample, state.layer
    );
    if let Ok(link) = document().create_element("a")
        && let Ok(link) = link.dyn_into::<HtmlAnchorElement>()
    {
        link.set_href(&url);
        link.set_download(&name);
        link.click();
        set_text("share-status", &format!("saved {name}"));
    }
}

/// Plays the current AV-MNIST sample's recording through Web Audio, at its own sample rate.
pub(crate) fn play_recording() {
    let (state, _) = current_state();
    let found = with_engine(state.data, |engine| {
        let rate = engine.samples.as_ref()?.sample_rate;
        match engine.sample(state.sample) {
            PageSample::Avmnist(s) => Some((s.wave, s.recording, rate)),
            PageSample::Synthetic(_) => None,
        }
    })
    .flatten();
    let Some((wave, recording, rate)) = found else {
        set_text("audio-status", "this sample has no recording");
        return;
    };
    let played = (|| -> Result<f64, JsValue> {
        let ctx = web_sys::AudioContext::new()?;
        let samples: Vec<f32> = wave.iter().map(|&v| f32::from(v) / 32768.0).collect();
        let buffer = ctx.create_buffer(1, samples.len() as u32, rate as f32)?;
        buffer.copy_to_channel(&samples, 0)?;
        let source = ctx.create_buffer_source()?;
        source.set_buffer(Some(&buffer));
        source.connect_with_audio_node(&ctx.destination())?;
        source.start()?;
        Ok(samples.len() as f64 / f64::from(rate))
    })();
    match played {
        Ok(seconds) => set_text(
            "audio-status",
            &format!(
                "playing {recording} ({seconds:.2} s, as recorded: without the noise mixed into the model's input)"
            ),
        ),
        Err(e) => set_text(
            "audio-status",
            &format!("this browser cannot play audio here: {e:?}"),
        ),
    }
}
