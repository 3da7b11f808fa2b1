//! Downloading a model export: `model.json`, the `model.bpk` beside it and the samples file it
//! names, each refused by its announced size over [`MAX_MODEL_BYTES`] or stopped when its body
//! grows past it. The DOM layer's only network code.

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{ReadableStreamDefaultReader, Response};

use crate::engine::{PageMeta, WebMeta};
use crate::state::{MAX_MODEL_BYTES, check_model_size};

/// The page's window (the page runs in one; app.rs reads the DOM through it too).
pub(crate) fn window() -> web_sys::Window {
    web_sys::window().expect("a browser window")
}

/// The files of one exported model: `model.json`, `model.bpk` and (AV-MNIST) the samples.
pub type ModelFiles = (String, Vec<u8>, Option<Vec<u8>>);

/// Downloads `url` whole, refusing it before the body is read when its announced size is over
/// [`MAX_MODEL_BYTES`], and stopping the download when the body grows past it (a server may
/// announce no size, or a compressed one).
async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let resp = JsFuture::from(window().fetch_with_str(url))
        .await
        .map_err(|e| format!("cannot fetch {url}: {e:?}"))?;
    let resp: Response = resp
        .dyn_into()
        .map_err(|_| format!("{url}: not a response"))?;
    if !resp.ok() {
        return Err(format!("cannot fetch {url}: HTTP {}", resp.status()));
    }
    if let Ok(Some(length)) = resp.headers().get("content-length")
        && let Ok(length) = length.trim().parse::<u64>()
    {
        check_model_size(url, length)?;
    }
    let Some(body) = resp.body() else {
        return Ok(Vec::new());
    };
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| format!("{url}: download failed: {e:?}"))?;
        let done = js_sys::Reflect::get(&chunk, &"done".into())
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true);
        if done {
            return Ok(bytes);
        }
        let value = js_sys::Reflect::get(&chunk, &"value".into())
            .map_err(|e| format!("{url}: download failed: {e:?}"))?;
        let part = js_sys::Uint8Array::new(&value);
        let total = bytes.len() as u64 + u64::from(part.length());
        if total > MAX_MODEL_BYTES {
            let _ = reader.cancel();
            return Err(format!(
                "{url} is over the page's limit of {} MB; download stopped",
                MAX_MODEL_BYTES / (1024 * 1024)
            ));
        }
        bytes.extend(part.to_vec());
    }
}

/// `url` made absolute against the page, so the page can say exactly where a model came from.
pub fn absolute(url: &str) -> String {
    web_sys::Url::new_with_base(url, &window().location().href().unwrap_or_default())
        .map(|u| u.href())
        .unwrap_or_else(|_| url.to_string())
}

/// `name` resolved against the folder of `meta_url` (itself resolved against the page).
fn beside(meta_url: &str, name: &str) -> Result<String, String> {
    let base =
        web_sys::Url::new_with_base(meta_url, &window().location().href().unwrap_or_default())
            .map_err(|_| format!("bad URL {meta_url}"))?
            .href();
    web_sys::Url::new_with_base(name, &base)
        .map(|u| u.href())
        .map_err(|_| format!("bad URL {name} beside {meta_url}"))
}

/// Downloads an export: `model.json`, the `model.bpk` beside it, and the samples file it names.
pub async fn fetch_model(meta_url: &str) -> Result<ModelFiles, String> {
    let meta = fetch_bytes(meta_url).await?;
    let meta = String::from_utf8(meta).map_err(|_| format!("{meta_url} is not text"))?;
    let parsed = WebMeta::parse(&meta).map_err(|e| format!("{meta_url}: {e}"))?;
    let weights = fetch_bytes(&beside(meta_url, "model.bpk")?).await?;
    let samples = match &parsed.samples_file {
        Some(file) => {
            // Only a plain file name beside model.json: the export writes no other.
            if file.contains(['/', '\\', ':', '?', '#']) {
                return Err(format!(
                    "{meta_url}: samples_file `{file}` is not a file name"
                ));
            }
            Some(fetch_bytes(&beside(meta_url, file)?).await?)
        }
        None => None,
    };
    Ok((meta, weights, samples))
}
