//! What the page holds and reads: one model slot per dataset (the engine in use, the shipped
//! model's files, where the model came from), the DOM's elements by id, and the current view's
//! state from the URL hash. The DOM layer (app.rs) and the share buttons (share.rs) read it.

use std::cell::RefCell;

use wasm_bindgen::JsCast;
use web_sys::{Document, HtmlElement};

use crate::engine::Engine;
use crate::fetch::{ModelFiles, window};
use crate::state::{Data, Limits, ViewState};

/// Everything the page holds for one of its datasets.
#[derive(Default)]
pub(crate) struct DataSlot {
    /// The model in use, loaded when the data is first shown.
    pub(crate) engine: Option<Engine>,
    /// The shipped model's files, for "shipped model" after another was loaded.
    pub(crate) shipped: Option<ModelFiles>,
    /// Whether the shipped model is being fetched.
    pub(crate) loading: bool,
    /// Where the model in use came from, for the page's "Model:" line.
    pub(crate) source: String,
}

thread_local! {
    /// One slot per dataset, in [`Data::ALL`] order.
    static SLOTS: RefCell<[DataSlot; 2]> = RefCell::new(Default::default());
    /// Messages waiting for the view's model to load, shown with its first picture.
    pub(crate) static PENDING: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// The shown layer's token table as CSV, for "copy as CSV".
    pub(crate) static TOKENS_CSV: RefCell<String> = const { RefCell::new(String::new()) };
}

fn slot_index(data: Data) -> usize {
    Data::ALL.iter().position(|&d| d == data).unwrap_or(0)
}

/// Changes the slot of `data` (briefly: `f` must not reach the slots again).
pub(crate) fn with_slot<R>(data: Data, f: impl FnOnce(&mut DataSlot) -> R) -> R {
    SLOTS.with(|slots| f(&mut slots.borrow_mut()[slot_index(data)]))
}

/// Reads the slot of `data` (`f` may read the slots again, not change them).
pub(crate) fn read_slot<R>(data: Data, f: impl FnOnce(&DataSlot) -> R) -> R {
    SLOTS.with(|slots| f(&slots.borrow()[slot_index(data)]))
}

/// Runs `f` on the engine of `data`, if it is loaded.
pub(crate) fn with_engine<R>(data: Data, f: impl FnOnce(&Engine) -> R) -> Option<R> {
    read_slot(data, |slot| slot.engine.as_ref().map(f))
}

/// Puts `engine` in use for its dataset, saying where it came from: the one way a model is
/// installed (shipped, `?model=`, a picked file, back to the shipped one). Returns its data.
pub(crate) fn install(engine: Engine, source: String) -> Data {
    let data = engine.data;
    with_slot(data, |slot| {
        slot.engine = Some(engine);
        slot.source = source;
    });
    data
}

pub(crate) fn document() -> Document {
    window().document().expect("a document")
}

pub(crate) fn el<T: JsCast>(id: &str) -> Option<T> {
    document()
        .get_element_by_id(id)
        .and_then(|e| e.dyn_into::<T>().ok())
}

pub(crate) fn set_text(id: &str, text: &str) {
    if let Some(e) = document().get_element_by_id(id) {
        e.set_text_content(Some(text));
    }
}

pub(crate) fn set_html(id: &str, html: &str) {
    if let Some(e) = document().get_element_by_id(id) {
        e.set_inner_html(html);
    }
}

/// Shows messages (errors, ignored URL settings) in the message box; empty hides it.
pub(crate) fn show_messages(messages: &[String]) {
    set_text("message", &messages.join(" | "));
    if let Some(e) = el::<HtmlElement>("message") {
        e.set_hidden(messages.is_empty());
    }
}

pub(crate) fn current_data() -> Data {
    Data::of_hash(&window().location().hash().unwrap_or_default())
}

/// The limits of the model the current view shows (None while it loads).
pub(crate) fn limits() -> Option<Limits> {
    with_engine(current_data(), Engine::limits)
}

pub(crate) fn current_state() -> (ViewState, Vec<String>) {
    let hash = window().location().hash().unwrap_or_default();
    match limits() {
        Some(limits) => ViewState::parse(&hash, &limits),
        None => (ViewState::default(), Vec::new()),
    }
}
