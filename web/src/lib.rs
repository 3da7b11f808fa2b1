//! The browser demo of MGR: runs the model crate in WASM and draws, for one sample (synthetic, or
//! real AV-MNIST digits with their recordings),
//! which tokens each refinement layer ranks biased and how their information is redistributed.
//!
//! The page only draws a typed trace ([`mgr::trace::SampleTrace`]); every piece of view state
//! lives in the URL hash ([`state::ViewState`]), so a link or an `<iframe>` opens one exact view.
//! [`actions`] (what each control does: the page's rules, in one pure function), [`engine`],
//! [`state`], [`edges`], [`summary`], [`layout`] (where each token is drawn),
//! [`palette`] (the colours of canvas and legend), [`honesty`] (what the ranking does with
//! missing data, in numbers) and [`view`] (the page's HTML) are plain Rust
//! (tested natively); `app` is the DOM layer (it binds the controls to [`actions`] and paints [`view::PageView`]), `fetch` its downloads and `render` the canvas calls.

pub mod actions;
pub mod edges;
pub mod engine;
pub mod honesty;
pub mod layout;
pub mod palette;
pub mod sample;
pub mod state;
pub mod summary;
pub mod tour;
pub mod view;

#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod fetch;
#[cfg(target_arch = "wasm32")]
mod page;
#[cfg(target_arch = "wasm32")]
mod render;
#[cfg(target_arch = "wasm32")]
mod share;
