//! The DOM layer: loads the model, reads the URL, binds the controls, runs inference after
//! every change and draws the result. Everything shown is derived from the URL hash.

use mgr::trace::SampleTrace;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{
    CanvasRenderingContext2d, HtmlAnchorElement, HtmlCanvasElement, HtmlElement, HtmlInputElement,
    HtmlSelectElement,
};

use crate::actions::{self, Action};
use crate::engine::Engine;
use crate::fetch::{absolute, fetch_model, window};
use crate::page::{
    PENDING, TOKENS_CSV, current_data, current_state, document, el, install, limits, read_slot,
    set_html, set_text, show_messages, with_engine, with_slot,
};
use crate::render;
use crate::sample::PageSample;
use crate::share::{copy_embed_code, copy_tokens_csv, play_recording, save_png};
use crate::state::{Data, EdgeView, Limits, ViewState, model_json_url};
use crate::summary::canvas_summary;
use crate::tour::TOUR;
use crate::view::{self, PageView};

/// Fetches and loads the shipped model of `data` unless it is loaded or on its way, then
/// renders the current view.
fn ensure_engine(data: Data) {
    let start = with_slot(data, |slot| {
        let start = slot.engine.is_none() && !slot.loading;
        slot.loading |= start;
        start
    });
    if !start {
        return;
    }
    set_text("status", &format!("loading the {} model...", data.name()));
    spawn_local(async move {
        let url = data.shipped_model();
        let result = fetch_model(url).await.and_then(|files| {
            let engine = Engine::load(&files.0, files.1.clone(), files.2.clone())
                .map_err(|e| format!("shipped {} model: {e}", data.name()))?;
            with_slot(data, |slot| slot.shipped = Some(files));
            Ok(engine)
        });
        with_slot(data, |slot| slot.loading = false);
        match result {
            Ok(engine) => {
                install(engine, format!("shipped with the page ({})", absolute(url)));
                render_from_hash(Vec::new());
            }
            Err(e) if data != Data::default() => {
                // The synthetic view still works: say what failed and show it.
                // Kept for the synthetic view's first render, which the hash change starts.
                let fallback = ViewState::default().to_hash();
                PENDING.with(|p| {
                    p.borrow_mut()
                        .push(format!("{e}; showing the synthetic model"))
                });
                go_to_hash(&fallback);
            }
            Err(e) => {
                show_messages(&[e]);
                set_text("status", "failed");
            }
        }
    });
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
    set_palette();
    set_text("status", "loading model...");
    let mut problems = Vec::new();
    let search = window().location().search().unwrap_or_default();
    if let Ok(params) = web_sys::UrlSearchParams::new_with_str(&search)
        && let Some(url) = params.get("model")
    {
        let loaded = match model_json_url(&url) {
            Ok(json_url) => fetch_model(&json_url)
                .await
                .and_then(|(m, w, s)| Engine::load(&m, w, s))
                .map(|engine| (engine, absolute(&json_url))),
            Err(e) => Err(e),
        };
        match loaded {
            Ok((engine, from)) => {
                let data = install(engine, format!("{from} (from the link's ?model=)"));
                let hash = window().location().hash().unwrap_or_default();
                if data != Data::of_hash(&hash) && !hash.contains("data=") {
                    // A link to an AV-MNIST model opens its data.
                    let _ = window().location().set_hash(
                        &ViewState {
                            data,
                            ..ViewState::default()
                        }
                        .to_hash(),
                    );
                }
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

/// The drawing's colours as CSS custom properties on the root element, for the legend and the
/// text (`var(--kept)` in index.html): one palette for canvas and legend.
fn set_palette() {
    if let Some(root) = document().document_element()
        && let Ok(root) = root.dyn_into::<HtmlElement>()
    {
        for (property, colour) in crate::palette::CSS_PROPERTIES {
            let _ = root.style().set_property(property, colour);
        }
    }
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

fn bind_controls() {
    on("data", "change", || {
        let data = el::<HtmlSelectElement>("data")
            .and_then(|e| Data::from_name(&e.value()))
            .unwrap_or_default();
        act(Action::Data(data));
    });
    on("play", "click", play_recording);
    bind_sample_controls();
    bind_view_controls();
    on("tour-start", "click", || {
        act(Action::TourStart);
    });
    on("tour-back", "click", || {
        act(Action::TourBack);
    });
    on("tour-next", "click", || {
        act(Action::TourNext);
    });
    on("tour-exit", "click", || {
        act(Action::TourExit);
    });
    on("copy-embed", "click", copy_embed_code);
    on("copy-csv", "click", copy_tokens_csv);
    on("save-png", "click", save_png);
    on("model-file", "change", || spawn_local(load_picked_files()));
    on("reset-model", "click", reset_model);
}

/// Back to the model shipped with the page for the current data.
fn reset_model() {
    let data = current_data();
    let shipped = read_slot(data, |slot| slot.shipped.clone());
    if let Some((meta, weights, samples)) = shipped
        && let Ok(engine) = Engine::load(&meta, weights, samples)
    {
        install(
            engine,
            format!("shipped with the page ({})", absolute(data.shipped_model())),
        );
        render_from_hash(vec!["back to the shipped model".into()]);
    }
}

/// The sample controls: a number, previous, next, a random one.
fn bind_sample_controls() {
    on("sample", "change", || {
        let value = el::<HtmlInputElement>("sample")
            .map(|i| i.value())
            .unwrap_or_default();
        act(Action::Sample(value));
    });
    on("prev", "click", || {
        act(Action::PreviousSample);
    });
    on("next", "click", || {
        act(Action::NextSample);
    });
    on("new-sample", "click", || {
        let draw = js_sys::Math::random();
        act(Action::RandomSample { draw });
    });
}

/// The view controls: layer, L_T, rho, which edges, the split's ranking.
fn bind_view_controls() {
    on("layer", "change", || {
        let layer = el::<HtmlSelectElement>("layer").and_then(|e| e.value().parse().ok());
        act(Action::Layer(layer));
    });
    on("lt", "change", || {
        let lt = el::<HtmlSelectElement>("lt").and_then(|e| e.value().parse().ok());
        act(Action::RefineLayers(lt));
    });
    on("rho", "change", || {
        let value = el::<HtmlInputElement>("rho")
            .map(|e| e.value())
            .unwrap_or_default();
        act(Action::Rho(value));
    });
    on("rho", "input", || {
        let value = el::<HtmlInputElement>("rho")
            .map(|e| e.value())
            .unwrap_or_default();
        set_text("rho-value", &value);
    });
    on("edges", "change", || {
        let edges = el::<HtmlSelectElement>("edges").and_then(|e| EdgeView::from_name(&e.value()));
        act(Action::Edges(edges));
    });
    on("ranking", "change", || {
        let ranking = el::<HtmlSelectElement>("ranking")
            .map(|e| e.value())
            .unwrap_or_default();
        act(Action::Ranking(ranking));
    });
}

/// Applies a control's action to the view on screen ([`actions::apply`], which holds the
/// page's rules): goes to the new view's URL, or shows why the view stays. Whether it moved.
fn act(action: Action) -> bool {
    let (state, _) = current_state();
    let limits = limits().unwrap_or(Limits {
        modalities: Vec::new(),
        refine_layers: 0,
        samples: 1,
        truth: false,
    });
    match actions::apply(&state, action, &limits) {
        Ok(next) => {
            go_to_hash(&next.to_hash());
            true
        }
        Err(message) => {
            show_messages(&[message]);
            false
        }
    }
}

async fn load_picked_files() {
    let Some(input) = el::<HtmlInputElement>("model-file") else {
        return;
    };
    let Some(files) = input.files() else { return };
    let (mut meta, mut weights, mut samples) = (None, None, None);
    for i in 0..files.length() {
        let Some(file) = files.get(i) else { continue };
        let Ok(buf) = JsFuture::from(file.array_buffer()).await else {
            continue;
        };
        let bytes = js_sys::Uint8Array::new(&buf).to_vec();
        if file.name().ends_with(".json") {
            meta = Some(String::from_utf8_lossy(&bytes).to_string());
        } else if file.name().ends_with(".safetensors") {
            samples = Some(bytes);
        } else {
            weights = Some(bytes);
        }
    }
    let result = match (meta, weights) {
        (Some(m), Some(w)) => Engine::load(&m, w, samples),
        _ => Err(
            "pick the files of an export: model.json, model.bpk (and, for AV-MNIST, samples.safetensors)"
                .to_string(),
        ),
    };
    match result {
        Ok(engine) => {
            let data = install(engine, "picked from this computer".into());
            let (state, _) = current_state();
            if state.data == data {
                render_from_hash(vec!["loaded the picked model".into()]);
            } else {
                navigate(&ViewState {
                    data,
                    ..ViewState::default()
                });
            }
        }
        Err(e) => {
            show_messages(&[format!(
                "could not load the picked model: {e}; still showing the previous model"
            )]);
        }
    }
}

/// One checkbox per modality of the model in view (rebuilt when the modalities change), each
/// dropping or restoring its modality.
fn modality_checkboxes(shown: &Limits) {
    let Some(fieldset) = el::<HtmlElement>("modalities") else {
        return;
    };
    let names = shown.modalities.join(",");
    if fieldset.get_attribute("data-names").as_deref() == Some(names.as_str()) {
        return;
    }
    let _ = fieldset.set_attribute("data-names", &names);
    fieldset.set_inner_html(&view::modality_checkboxes_html(&shown.modalities));
    for name in shown.modalities.clone() {
        let id = format!("keep-{name}");
        let input_id = id.clone();
        on(&id, "change", move || {
            let keep = el::<HtmlInputElement>(&input_id)
                .map(|i| i.checked())
                .unwrap_or(true);
            let modality = name.clone();
            if !act(Action::Keep { modality, keep })
                && let Some(i) = el::<HtmlInputElement>(&input_id)
            {
                i.set_checked(true);
            }
        });
    }
}

fn sync_controls(state: &ViewState, limits: &Limits, model_rho: f64) {
    modality_checkboxes(limits);
    for name in &limits.modalities {
        if let Some(i) = el::<HtmlInputElement>(&format!("keep-{name}")) {
            i.set_checked(!state.drop.contains(name));
        }
    }
    if let Some(s) = el::<HtmlSelectElement>("data") {
        s.set_value(state.data.name());
    }
    if let Some(i) = el::<HtmlInputElement>("sample") {
        i.set_value(&state.sample.to_string());
        i.set_max(&limits.samples.saturating_sub(1).to_string());
    }
    let lt = state.lt.unwrap_or(limits.refine_layers);
    if let Some(s) = el::<HtmlSelectElement>("lt") {
        s.set_inner_html(&view::refine_layer_options_html(limits.refine_layers));
        s.set_value(&lt.to_string());
    }
    if let Some(s) = el::<HtmlSelectElement>("layer") {
        s.set_inner_html(&view::shown_layer_options_html(lt));
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
    if let Some(s) = el::<HtmlSelectElement>("ranking") {
        s.set_inner_html(&view::ranking_options_html(limits.truth));
        s.set_value(state.ranking.name());
    }
    if let Some(b) = el::<HtmlElement>("play") {
        b.set_hidden(state.data != Data::Avmnist);
    }
    if let Some(body) = document().body() {
        let _ = if state.embed {
            body.class_list().add_1("embed")
        } else {
            body.class_list().remove_1("embed")
        };
    }
}

fn render_from_hash(mut problems: Vec<String>) {
    let data = current_data();
    if with_engine(data, |_| ()).is_none() {
        PENDING.with(|p| p.borrow_mut().extend(problems));
        ensure_engine(data);
        return;
    }
    problems.splice(0..0, PENDING.with(|p| std::mem::take(&mut *p.borrow_mut())));
    let (state, parse_problems) = current_state();
    problems.extend(parse_problems);
    let started = window().performance().map(|p| p.now()).unwrap_or(0.0);
    let Some(view) = with_engine(data, |engine| render_view(engine, &state, started)) else {
        return;
    };
    set_text("model-source", &read_slot(data, |slot| slot.source.clone()));
    show_tour(&state);
    set_text("mgr-trace", &view);
    show_messages(&problems);
    set_text("status", "ready");
    if let Some(e) = el::<HtmlElement>("status") {
        let _ = e.set_attribute("data-ready", &state.to_hash());
    }
}

/// Runs the model for `state` and draws it; returns the JSON the tests read from the page.
fn render_view(engine: &Engine, state: &ViewState, started: f64) -> String {
    let limits = engine.limits();
    let sample = engine.sample(state.sample);
    let available = state.available(&limits);
    let settings = crate::engine::Settings::of(state);
    let inference = engine.infer_with(&sample, state.sample, &available, settings);
    let elapsed = window().performance().map(|p| p.now()).unwrap_or(0.0) - started;
    sync_controls(state, &limits, engine.meta.model.refinement.rho);
    let page = PageView::of(engine, state, &sample, inference);
    paint(engine, state, &sample, &page, elapsed);
    page.test_json(state, elapsed)
}

/// Puts a view's parts in place: the HTML, the credit line, the timing and the canvas.
fn paint(engine: &Engine, state: &ViewState, sample: &PageSample, page: &PageView, ms: f64) {
    set_html("ranking-auc", &page.ranking_auc_html);
    set_html("ranking-honesty", &page.honesty_html);
    show_credit(page.credit.as_deref());
    set_text("timing", &format!("inference {ms:.1} ms"));
    draw_canvas(engine, state, sample, &page.trace, &page.drawn_edges);
    set_html("prediction", &page.prediction_html);
    set_html("tokens", &page.tokens_html);
    TOKENS_CSV.with(|c| *c.borrow_mut() = page.tokens_csv.clone());
}

/// The data's credit line (AV-MNIST), hidden where there is none.
fn show_credit(credit: Option<&str>) {
    if let Some(credit) = credit {
        set_text("credit", credit);
    }
    if let Some(e) = el::<HtmlElement>("credit") {
        e.set_hidden(credit.is_none());
    }
}

/// Sizes the canvas to its box (at the device's pixel ratio), describes it for screen readers
/// and draws the sample, the selected layer and `drawn_edges`.
fn draw_canvas(
    engine: &Engine,
    state: &ViewState,
    sample: &PageSample,
    trace: &SampleTrace,
    drawn_edges: &[mgr::trace::Edge],
) {
    let Some(canvas) = el::<HtmlCanvasElement>("view") else {
        return;
    };
    let counts: Vec<usize> = engine
        .meta
        .model
        .modalities
        .iter()
        .map(|m| m.n_tokens)
        .collect();
    let _ = canvas.set_attribute(
        "aria-label",
        &canvas_summary(trace, state.sample, state.layer, drawn_edges.len(), |c| {
            engine.class_name(c)
        }),
    );
    let width = canvas
        .parent_element()
        .map(|p| p.client_width() as f64)
        .unwrap_or(800.0)
        .clamp(280.0, 960.0);
    let (_, height) = crate::layout::layout(width);
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
            state.data,
            &sample.picture(),
            &counts,
            trace,
            trace.layers.get(state.layer),
            drawn_edges,
        );
    }
}
