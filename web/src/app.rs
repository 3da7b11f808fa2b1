//! The DOM layer: loads the model, reads the URL, binds the controls, runs inference after
//! every change and draws the result. Everything shown is derived from the URL hash.

use std::cell::RefCell;

use mgr::synthetic::N_CLASSES;
use mgr::trace::SampleTrace;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{
    CanvasRenderingContext2d, Document, HtmlAnchorElement, HtmlCanvasElement, HtmlElement,
    HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement, ReadableStreamDefaultReader,
    Response,
};

use crate::edges::edges_to_draw;
use crate::engine::{Engine, Inference};
use crate::render;
use crate::state::{
    EdgeView, Limits, MAX_MODEL_BYTES, MAX_SAMPLE, ViewState, check_model_size, embed_snippet,
    escape_html, model_json_url,
};
use crate::summary::canvas_summary;
use crate::tour::TOUR;

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
    static SHIPPED: RefCell<Option<(String, Vec<u8>)>> = const { RefCell::new(None) };
}

fn window() -> web_sys::Window {
    web_sys::window().expect("a browser window")
}

fn document() -> Document {
    window().document().expect("a document")
}

fn el<T: JsCast>(id: &str) -> Option<T> {
    document()
        .get_element_by_id(id)
        .and_then(|e| e.dyn_into::<T>().ok())
}

fn set_text(id: &str, text: &str) {
    if let Some(e) = document().get_element_by_id(id) {
        e.set_text_content(Some(text));
    }
}

fn set_html(id: &str, html: &str) {
    if let Some(e) = document().get_element_by_id(id) {
        e.set_inner_html(html);
    }
}

/// Shows messages (errors, ignored URL settings) in the message box; empty hides it.
fn show_messages(messages: &[String]) {
    set_text("message", &messages.join(" | "));
    if let Some(e) = el::<HtmlElement>("message") {
        e.set_hidden(messages.is_empty());
    }
}

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
fn absolute(url: &str) -> String {
    web_sys::Url::new_with_base(url, &window().location().href().unwrap_or_default())
        .map(|u| u.href())
        .unwrap_or_else(|_| url.to_string())
}

async fn fetch_model(meta_url: &str) -> Result<(String, Vec<u8>), String> {
    let meta = fetch_bytes(meta_url).await?;
    let meta = String::from_utf8(meta).map_err(|_| format!("{meta_url} is not text"))?;
    let weights_url = web_sys::Url::new_with_base(
        "model.bpk",
        &web_sys::Url::new_with_base(meta_url, &window().location().href().unwrap_or_default())
            .map_err(|_| format!("bad URL {meta_url}"))?
            .href(),
    )
    .map_err(|_| format!("bad URL {meta_url}"))?
    .href();
    let weights = fetch_bytes(&weights_url).await?;
    Ok((meta, weights))
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    spawn_local(async {
        if let Err(e) = boot().await {
            show_messages(&[e]);
            set_text("status", "failed");
        }
    });
}

async fn boot() -> Result<(), String> {
    set_text("status", "loading model...");
    let shipped = fetch_model("model/model.json").await?;
    let engine =
        Engine::load(&shipped.0, shipped.1.clone()).map_err(|e| format!("shipped model: {e}"))?;
    SHIPPED.with(|s| *s.borrow_mut() = Some(shipped));
    ENGINE.with(|e| *e.borrow_mut() = Some(engine));
    let mut problems = Vec::new();
    set_text(
        "model-source",
        &format!("shipped with the page ({})", absolute("model/model.json")),
    );
    let search = window().location().search().unwrap_or_default();
    if let Ok(params) = web_sys::UrlSearchParams::new_with_str(&search)
        && let Some(url) = params.get("model")
    {
        let loaded = match model_json_url(&url) {
            Ok(json_url) => fetch_model(&json_url)
                .await
                .and_then(|(m, w)| Engine::load(&m, w))
                .map(|engine| (engine, absolute(&json_url))),
            Err(e) => Err(e),
        };
        match loaded {
            Ok((engine, from)) => {
                ENGINE.with(|e| *e.borrow_mut() = Some(engine));
                set_text("model-source", &format!("{from} (from the link's ?model=)"));
            }
            Err(e) => problems.push(format!(
                "could not load ?model={url}: {e}; showing the shipped model"
            )),
        }
    }
    bind_controls();
    let onhash = Closure::<dyn FnMut()>::new(|| render_from_hash(Vec::new()));
    window().set_onhashchange(Some(onhash.as_ref().unchecked_ref()));
    onhash.forget();
    let onresize = Closure::<dyn FnMut()>::new(|| render_from_hash(Vec::new()));
    window().set_onresize(Some(onresize.as_ref().unchecked_ref()));
    onresize.forget();
    render_from_hash(problems);
    Ok(())
}

fn limits() -> Limits {
    ENGINE.with(|e| {
        e.borrow()
            .as_ref()
            .map(Engine::limits)
            .expect("engine loaded")
    })
}

fn current_state() -> (ViewState, Vec<String>) {
    let hash = window().location().hash().unwrap_or_default();
    ViewState::parse(&hash, &limits())
}

/// Changes the state; the hash change re-renders. A control changed during the tour leaves it
/// (the view stays, spelled out in the URL).
fn navigate(state: &ViewState) {
    let hash = ViewState {
        tour: None,
        ..state.clone()
    }
    .to_hash();
    go_to_hash(&hash);
}

/// Sets the URL hash (re-rendering when it is already that hash).
fn go_to_hash(hash: &str) {
    if window().location().hash().unwrap_or_default() == hash {
        render_from_hash(Vec::new());
    } else {
        let _ = window().location().set_hash(hash);
    }
}

/// Goes to tour step `step` (keeping embed mode).
fn go_to_tour_step(step: usize) {
    let (state, _) = current_state();
    let target = ViewState {
        tour: Some(step.min(TOUR.len() - 1)),
        embed: state.embed,
        ..ViewState::default()
    };
    go_to_hash(&target.to_hash());
}

/// Shows the tour box for `state`'s step, or hides it.
fn show_tour(state: &ViewState) {
    let Some(section) = el::<HtmlElement>("tour") else {
        return;
    };
    let Some(step) = state.tour else {
        section.set_hidden(true);
        return;
    };
    section.set_hidden(false);
    set_text("tour-title", TOUR[step].title);
    set_text("tour-text", TOUR[step].text);
    set_text(
        "tour-progress",
        &format!("step {} of {}", step + 1, TOUR.len()),
    );
    if let Some(link) = el::<HtmlAnchorElement>("tour-link") {
        link.set_href(&format!("#tour={step}"));
    }
    if let Some(b) = el::<web_sys::HtmlButtonElement>("tour-back") {
        b.set_disabled(step == 0);
    }
    if let Some(b) = el::<web_sys::HtmlButtonElement>("tour-next") {
        b.set_disabled(step + 1 == TOUR.len());
    }
}

fn on<F: FnMut() + 'static>(id: &str, event: &str, f: F) {
    if let Some(target) = document().get_element_by_id(id) {
        let cb = Closure::<dyn FnMut()>::new(f);
        let _ = target.add_event_listener_with_callback(event, cb.as_ref().unchecked_ref());
        cb.forget();
    }
}

/// Shows the `<iframe>` code of the current view (embed mode) and copies it to the clipboard
/// where the browser allows; the code stays selected in its box either way.
fn copy_embed_code() {
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
    // navigator.clipboard is an unstable web-sys API: reached through JS reflection.
    let copied = js_sys::Reflect::get(&window(), &"navigator".into())
        .and_then(|navigator| js_sys::Reflect::get(&navigator, &"clipboard".into()))
        .ok()
        .filter(|c| !c.is_undefined())
        .and_then(|clipboard| {
            let write: js_sys::Function = js_sys::Reflect::get(&clipboard, &"writeText".into())
                .ok()?
                .dyn_into()
                .ok()?;
            write.call1(&clipboard, &snippet.as_str().into()).ok()
        });
    set_text(
        "share-status",
        if copied.is_some() {
            "embed code copied"
        } else {
            "embed code selected: copy it with Ctrl+C"
        },
    );
}

/// Downloads the canvas as a PNG named after the view, for slides.
fn save_png() {
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
    let name = format!(
        "mgr-sample-{}{drop}-layer-{}.png",
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

fn bind_controls() {
    for name in ["vision", "audio", "text"] {
        on(&format!("keep-{name}"), "change", move || {
            let (mut s, _) = current_state();
            let keep = el::<HtmlInputElement>(&format!("keep-{name}"))
                .map(|i| i.checked())
                .unwrap_or(true);
            s.drop.retain(|d| d != name);
            if !keep {
                s.drop.push(name.to_string());
                let lim = limits();
                s.drop = lim
                    .modalities
                    .iter()
                    .filter(|m| s.drop.contains(m))
                    .cloned()
                    .collect();
                if s.drop.len() == lim.modalities.len() {
                    show_messages(&["at least one modality must stay".to_string()]);
                    if let Some(i) = el::<HtmlInputElement>(&format!("keep-{name}")) {
                        i.set_checked(true);
                    }
                    return;
                }
            }
            navigate(&s);
        });
    }
    on("sample", "change", || {
        let (mut s, _) = current_state();
        let value = el::<HtmlInputElement>("sample")
            .map(|i| i.value())
            .unwrap_or_default();
        match value.trim().parse::<usize>() {
            Ok(v) if v <= MAX_SAMPLE => {
                s.sample = v;
                navigate(&s);
            }
            _ => show_messages(&[format!(
                "sample `{value}` is not an index from 0 to {MAX_SAMPLE}"
            )]),
        }
    });
    on("prev", "click", || {
        let (mut s, _) = current_state();
        s.sample = s.sample.saturating_sub(1);
        navigate(&s);
    });
    on("next", "click", || {
        let (mut s, _) = current_state();
        s.sample = (s.sample + 1).min(MAX_SAMPLE);
        navigate(&s);
    });
    on("new-sample", "click", || {
        let (mut s, _) = current_state();
        s.sample = (js_sys::Math::random() * MAX_SAMPLE as f64) as usize;
        navigate(&s);
    });
    on("layer", "change", || {
        let (mut s, _) = current_state();
        s.layer = el::<HtmlSelectElement>("layer")
            .and_then(|e| e.value().parse().ok())
            .unwrap_or(0);
        navigate(&s);
    });
    on("lt", "change", || {
        let (mut s, _) = current_state();
        s.lt = el::<HtmlSelectElement>("lt").and_then(|e| e.value().parse().ok());
        if let Some(lt) = s.lt {
            s.layer = s.layer.min(lt.saturating_sub(1));
        }
        navigate(&s);
    });
    on("rho", "change", || {
        let (mut s, _) = current_state();
        s.rho = el::<HtmlInputElement>("rho")
            .and_then(|e| e.value().parse().ok())
            .filter(|r: &f64| *r > 0.0 && *r <= 1.0);
        navigate(&s);
    });
    on("rho", "input", || {
        let value = el::<HtmlInputElement>("rho")
            .map(|e| e.value())
            .unwrap_or_default();
        set_text("rho-value", &value);
    });
    on("edges", "change", || {
        let (mut s, _) = current_state();
        s.edges = el::<HtmlSelectElement>("edges")
            .and_then(|e| EdgeView::from_name(&e.value()))
            .unwrap_or_default();
        navigate(&s);
    });
    on("tour-start", "click", || go_to_tour_step(0));
    on("tour-back", "click", || {
        let (state, _) = current_state();
        go_to_tour_step(state.tour.unwrap_or(1).saturating_sub(1));
    });
    on("tour-next", "click", || {
        let (state, _) = current_state();
        go_to_tour_step(state.tour.map_or(0, |s| s + 1));
    });
    on("tour-exit", "click", || {
        let (state, _) = current_state();
        navigate(&state);
    });
    on("copy-embed", "click", copy_embed_code);
    on("save-png", "click", save_png);
    on("model-file", "change", || spawn_local(load_picked_files()));
    on("reset-model", "click", || {
        let shipped = SHIPPED.with(|s| s.borrow().clone());
        if let Some((meta, weights)) = shipped
            && let Ok(engine) = Engine::load(&meta, weights)
        {
            ENGINE.with(|e| *e.borrow_mut() = Some(engine));
            render_from_hash(vec!["back to the shipped model".into()]);
        }
    });
}

async fn load_picked_files() {
    let Some(input) = el::<HtmlInputElement>("model-file") else {
        return;
    };
    let Some(files) = input.files() else { return };
    let (mut meta, mut weights) = (None, None);
    for i in 0..files.length() {
        let Some(file) = files.get(i) else { continue };
        let Ok(buf) = JsFuture::from(file.array_buffer()).await else {
            continue;
        };
        let bytes = js_sys::Uint8Array::new(&buf).to_vec();
        if file.name().ends_with(".json") {
            meta = Some(String::from_utf8_lossy(&bytes).to_string());
        } else {
            weights = Some(bytes);
        }
    }
    let result = match (meta, weights) {
        (Some(m), Some(w)) => Engine::load(&m, w),
        _ => Err("pick both files of an export: model.json and model.bpk".to_string()),
    };
    match result {
        Ok(engine) => {
            ENGINE.with(|e| *e.borrow_mut() = Some(engine));
            render_from_hash(vec!["loaded the picked model".into()]);
        }
        Err(e) => {
            show_messages(&[format!(
                "could not load the picked model: {e}; still showing the previous model"
            )]);
        }
    }
}

fn sync_controls(state: &ViewState, limits: &Limits, model_rho: f64) {
    for name in &limits.modalities {
        if let Some(i) = el::<HtmlInputElement>(&format!("keep-{name}")) {
            i.set_checked(!state.drop.contains(name));
        }
    }
    if let Some(i) = el::<HtmlInputElement>("sample") {
        i.set_value(&state.sample.to_string());
    }
    let lt = state.lt.unwrap_or(limits.refine_layers);
    if let Some(s) = el::<HtmlSelectElement>("lt") {
        let options: String = (1..=limits.refine_layers)
            .map(|l| format!("<option value=\"{l}\">{l}</option>"))
            .collect();
        s.set_inner_html(&options);
        s.set_value(&lt.to_string());
    }
    if let Some(s) = el::<HtmlSelectElement>("layer") {
        let options: String = (0..lt)
            .map(|l| format!("<option value=\"{l}\">layer {}</option>", l + 1))
            .collect();
        s.set_inner_html(&options);
        s.set_value(&state.layer.to_string());
    }
    let rho = state.rho.unwrap_or(model_rho);
    if let Some(i) = el::<HtmlInputElement>("rho") {
        i.set_value(&rho.to_string());
    }
    set_text("rho-value", &format!("{rho}"));
    if let Some(s) = el::<HtmlSelectElement>("edges") {
        s.set_value(state.edges.name());
    }
    if let Some(body) = document().body() {
        let _ = if state.embed {
            body.class_list().add_1("embed")
        } else {
            body.class_list().remove_1("embed")
        };
    }
}

fn probability_rows(trace: &SampleTrace) -> String {
    let pred = trace.predicted_class.unwrap_or(0);
    (0..N_CLASSES.min(trace.output.len()))
        .map(|c| {
            let p = trace.output[c];
            let class = if c == pred { " class=\"pred\"" } else { "" };
            format!(
                "<div{class}><span class=\"cls\">{}</span><span class=\"bar\" style=\"width:{:.1}%\"></span><span class=\"p\">{:.3}</span></div>",
                mgr::synthetic::VOCABULARY[c],
                100.0 * p,
                p
            )
        })
        .collect()
}

fn render_from_hash(mut problems: Vec<String>) {
    let (state, parse_problems) = current_state();
    problems.extend(parse_problems);
    let started = window().performance().map(|p| p.now()).unwrap_or(0.0);
    let rendered = ENGINE.with(|e| {
        let engine_ref = e.borrow();
        let engine = engine_ref.as_ref().expect("engine loaded");
        let limits = engine.limits();
        let sample = engine.sample(state.sample);
        let available = state.available(&limits);
        let Inference { trace, complete } = engine.infer(&sample, &available, state.rho, state.lt);
        let elapsed = window().performance().map(|p| p.now()).unwrap_or(0.0) - started;
        let aucs = engine.ranking_auc(state.rho, state.lt);
        sync_controls(&state, &limits, engine.meta.model.rho);
        (sample, trace, complete, elapsed, aucs)
    });
    let (sample, trace, complete, elapsed, aucs) = rendered;
    let auc_text = |a: &Option<f64>| a.map_or("n/a".to_string(), |v| format!("{v:.2}"));
    let per_layer: Vec<String> = aucs
        .iter()
        .enumerate()
        .map(|(l, a)| {
            let shown = if l == state.layer {
                " class=\"shown\""
            } else {
                ""
            };
            format!("<span{shown}>layer {l}: <b>{}</b></span>", auc_text(a))
        })
        .collect();
    let sample_auc = trace.layers.get(state.layer).and_then(|layer| {
        let (scores, signal): (Vec<f32>, Vec<bool>) = layer
            .tokens
            .iter()
            .map(|t| {
                (
                    t.xi,
                    !sample.noise_tokens[t.origin.modality][t.origin.position],
                )
            })
            .unzip();
        mgr::ranking_quality::auc(&scores, &signal)
    });
    set_html(
        "ranking-auc",
        &format!(
            "Ranking AUC against the ground-truth noise tokens (test samples 0-{}, all modalities present; 0.5 = chance, 1 = every signal token above every noise token): {}. This sample, this layer: <b id=\"sample-auc\">{}</b>.",
            crate::engine::AUC_SAMPLES - 1,
            per_layer.join(", "),
            auc_text(&sample_auc)
        ),
    );
    set_text("timing", &format!("inference {elapsed:.1} ms"));
    let drawn_edges = trace
        .layers
        .get(state.layer)
        .map(|l| edges_to_draw(&l.edges, state.edges))
        .unwrap_or_default();
    if let Some(canvas) = el::<HtmlCanvasElement>("view") {
        let _ = canvas.set_attribute(
            "aria-label",
            &canvas_summary(&trace, state.sample, state.layer, drawn_edges.len()),
        );
        let width = canvas
            .parent_element()
            .map(|p| p.client_width() as f64)
            .unwrap_or(800.0)
            .clamp(280.0, 960.0);
        let (_, height) = render::layout(width);
        let ratio = window().device_pixel_ratio().max(1.0);
        canvas.set_width((width * ratio) as u32);
        canvas.set_height((height * ratio) as u32);
        let _ = canvas.style().set_property("width", &format!("{width}px"));
        let _ = canvas
            .style()
            .set_property("height", &format!("{height}px"));
        if let Ok(Some(ctx)) = canvas.get_context("2d")
            && let Ok(ctx) = ctx.dyn_into::<CanvasRenderingContext2d>()
        {
            let _ = ctx.set_transform(ratio, 0.0, 0.0, ratio, 0.0, 0.0);
            render::draw(
                &ctx,
                width,
                &sample,
                &trace,
                trace.layers.get(state.layer),
                &drawn_edges,
            );
        }
    }
    let label = mgr::synthetic::VOCABULARY[sample.label];
    let name = |t: &SampleTrace| {
        t.predicted_class
            .map(|c| mgr::synthetic::VOCABULARY[c])
            .unwrap_or("?")
    };
    set_html(
        "prediction",
        &format!(
            "<p>Sample {} is a <b>{label}</b> (shows: image {}, melody {}, text \"{}\").</p>\
             <div class=\"probs\"><div><h3>with the drops: <span id=\"pred-masked\">{}</span></h3>{}</div>\
             <div><h3>all present: <span id=\"pred-complete\">{}</span></h3>{}</div></div>",
            state.sample,
            mgr::synthetic::VOCABULARY[sample.shown[0]],
            mgr::synthetic::VOCABULARY[sample.shown[1]],
            escape_html(&sample.sentence()),
            name(&trace),
            probability_rows(&trace),
            name(&complete),
            probability_rows(&complete)
        ),
    );
    let table = trace.layers.get(state.layer).map(|layer| {
        let mut tokens: Vec<_> = layer.tokens.iter().collect();
        tokens.sort_by_key(|t| t.rank);
        let rows: String = tokens
            .iter()
            .map(|t| {
                let noise = sample.noise_tokens[t.origin.modality][t.origin.position];
                format!(
                    "<tr class=\"{}\"><td>{}</td><td>{} {}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td><td>{}</td></tr>",
                    if t.kept { "kept" } else { "biased" },
                    t.rank,
                    trace.modalities[t.origin.modality],
                    t.origin.position,
                    t.xi_f,
                    t.xi_e,
                    t.xi,
                    if t.kept { "kept" } else { "biased" },
                    if noise { "noise" } else { "" }
                )
            })
            .collect();
        format!("<table><thead><tr><th>rank</th><th>token</th><th>&xi;<sub>f</sub></th><th>&xi;<sub>e</sub></th><th>&xi;</th><th>split</th><th>truth</th></tr></thead><tbody>{rows}</tbody></table>")
    });
    set_html("tokens", &table.unwrap_or_default());
    show_tour(&state);
    let payload = serde_json::json!({ "state": state.to_hash(), "sample": state.sample, "trace": trace, "complete": complete, "ms": elapsed, "ranking_auc": aucs, "drawn_edges": drawn_edges.len() });
    set_text("mgr-trace", &payload.to_string());
    show_messages(&problems);
    set_text("status", "ready");
    if let Some(e) = el::<HtmlElement>("status") {
        let _ = e.set_attribute("data-ready", &state.to_hash());
    }
}
