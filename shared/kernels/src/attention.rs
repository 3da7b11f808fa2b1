//! Fused multi-head attention for flex, in two steps that keep the attention weights (the
//! refinement reads them: Eq. 8's e) (issue 12):
//! - [`attention_weights`]: A = softmax(Q_h K_h^T / sqrt(d_h)) for every head, scores and
//!   softmax in one pass per row;
//! - [`attention_context`]: C_h = A_h V_h, written straight into the heads' columns of
//!   `[B, N, d]`.
//!
//! Q, K and V stay in the `[B, tokens, d]` layout their projections give (head h in columns
//! `h d_h .. (h + 1) d_h`): Burn's form reshapes them to `[B, H, tokens, d_h]`, copies each into
//! that order, multiplies 4 B small matrices through gemm (each call packing its operands) and
//! copies the context back. The backward of each step is hand-written the same way.
//!
//! Dimension key: `B` batch, `H` heads, `N` queries, `M` keys, `d` = `H d_h` features.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Shape, Tensor};

use super::linear::blocked_product;
#[cfg(not(target_arch = "wasm32"))]
use super::tile::{self, Addend, tile_product};
use super::view::View;
use super::{Execution, contiguous, on_flex, owned_f32};

/// A = softmax(Q_h K_h^T / sqrt(d_h)) per head h, fused on flex under [`Execution::Kernels`], Burn's ops
/// otherwise.
///
/// # Shapes
/// - q: `[B, N, d]`; k: `[B, M, d]`; d divisible by `heads`
/// - output: `[B, H, N, M]`, each row summing to 1
pub fn attention_weights(q: Tensor<3>, k: Tensor<3>, heads: usize, exec: Execution) -> Tensor<4> {
    if exec.kernels() && on_flex(&q.device()) {
        return Tensor::from_dispatch(<Dispatch as FusedAttentionOps>::fused_attention_weights(
            q.into_dispatch(),
            k.into_dispatch(),
            heads,
        ));
    }
    let [b, n, d] = q.dims();
    let m = k.dims()[1];
    let d_h = d / heads;
    let scores = split_heads(q, heads).matmul(split_heads(k, heads).swap_dims(2, 3)); // [B, H, N, M]
    // The softmax on the scores viewed as [B H, N, M] rows. Burn 0.22's fusion runs a softmax
    // (max, exponentials, sum, division) as one fused reduction only if an element-wise step of
    // the scores' shape begins it, and a product takes the element-wise steps after it as its
    // epilogue: recorded right after the product, the scaling joined the product and the
    // softmax ran as four kernels. The view ends the product's fused block, so the scaling
    // leads the softmax's; the view back ends the softmax's before a reduction over another
    // axis reads it (e's mean over the heads, which made Burn's fusion give the block up). The
    // same values (docs/RESULTS.md, issue 30).
    let rows = scores.reshape([b * heads, n, m]); // [B H, N, M]
    burn::tensor::activation::softmax(rows.div_scalar((d_h as f64).sqrt()), 2)
        .reshape([b, heads, n, m]) // [B, H, N, M]
}

/// C_h = A_h V_h per head h, heads side by side, fused on flex under [`Execution::Kernels`], Burn's ops
/// otherwise.
///
/// # Shapes
/// - a: `[B, H, N, M]`; v: `[B, M, d]`
/// - output: `[B, N, d]`
pub fn attention_context(a: Tensor<4>, v: Tensor<3>, exec: Execution) -> Tensor<3> {
    if exec.kernels() && on_flex(&a.device()) {
        return Tensor::from_dispatch(<Dispatch as FusedAttentionOps>::fused_attention_context(
            a.into_dispatch(),
            v.into_dispatch(),
        ));
    }
    let [b, heads, n, _] = a.dims();
    let d = v.dims()[2];
    a.matmul(split_heads(v, heads)) // [B, H, N, d_h]
        .swap_dims(1, 2) // [B, N, H, d_h]
        .reshape([b, n, d]) // [B, N, d]
}

/// [`attention_weights`] from feature-major Q and K ([`crate::linear_columns`]): each head's
/// queries `[N, d_h]` are a transposed view and its keys' transpose `[d_h, M]` a contiguous one,
/// both read by a product as they are (the token-major split is copied first on a GPU). Burn's
/// ops on every backend.
///
/// # Shapes
/// - q: `[B, d, N]`; k: `[B, d, M]`; d divisible by `heads`
/// - output: `[B, H, N, M]`, each row summing to 1
pub fn attention_weights_feature_major(q: Tensor<3>, k: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, d, n] = q.dims();
    let m = k.dims()[2];
    let d_h = d / heads;
    let queries = q.reshape([b, heads, d_h, n]).swap_dims(2, 3); // [B, H, N, d_h]
    let keys_t = k.reshape([b, heads, d_h, m]); // [B, H, d_h, M]
    let rows = queries.matmul(keys_t).reshape([b * heads, n, m]); // [B H, N, M]
    // As in `attention_weights`: the softmax on [B H, N, M] rows, the scaling first.
    burn::tensor::activation::softmax(rows.div_scalar((d_h as f64).sqrt()), 2)
        .reshape([b, heads, n, m]) // [B, H, N, M]
}

/// [`attention_context`] from feature-major V ([`crate::linear_columns`]): each head's values
/// `[M, d_h]` are a transposed view a product reads as it is. Burn's ops on every backend.
///
/// # Shapes
/// - a: `[B, H, N, M]`; v: `[B, d, M]`
/// - output: `[B, N, d]`
pub fn attention_context_feature_major(a: Tensor<4>, v: Tensor<3>) -> Tensor<3> {
    let [b, heads, n, m] = a.dims();
    let d = v.dims()[1];
    let values = v.reshape([b, heads, d / heads, m]).swap_dims(2, 3); // [B, H, M, d_h]
    a.matmul(values) // [B, H, N, d_h]
        .swap_dims(1, 2) // [B, N, H, d_h]
        .reshape([b, n, d]) // [B, N, d]
}

/// softmax(Q_h K_h^T / sqrt(d_h)) V_h per head h, heads side by side: an attention whose
/// weights no one reads (the encoder's). Where no gradient flows through it on a GPU backend
/// under [`Execution::Kernels`] (inference, a frozen encoder), Burn's attention op: one flash
/// kernel where CubeCL's autotune finds one that runs at these shapes, instead of the scores'
/// product, the softmax's reductions and the context's product. Otherwise
/// [`attention_weights`] then [`attention_context`] (on flex, the fused kernels; under autodiff,
/// Burn's attention op would be its unfused fallback anyway).
///
/// Not for N <= d_h (AV-MNIST's 16 vision tokens, d_h 16): there burn-cubecl's autotune ranks
/// its fallback (the scores' product, a masked softmax and the context's product, run below
/// Burn's fusion: about 13 kernels) first, and on a device without f16 tensor cores (lavapipe,
/// any GPU under WGSL) above every flash kernel, so it always runs; the two steps here, fused,
/// are about 7 (lavapipe, batch 64: 16 launches against 9 for this attention).
///
/// # Shapes
/// - q: `[B, N, d]`; k, v: `[B, M, d]`; d divisible by `heads`
/// - output: `[B, N, d]`
pub fn attend(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    exec: Execution,
) -> Tensor<3> {
    // Untracked: no autodiff graph holds them (is_require_grad is true of leaves only).
    let tracked = q.is_tracked() || k.is_tracked() || v.is_tracked();
    let [b, n, d] = q.dims();
    if runs_attention_op(tracked, n, d, heads, exec, &q.device()) {
        let context = burn::tensor::module::attention(
            split_heads(q, heads),
            split_heads(k, heads),
            split_heads(v, heads),
            None,
            None,
            burn::tensor::ops::AttentionModuleOptions::default(),
        ); // [B, H, N, d_h]
        return context.swap_dims(1, 2).reshape([b, n, d]); // [B, N, d]
    }
    attention_context(attention_weights(q, k, heads, exec), v, exec) // [B, N, d]
}

/// Whether [`attend`] runs Burn's attention op: on a GPU backend under [`Execution::Kernels`],
/// where no gradient flows and N > d_h (see [`attend`]).
fn runs_attention_op(
    tracked: bool,
    n: usize,
    d: usize,
    heads: usize,
    exec: Execution,
    device: &burn::tensor::Device,
) -> bool {
    exec.kernels() && !tracked && n > d / heads && !on_flex(device)
}

/// Self-attention's context from its inputs: softmax(Q_h K_h^T / sqrt(d_h)) V_h per head h,
/// heads side by side, with Q, K, V = x W^Q + b^Q, x W^K + b^K, x W^V + b^V, and `weights` applied
/// to the attention weights where they are formed (an attention dropout; never on Burn's
/// attention op, which `attend` runs only where no gradient flows). In `layout`'s feature-major
/// form ([`crate::linear_columns`]: each head a view the products read without a copy), except
/// where [`attend`] runs Burn's attention op, which reads the token-major heads as they are;
/// token-major otherwise ([`crate::linear_rows`], [`attention_weights`],
/// [`attention_context`]). The same values either way.
///
/// # Shapes
/// - x: `[B, N, d_in]`; the projections' outputs `d`, divisible by `heads`
/// - output: `[B, N, d]`
pub fn self_attention_context(
    projections: [&burn::nn::Linear; 3],
    x: Tensor<3>,
    heads: usize,
    weights: Option<&dyn Fn(Tensor<4>) -> Tensor<4>>,
    layout: HeadLayout,
    exec: Execution,
) -> Tensor<3> {
    let [query, key, value] = projections;
    let [_, n, _] = x.dims();
    let d = query.weight.dims()[1];
    let tracked = x.is_tracked()
        || projections.iter().any(|linear| {
            linear.weight.val().is_tracked()
                || linear.bias.as_ref().is_some_and(|b| b.val().is_tracked())
        });
    let device = x.device();
    if weights.is_none() && runs_attention_op(tracked, n, d, heads, exec, &device) {
        let q = crate::linear_rows(query, x.clone(), exec); // [B, N, d]
        let k = crate::linear_rows(key, x.clone(), exec); // [B, N, d]
        let v = crate::linear_rows(value, x, exec); // [B, N, d]
        return attend(q, k, v, heads, exec); // [B, N, d]
    }
    let layout = layout.resolved(&device, exec);
    let q = layout.project(query, x.clone(), exec); // [B, d, N] or [B, N, d]
    let k = layout.project(key, x.clone(), exec); // [B, d, N] or [B, N, d]
    let v = layout.project(value, x, exec); // [B, d, N] or [B, N, d]
    let a = layout.weights(q, k, heads, exec); // [B, H, N, N]
    let a = match weights {
        Some(f) => f(a),
        None => a,
    }; // [B, H, N, N]
    layout.context(a, v, exec) // [B, N, d]
}

/// How an attention lays out its Q, K and V: a choice of speed, never of result (the same values
/// to float rounding). One value held by each attention (`mgr::Model::with_head_layout`); not
/// part of what a saved model is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum HeadLayout {
    /// Feature-major on GPU backends under [`Execution::Kernels`], token-major elsewhere.
    #[default]
    Auto,
    /// `[B, T, d]`, each head a strided view: what flex's fused attention reads; on a GPU,
    /// Burn's products copy each head's Q, K and V first.
    TokenMajor,
    /// `[B, d, T]` ([`crate::linear_columns`]), each head a view a product reads as it is (issue 30:
    /// on lavapipe at batch 64, 850 -> 836 launches per training step, 140 -> 133 per
    /// inference batch).
    FeatureMajor,
}

impl HeadLayout {
    /// Every layout, in the order of the command line's names.
    pub const ALL: [HeadLayout; 3] = [
        HeadLayout::Auto,
        HeadLayout::TokenMajor,
        HeadLayout::FeatureMajor,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            HeadLayout::Auto => "auto",
            HeadLayout::TokenMajor => "token-major",
            HeadLayout::FeatureMajor => "feature-major",
        }
    }

    /// The layout an attention on `device` under `exec` runs in (never `Auto`).
    pub fn resolved(self, device: &burn::tensor::Device, exec: Execution) -> HeadLayout {
        match self {
            HeadLayout::Auto if exec.kernels() && !on_flex(device) => HeadLayout::FeatureMajor,
            HeadLayout::Auto => HeadLayout::TokenMajor,
            chosen => chosen,
        }
    }

    // An attention's steps in a resolved layout: the one place that picks the token- or
    // feature-major form of each.

    /// Whether this resolved layout ([`HeadLayout::resolved`]) is feature-major.
    fn feature_major(self) -> bool {
        assert!(
            self != HeadLayout::Auto,
            "a head layout is resolved for its device before use"
        );
        self == HeadLayout::FeatureMajor
    }

    /// The axis of a projection's tokens: 2 feature-major (`[B, d, T]`), 1 token-major.
    pub fn token_axis(self) -> usize {
        if self.feature_major() { 2 } else { 1 }
    }

    /// A `Linear` on every token, in this layout ([`crate::linear_columns`] or
    /// [`crate::linear_rows`]).
    ///
    /// # Shapes
    /// - x: `[B, T, d_in]`
    /// - output: `[B, d_out, T]` feature-major, `[B, T, d_out]` token-major
    pub fn project(self, linear: &burn::nn::Linear, x: Tensor<3>, exec: Execution) -> Tensor<3> {
        if self.feature_major() {
            crate::linear_columns(linear, x, exec) // [B, d_out, T]
        } else {
            crate::linear_rows(linear, x, exec) // [B, T, d_out]
        }
    }

    /// [`attention_weights`] from Q and K in this layout.
    ///
    /// # Shapes
    /// - q: `[B, d, N]` or `[B, N, d]`; k: `[B, d, M]` or `[B, M, d]`
    /// - output: `[B, H, N, M]`
    pub fn weights(self, q: Tensor<3>, k: Tensor<3>, heads: usize, exec: Execution) -> Tensor<4> {
        if self.feature_major() {
            attention_weights_feature_major(q, k, heads) // [B, H, N, M]
        } else {
            attention_weights(q, k, heads, exec) // [B, H, N, M]
        }
    }

    /// [`attention_context`] from V in this layout.
    ///
    /// # Shapes
    /// - a: `[B, H, N, M]`; v: `[B, d, M]` or `[B, M, d]`
    /// - output: `[B, N, d]`
    pub fn context(self, a: Tensor<4>, v: Tensor<3>, exec: Execution) -> Tensor<3> {
        if self.feature_major() {
            attention_context_feature_major(a, v) // [B, N, d]
        } else {
            attention_context(a, v, exec) // [B, N, d]
        }
    }
}

/// `[B, T, d]` -> `[B, H, T, d_h]`.
fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, t, d] = x.dims();
    x.reshape([b, t, heads, d / heads]).swap_dims(1, 2)
}

/// The attention operations this module adds to Burn's backends. The two steps are
/// differentiable; the three products after them are what their backwards are made of (on
/// `Autodiff` they are Burn's composites, for a second derivative only).
#[backend_extension(Flex, Autodiff)]
pub trait FusedAttentionOps: Backend {
    /// A = softmax(Q_h K_h^T / sqrt(d_h)): q `[B, N, d]`, k `[B, M, d]` -> `[B, H, N, M]`.
    fn fused_attention_weights(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self>;
    /// C_h = A_h V_h: a `[B, H, N, M]`, v `[B, M, d]` -> `[B, N, d]`.
    fn fused_attention_context(a: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self>;
    /// scale X_h Y_h^T: x `[B, N, d]`, y `[B, M, d]` -> `[B, H, N, M]`.
    fn fused_heads_scores(
        x: FloatTensor<Self>,
        y: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> FloatTensor<Self>;
    /// scale A_h V_h: a `[B, H, N, M]`, v `[B, M, d]` -> `[B, N, d]`.
    fn fused_heads_apply(
        a: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
    /// scale A_h^T X_h: a `[B, H, N, M]`, x `[B, N, d]` -> `[B, M, d]`.
    fn fused_heads_apply_t(
        a: FloatTensor<Self>,
        x: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
}

/// The sizes of one attention product.
#[derive(Clone, Copy, Debug)]
struct Dims {
    /// Heads H.
    heads: usize,
    /// Queries N.
    n: usize,
    /// Keys M.
    m: usize,
    /// Features d = H d_h.
    d: usize,
}

impl Dims {
    fn d_h(&self) -> usize {
        self.d / self.heads
    }
}

/// `x` as contiguous f32 of rank `rank` from the start of its storage, or `x` given back as it
/// is (then the composite runs).
fn f32_of_rank(x: FlexTensor, rank: usize) -> Result<FlexTensor, FlexTensor> {
    match x.dtype() == DType::F32 && x.layout().shape().num_dims() == rank {
        true => Ok(contiguous(x)),
        false => Err(x),
    }
}

fn dims3(t: &FlexTensor) -> [usize; 3] {
    let s = t.layout().shape();
    [s[0], s[1], s[2]]
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

/// Eq. 7's score scale 1 / sqrt(d_h), d_h = d / heads (1 for a zero width, which has no
/// products to scale).
fn score_scale(d: usize, heads: usize) -> f32 {
    1.0 / ((d / heads.max(1)).max(1) as f32).sqrt()
}

/// `f(b, out_b)` for every sample b, `out` cut into B equal parts, over the cores.
fn per_sample(out: &mut [f32], batch: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if batch == 0 || out.is_empty() {
        return;
    }
    let part = out.len() / batch;
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(part)
            .enumerate()
            .for_each(|(b, o)| f(b, o));
    }
    #[cfg(target_arch = "wasm32")]
    out.chunks_mut(part).enumerate().for_each(|(b, o)| f(b, o));
}

impl FusedAttentionOps for Flex {
    fn fused_attention_weights(q: FlexTensor, k: FlexTensor, heads: usize) -> FlexTensor {
        scores(q, k, heads, None)
    }

    fn fused_attention_context(a: FlexTensor, v: FlexTensor) -> FlexTensor {
        Self::fused_heads_apply(a, v, 1.0)
    }

    fn fused_heads_scores(x: FlexTensor, y: FlexTensor, heads: usize, scale: f32) -> FlexTensor {
        scores(x, y, heads, Some(scale))
    }

    fn fused_heads_apply(a: FlexTensor, v: FlexTensor, scale: f32) -> FlexTensor {
        heads_product(a, v, scale, false)
    }

    fn fused_heads_apply_t(a: FlexTensor, x: FlexTensor, scale: f32) -> FlexTensor {
        heads_product(a, x, scale, true)
    }
}

/// scale A_h X_h (x `[B, M, d]` -> `[B, N, d]`), or scale A_h^T X_h when `transposed` (x
/// `[B, N, d]` -> `[B, M, d]`), per head; Burn's ops for what the kernels do not take.
fn heads_product(a: FlexTensor, x: FlexTensor, scale: f32, transposed: bool) -> FlexTensor {
    match (f32_of_rank(a, 4), f32_of_rank(x, 3)) {
        (Ok(a), Ok(x)) if fits(&a, &x, transposed) => {
            let ([b, heads, n, m], [_, rows_in, d]) = (dims4(&a), dims3(&x));
            let rows_out = if transposed { m } else { n };
            let dims = Dims { heads, n, m, d };
            let (a_s, x_s) = (a.storage::<f32>(), x.storage::<f32>());
            let mut out = vec![0.0; b * rows_out * d];
            per_sample(&mut out, b, |i, o| {
                let a_b = &a_s[i * heads * n * m..(i + 1) * heads * n * m];
                let x_b = &x_s[i * rows_in * d..(i + 1) * rows_in * d];
                match transposed {
                    false => apply_f32(a_b, x_b, o, dims, scale),
                    true => apply_t_f32(a_b, x_b, o, dims, scale),
                }
            });
            owned_f32(out, Shape::new([b, rows_out, d]))
        }
        (a, x) if transposed => composite_apply_t::<Flex>(unwrap(a), unwrap(x), scale),
        (a, x) => composite_apply::<Flex>(unwrap(a), unwrap(x), scale),
    }
}

fn unwrap(r: Result<FlexTensor, FlexTensor>) -> FlexTensor {
    r.unwrap_or_else(|t| t)
}

/// Whether a `[B, H, N, M]` and x `[B, M, d]` (`[B, N, d]` when `transposed`) fit together.
fn fits(a: &FlexTensor, x: &FlexTensor, transposed: bool) -> bool {
    let ([b, heads, n, m], [bx, t, d]) = (dims4(a), dims3(x));
    b == bx && t == if transposed { n } else { m } && heads > 0 && d % heads == 0
}

/// scale X_h Y_h^T per head, then softmax over each row when `scale` is None (the scale is
/// then 1 / sqrt(d_h)).
fn scores(x: FlexTensor, y: FlexTensor, heads: usize, scale: Option<f32>) -> FlexTensor {
    let fit = |x: &FlexTensor, y: &FlexTensor| {
        let ([b, _, d], [by, _, dy]) = (dims3(x), dims3(y));
        b == by && d == dy && heads > 0 && d % heads == 0
    };
    match (f32_of_rank(x, 3), f32_of_rank(y, 3)) {
        (Ok(x), Ok(y)) if fit(&x, &y) => {
            let ([b, n, d], [_, m, _]) = (dims3(&x), dims3(&y));
            let dims = Dims { heads, n, m, d };
            let softmax = scale.is_none();
            let scale = scale.unwrap_or(score_scale(d, heads));
            let (x_s, y_s) = (x.storage::<f32>(), y.storage::<f32>());
            let mut out = vec![0.0; b * heads * n * m];
            per_sample(&mut out, b, |i, o| {
                let x_b = &x_s[i * n * d..(i + 1) * n * d];
                let y_b = &y_s[i * m * d..(i + 1) * m * d];
                scores_f32(x_b, y_b, o, dims, scale, softmax)
            });
            owned_f32(out, Shape::new([b, heads, n, m]))
        }
        (x, y) => composite_scores::<Flex>(unwrap(x), unwrap(y), heads, scale),
    }
}

// Natively the products run through the AVX2 register tiles of `tile_product` where the CPU
// has them (and, for A V and A^T X, d_h is a whole number of 8-wide pieces); the portable
// bodies below otherwise.
#[cfg(not(target_arch = "wasm32"))]
fn scores_f32(x: &[f32], y: &[f32], out: &mut [f32], dims: Dims, scale: f32, softmax: bool) {
    match tile::available() {
        true => scores_blocked_body(x, y, out, dims, scale, softmax, tiles),
        false => scores_portable(x, y, out, dims, scale, softmax),
    }
}
#[cfg(not(target_arch = "wasm32"))]
fn apply_f32(a: &[f32], v: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    match tile::available() && dims.d_h().is_multiple_of(L) {
        true => apply_blocked_body(a, v, out, dims, scale, tiles),
        false => apply_portable(a, v, out, dims, scale),
    }
}
#[cfg(not(target_arch = "wasm32"))]
fn apply_t_f32(a: &[f32], x: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    match tile::available() && dims.d_h().is_multiple_of(L) {
        true => apply_t_tiled_body(a, x, out, dims, scale),
        false => apply_t_portable(a, x, out, dims, scale),
    }
}
#[cfg(not(target_arch = "wasm32"))]
widest!(fn scores_portable(x: &[f32], y: &[f32], out: &mut [f32], dims: Dims, scale: f32, softmax: bool) => scores_body);
#[cfg(not(target_arch = "wasm32"))]
widest!(fn apply_portable(a: &[f32], v: &[f32], out: &mut [f32], dims: Dims, scale: f32) => apply_body);
#[cfg(not(target_arch = "wasm32"))]
widest!(fn apply_t_portable(a: &[f32], x: &[f32], out: &mut [f32], dims: Dims, scale: f32) => apply_t_body);

/// out = a b, out's rows at the given stride: the product the blocked bodies run.
type Product = fn(&mut [f32], usize, &View, &View);

/// The native product: [`tile_product`]'s AVX2 tiles.
#[cfg(not(target_arch = "wasm32"))]
fn tiles(out: &mut [f32], out_stride: usize, a: &View, b: &View) {
    tile_product(out, out_stride, Addend::Nothing, 1.0, a, b)
}

// The browser: the products through the SIMD128 register blocks of `blocked_product`.
#[cfg(target_arch = "wasm32")]
fn scores_f32(x: &[f32], y: &[f32], out: &mut [f32], dims: Dims, scale: f32, softmax: bool) {
    scores_blocked_body(x, y, out, dims, scale, softmax, blocks)
}
#[cfg(target_arch = "wasm32")]
fn apply_f32(a: &[f32], v: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    apply_blocked_body(a, v, out, dims, scale, blocks)
}
#[cfg(target_arch = "wasm32")]
widest!(fn apply_t_f32(a: &[f32], x: &[f32], out: &mut [f32], dims: Dims, scale: f32) => apply_t_body);

/// The browser's product: [`blocked_product`]'s SIMD128 blocks (natively: its tests).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn blocks(out: &mut [f32], out_stride: usize, a: &View, b: &View) {
    blocked_product(out, out_stride, false, a, b)
}

/// Lanes of one register block (AVX2: 8 f32).
const L: usize = super::LANES;

/// `s[at..at + L]` as an array, so the block's arithmetic is one vector operation.
#[inline(always)]
fn lanes(s: &[f32], at: usize) -> &[f32; L] {
    s[at..at + L].try_into().expect("a block of L lanes")
}

/// sum_r c_r x_r over the `terms` (c_r, x_r), x_r a block of L lanes: four partial sums in
/// turn, so four additions are in flight instead of each waiting for the previous one. The
/// terms come from iterators, not indices: an index computed in the inner loop costs more than
/// the block's arithmetic (bounds and, in the dev profile, overflow checks).
#[inline(always)]
fn reduce<'a>(mut terms: impl Iterator<Item = (f32, &'a [f32; L])>) -> [f32; L] {
    let mut acc = [[0.0f32; L]; 4];
    loop {
        match (terms.next(), terms.next(), terms.next(), terms.next()) {
            (Some(t0), Some(t1), Some(t2), Some(t3)) => {
                for (acc_k, (c, x)) in acc.iter_mut().zip([t0, t1, t2, t3]) {
                    for l in 0..L {
                        acc_k[l] += c * x[l];
                    }
                }
            }
            (t0, t1, t2, _) => {
                for (c, x) in [t0, t1, t2].into_iter().flatten() {
                    for l in 0..L {
                        acc[0][l] += c * x[l];
                    }
                }
                break;
            }
        }
    }
    let mut sum = [0.0f32; L];
    for l in 0..L {
        sum[l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
    }
    sum
}

/// Y_h^T into `y_t` (`[d_h, padded]`, one row per feature of the head): row t holds column
/// `first + t` of y (`[M, d]`) in its first M places; the rest is left as it is (zero padding).
#[inline(always)]
fn head_transposed(y: &[f32], d: usize, first: usize, y_t: &mut [f32], padded: usize) {
    for (t, y_t_row) in y_t.chunks_exact_mut(padded).enumerate() {
        for (o, y_row) in y_t_row.iter_mut().zip(y.chunks_exact(d)) {
            *o = y_row[first + t];
        }
    }
}

/// One sample: out `[H, N, M]` = scale X_h Y_h^T (x `[N, d]`, y `[M, d]`), rows softmaxed
/// when `softmax`. Y_h is transposed (and padded to whole blocks of keys) first; each block of
/// L scores then stays in a register while the d_h products are summed into it.
// The browser runs the `*_blocked_body` kernels instead (see `scores_f32`).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
#[inline(always)]
fn scores_body(x: &[f32], y: &[f32], out: &mut [f32], dims: Dims, scale: f32, softmax: bool) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    let padded = m.div_ceil(L) * L;
    let mut y_t = vec![0.0f32; d_h * padded];
    let mut scratch = vec![0.0f32; padded];
    for h in 0..heads {
        head_transposed(y, d, h * d_h, &mut y_t, padded);
        for i in 0..n {
            let x_i = &x[i * d + h * d_h..i * d + (h + 1) * d_h];
            // Whole blocks into the padded scratch row (vector stores), then the M scores.
            for (block, s) in scratch.as_chunks_mut::<L>().0.iter_mut().enumerate() {
                let terms = x_i.iter().zip(y_t.chunks_exact(padded));
                let acc = reduce(terms.map(|(&c, y_row)| (c, lanes(y_row, block * L))));
                for l in 0..L {
                    s[l] = acc[l] * scale;
                }
            }
            let row = &mut out[(h * n + i) * m..(h * n + i + 1) * m];
            row.copy_from_slice(&scratch[..m]);
            if softmax {
                super::softmax_rows_body(row, m);
            }
        }
    }
}

/// [`scores_body`] as one register-blocked `product` per head: [`tile_product`]'s AVX2 tiles
/// natively, [`blocked_product`]'s SIMD128 blocks in the browser (LLVM vectorises `reduce`'s
/// blocks for SIMD128 only in part).
fn scores_blocked_body(
    x: &[f32],
    y: &[f32],
    out: &mut [f32],
    dims: Dims,
    scale: f32,
    softmax: bool,
    product: Product,
) {
    let Dims { heads, n, m, d } = dims;
    if n == 0 || m == 0 {
        return;
    }
    let d_h = dims.d_h();
    let padded = m.div_ceil(L) * L;
    let mut y_t = vec![0.0f32; d_h * padded];
    let mut scratch = vec![0.0f32; n * padded];
    for h in 0..heads {
        head_transposed(y, d, h * d_h, &mut y_t, padded);
        let x_h = View::row_major(&x[h * d_h..], n, d_h, d);
        let y_h_t = View::row_major(&y_t, d_h, padded, padded);
        product(&mut scratch, padded, &x_h, &y_h_t);
        let out_h = &mut out[h * n * m..(h + 1) * n * m];
        for (row, scores) in out_h.chunks_exact_mut(m).zip(scratch.chunks_exact(padded)) {
            for (o, s) in row.iter_mut().zip(scores) {
                *o = s * scale;
            }
        }
        if softmax {
            super::softmax_rows_f32(out_h, m);
        }
    }
}

/// [`apply_body`] as one register-blocked `product` per head (as [`scores_blocked_body`]).
fn apply_blocked_body(
    a: &[f32],
    v: &[f32],
    out: &mut [f32],
    dims: Dims,
    scale: f32,
    product: Product,
) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    for h in 0..heads {
        let a_h = View::row_major(&a[h * n * m..(h + 1) * n * m], n, m, m);
        let v_h = View::row_major(&v[h * d_h..], m, d_h, d);
        product(&mut out[h * d_h..], d, &a_h, &v_h);
    }
    if scale != 1.0 {
        out.iter_mut().for_each(|o| *o *= scale);
    }
}

/// [`apply_t_body`] as one [`tile_product`] per head, A_h read transposed in place (native; d_h
/// a whole number of 8-wide pieces).
#[cfg(not(target_arch = "wasm32"))]
fn apply_t_tiled_body(a: &[f32], x: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    for h in 0..heads {
        let a_h_t = View {
            data: &a[h * n * m..(h + 1) * n * m],
            rows: m,
            cols: n,
            row_stride: 1,
            col_stride: m as isize,
        };
        let x_h = View::row_major(&x[h * d_h..], n, d_h, d);
        tile_product(&mut out[h * d_h..], d, Addend::Nothing, scale, &a_h_t, &x_h);
    }
}

/// One sample: out `[N, d]`, head h's columns = scale A_h V_h (a `[H, N, M]`, v `[M, d]`);
/// each block of L output features stays in a register over the M keys.
// The browser runs the `*_blocked_body` kernels instead (see `scores_f32`).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
#[inline(always)]
fn apply_body(a: &[f32], v: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    if !d_h.is_multiple_of(L) {
        return apply_rows_body(a, v, out, dims, scale);
    }
    for h in 0..heads {
        for i in 0..n {
            let a_row = &a[(h * n + i) * m..(h * n + i + 1) * m];
            for block in (h * d_h..(h + 1) * d_h).step_by(L) {
                let terms = a_row.iter().zip(v.chunks_exact(d));
                let acc = reduce(terms.map(|(&c, v_row)| (c, lanes(v_row, block))));
                for (o, s) in out[i * d + block..i * d + block + L].iter_mut().zip(&acc) {
                    *o = s * scale;
                }
            }
        }
    }
}

/// One sample: out `[M, d]`, head h's columns = scale A_h^T X_h (a `[H, N, M]`, x `[N, d]`);
/// each block of L output features stays in a register over the N queries.
#[inline(always)]
fn apply_t_body(a: &[f32], x: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    if !d_h.is_multiple_of(L) {
        return apply_t_rows_body(a, x, out, dims, scale);
    }
    for h in 0..heads {
        let a_h = &a[h * n * m..(h + 1) * n * m];
        for j in 0..m {
            for block in (h * d_h..(h + 1) * d_h).step_by(L) {
                let terms = a_h.chunks_exact(m).zip(x.chunks_exact(d));
                let acc = reduce(terms.map(|(a_row, x_row)| (a_row[j], lanes(x_row, block))));
                for (o, s) in out[j * d + block..j * d + block + L].iter_mut().zip(&acc) {
                    *o = s * scale;
                }
            }
        }
    }
}

/// [`apply_body`] for any d_h (not a whole number of blocks): row updates.
// The browser runs the `*_blocked_body` kernels instead (see `scores_f32`).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
#[inline(always)]
fn apply_rows_body(a: &[f32], v: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    for h in 0..heads {
        for i in 0..n {
            let o = &mut out[i * d + h * d_h..i * d + (h + 1) * d_h];
            for (j, &a_ij) in a[(h * n + i) * m..(h * n + i + 1) * m].iter().enumerate() {
                axpy(o, a_ij * scale, &v[j * d + h * d_h..j * d + (h + 1) * d_h]);
            }
        }
    }
}

/// [`apply_t_body`] for any d_h: row updates.
#[inline(always)]
fn apply_t_rows_body(a: &[f32], x: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    for h in 0..heads {
        for i in 0..n {
            let x_i = &x[i * d + h * d_h..i * d + (h + 1) * d_h];
            for (j, &a_ij) in a[(h * n + i) * m..(h * n + i + 1) * m].iter().enumerate() {
                axpy(
                    &mut out[j * d + h * d_h..j * d + (h + 1) * d_h],
                    a_ij * scale,
                    x_i,
                );
            }
        }
    }
}

/// out += c x.
#[inline(always)]
fn axpy(out: &mut [f32], c: f32, x: &[f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o += c * x;
    }
}

/// `[B, T, d]` -> `[B, H, T, d_h]` from a backend's primitives.
fn composite_split<B: Backend>(x: FloatTensor<B>, heads: usize) -> FloatTensor<B> {
    let s = x.shape();
    let (b, t, d) = (s[0], s[1], s[2]);
    B::float_swap_dims(
        B::float_reshape(x, Shape::new([b, t, heads, d / heads])),
        1,
        2,
    )
}

/// `[B, H, T, d_h]` -> `[B, T, d]` from a backend's primitives.
fn composite_merge<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let s = x.shape();
    let (b, heads, t, d_h) = (s[0], s[1], s[2], s[3]);
    B::float_reshape(B::float_swap_dims(x, 1, 2), Shape::new([b, t, heads * d_h]))
}

/// [`FusedAttentionOps::fused_heads_scores`] (softmaxed when `scale` is None) from Burn's ops.
fn composite_scores<B: Backend>(
    x: FloatTensor<B>,
    y: FloatTensor<B>,
    heads: usize,
    scale: Option<f32>,
) -> FloatTensor<B> {
    let d = x.shape()[2];
    let s = B::float_matmul(
        composite_split::<B>(x, heads),
        B::float_swap_dims(composite_split::<B>(y, heads), 2, 3),
    );
    match scale {
        Some(scale) => B::float_mul_scalar(s, scale.into()),
        None => {
            let s = B::float_mul_scalar(s, score_scale(d, heads).into());
            <B as ActivationOps<B>>::softmax(s, 3)
        }
    }
}

/// [`FusedAttentionOps::fused_heads_apply`] from Burn's ops.
fn composite_apply<B: Backend>(a: FloatTensor<B>, v: FloatTensor<B>, scale: f32) -> FloatTensor<B> {
    let heads = a.shape()[1];
    let c = B::float_matmul(a, composite_split::<B>(v, heads));
    B::float_mul_scalar(composite_merge::<B>(c), scale.into())
}

/// [`FusedAttentionOps::fused_heads_apply_t`] from Burn's ops.
fn composite_apply_t<B: Backend>(
    a: FloatTensor<B>,
    x: FloatTensor<B>,
    scale: f32,
) -> FloatTensor<B> {
    let heads = a.shape()[1];
    let c = B::float_matmul(B::float_swap_dims(a, 2, 3), composite_split::<B>(x, heads));
    B::float_mul_scalar(composite_merge::<B>(c), scale.into())
}

impl<B, C> FusedAttentionOps for Autodiff<B, C>
where
    B: Backend + FusedAttentionOps + super::FusedOps,
    B::FloatTensorPrimitive: Clone + Send + core::fmt::Debug,
    C: CheckpointStrategy,
{
    fn fused_attention_weights(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        /// Keeps A (the softmax's gradient needs only its output), and Q for K's gradient,
        /// K for Q's, each only when needed.
        #[derive(Debug)]
        struct FusedWeights;

        impl<B: Backend + FusedAttentionOps + super::FusedOps> Backward<B, 2> for FusedWeights
        where
            B::FloatTensorPrimitive: Clone + Send + core::fmt::Debug,
        {
            /// A, Q's and K's checkpoints, 1 / sqrt(d_h).
            type State = (B::FloatTensorPrimitive, Option<NodeId>, Option<NodeId>, f32);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_q, node_k] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (a, q_state, k_state, scale) = ops.state;
                // A (dA - rowsum(dA A)): the gradient of the scaled scores.
                let ds = B::fused_softmax_backward(a, grad);
                if let (Some(node), Some(id)) = (node_q, k_state) {
                    let k = checkpointer.retrieve_node_output(id);
                    grads.register::<B>(node.id, B::fused_heads_apply(ds.clone(), k, scale));
                }
                if let (Some(node), Some(id)) = (node_k, q_state) {
                    let q = checkpointer.retrieve_node_output(id);
                    grads.register::<B>(node.id, B::fused_heads_apply_t(ds, q, scale));
                }
            }
        }

        let (q_tracked, k_tracked) = (q.is_tracked(), k.is_tracked());
        match FusedWeights
            .prepare::<C>([q.node(), k.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let scale = score_scale(q.primitive().shape()[2], heads);
                let q_state = k_tracked.then(|| prep.checkpoint(&q));
                let k_state = q_tracked.then(|| prep.checkpoint(&k));
                let a = B::fused_attention_weights(q.into_primitive(), k.into_primitive(), heads);
                prep.finish((a.clone(), q_state, k_state, scale), a)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_attention_weights(
                q.into_primitive(),
                k.into_primitive(),
                heads,
            )),
        }
    }

    fn fused_attention_context(a: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self> {
        /// Keeps A for V's gradient and V for A's, each only when needed.
        #[derive(Debug)]
        struct FusedContext;

        impl<B: Backend + FusedAttentionOps> Backward<B, 2> for FusedContext {
            /// A's and V's checkpoints (A also gives the number of heads).
            type State = (NodeId, NodeId);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_a, node_v] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let a: FloatTensor<B> = checkpointer.retrieve_node_output(ops.state.0);
                let v: FloatTensor<B> = checkpointer.retrieve_node_output(ops.state.1);
                if let Some(node) = node_a {
                    let heads = a.shape()[1];
                    let grad_a = B::fused_heads_scores(grad.clone(), v, heads, 1.0);
                    grads.register::<B>(node.id, grad_a);
                }
                if let Some(node) = node_v {
                    grads.register::<B>(node.id, B::fused_heads_apply_t(a, grad, 1.0));
                }
            }
        }

        match FusedContext
            .prepare::<C>([a.node(), v.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&a), prep.checkpoint(&v));
                prep.finish(
                    state,
                    B::fused_attention_context(a.into_primitive(), v.into_primitive()),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_attention_context(
                a.into_primitive(),
                v.into_primitive(),
            )),
        }
    }

    fn fused_heads_scores(
        x: FloatTensor<Self>,
        y: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> FloatTensor<Self> {
        composite_scores::<Self>(x, y, heads, Some(scale))
    }

    fn fused_heads_apply(
        a: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        composite_apply::<Self>(a, v, scale)
    }

    fn fused_heads_apply_t(
        a: FloatTensor<Self>,
        x: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        composite_apply_t::<Self>(a, x, scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{close, close_within, numbers, values};
    use burn::tensor::{Device, Distribution, TensorData};

    /// The weights, the context and the gradients of q, k, v through both (the loss reads A
    /// directly too, as the refinement's e does) against Burn's ops.
    ///
    /// `relative_slack`: extra tolerance, relative to each value, for inputs whose scores are so
    /// large that the scores' own f32 rounding (about eps |q| |k|: 1e-4 for entries of size 30)
    /// moves the softmax, and everything after it, by more than [`close`]'s 1e-4.
    fn check(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize, relative_slack: f32) {
        let [b, n, _] = q.dims();
        let m = k.dims()[1];
        let device = q.device();
        let w_a = Tensor::<4>::random([b, heads, n, m], Distribution::Normal(0.0, 1.0), &device);
        let w_c = Tensor::<3>::random(q.dims(), Distribution::Normal(0.0, 1.0), &device);
        let run = |exec: Execution| {
            let (q, k, v) = (
                q.clone().require_grad(),
                k.clone().require_grad(),
                v.clone().require_grad(),
            );
            let a = attention_weights(q.clone(), k.clone(), heads, exec);
            let c = attention_context(a.clone(), v.clone(), exec);
            let loss = (a.clone() * w_a.clone()).sum() + (c.clone() * w_c.clone()).sum();
            let grads = loss.backward();
            let grad = |t: &Tensor<3>| values(t.grad(&grads).expect("gradient"));
            (values(a), values(c), grad(&q), grad(&k), grad(&v))
        };
        let (fused, burn) = (run(Execution::Kernels), run(Execution::BurnOps));
        let what =
            |name: &str| format!("{name} (q {:?}, k {:?}, {heads} heads)", q.dims(), k.dims());
        let pairs = [
            ("A", fused.0, burn.0),
            ("C", fused.1, burn.1),
            ("dq", fused.2, burn.2),
            ("dk", fused.3, burn.3),
            ("dv", fused.4, burn.4),
        ];
        for (name, ours, burns) in pairs {
            let slack: Vec<f32> = burns
                .iter()
                .map(|b| relative_slack * (1.0 + b.abs()))
                .collect();
            close_within(ours, burns, &slack, &what(name));
        }
    }

    fn random(dims: [usize; 3], scale: f64) -> Tensor<3> {
        Tensor::random(
            dims,
            Distribution::Normal(0.0, scale),
            &Device::flex().autodiff(),
        )
    }

    #[test]
    fn fused_attention_and_its_gradients_match_burns() {
        // The encoder's shapes (44 tokens, 4 heads of 16), the refinement's (one more key than
        // queries), heads of a width that is not a whole number of lane blocks, one token.
        for (b, n, m, d, heads) in [
            (3, 44, 44, 64, 4),
            (2, 22, 23, 64, 4),
            (2, 5, 7, 6, 2),
            (1, 1, 1, 8, 1),
        ] {
            check(
                random([b, n, d], 1.0),
                random([b, m, d], 1.0),
                random([b, m, d], 1.0),
                heads,
                0.0,
            );
        }
        // Large scores: the softmax saturates (without the slack, about one run in 40 differed
        // from Burn's by up to 4e-4 relative, in dq).
        check(
            random([2, 9, 16], 30.0),
            random([2, 9, 16], 30.0),
            random([2, 9, 16], 1.0),
            2,
            2e-3,
        );
    }

    #[test]
    fn feature_major_heads_give_the_token_major_weights_context_and_gradients() {
        // The refinement's shapes (one key more than queries), odd head widths, one token.
        for (b, n, m, d, heads) in [(3, 44, 45, 64, 4), (2, 5, 7, 6, 2), (1, 1, 1, 8, 1)] {
            let (q, k, v) = (
                random([b, n, d], 1.0).require_grad(),
                random([b, m, d], 1.0).require_grad(),
                random([b, m, d], 1.0).require_grad(),
            );
            let w_a = random([b * heads, n, m], 1.0).reshape([b, heads, n, m]);
            let w_c = random([b, n, d], 1.0);
            let run = |feature_major: bool| {
                let (a, c) = if feature_major {
                    let a = attention_weights_feature_major(
                        q.clone().swap_dims(1, 2),
                        k.clone().swap_dims(1, 2),
                        heads,
                    );
                    let c = attention_context_feature_major(a.clone(), v.clone().swap_dims(1, 2));
                    (a, c)
                } else {
                    let a = attention_weights(q.clone(), k.clone(), heads, Execution::BurnOps);
                    let c = attention_context(a.clone(), v.clone(), Execution::BurnOps);
                    (a, c)
                };
                let loss = (a.clone() * w_a.clone()).sum() + (c.clone() * w_c.clone()).sum();
                let grads = loss.backward();
                let grad = |t: &Tensor<3>| values(t.grad(&grads).expect("gradient"));
                [values(a), values(c), grad(&q), grad(&k), grad(&v)]
            };
            let (ours, token_major) = (run(true), run(false));
            for ((name, a), theirs) in ["A", "C", "dq", "dk", "dv"]
                .iter()
                .zip(ours)
                .zip(token_major)
            {
                close(
                    a,
                    theirs,
                    &format!("{name} (b {b}, n {n}, m {m}, d {d}, {heads} heads)"),
                );
            }
        }
    }

    #[test]
    fn views_are_read_in_their_own_order_and_nan_propagates() {
        // A transposed view of the keys.
        let k = random([2, 8, 5], 1.0).swap_dims(1, 2);
        check(random([2, 5, 8], 1.0), k, random([2, 5, 8], 1.0), 2, 0.0);
        let device = Device::flex();
        let mut data = vec![0.5f32; 2 * 3 * 4];
        data[0] = f32::NAN;
        let q = Tensor::<3>::from_data(TensorData::new(data, [2, 3, 4]), &device);
        let a = values(attention_weights(q.clone(), q, 2, Execution::Kernels));
        // Sample 0, head 0: query 0 is NaN, so its row, and every row that reads key 0, is NaN.
        assert!(a[..3].iter().all(|v| v.is_nan()), "{a:?}");
        // Sample 1 has no NaN.
        assert!(a[12..].iter().all(|v| v.is_finite()), "{a:?}");
    }

    /// The register-blocked scores, A V and A^T X (`*_blocked_body` with the browser's blocks,
    /// and with the native AVX2 tiles where the CPU has them) against the portable kernels, on
    /// one sample: the encoder's and refinement's shapes, heads that are not a whole number of
    /// 8-lane blocks, one key, a scale and a NaN query.
    #[test]
    fn the_blocked_and_tiled_products_match_the_portable_kernels() {
        let mut products: Vec<(&str, Product)> = vec![("blocks", blocks)];
        if tile::available() {
            products.push(("tiles", tiles));
        }
        for (heads, n, m, d) in [
            (4, 44, 44, 64),
            (4, 44, 45, 64),
            (4, 22, 23, 64),
            (3, 5, 7, 9),
            (2, 3, 1, 32),
        ] {
            let dims = Dims { heads, n, m, d };
            let (mut x, y, v) = (numbers(n * d, 1), numbers(m * d, 2), numbers(m * d, 3));
            x[0] = f32::NAN;
            for &(name, product) in &products {
                for (scale, softmax) in [(0.25, true), (0.5, false)] {
                    let mut want = vec![0.0; heads * n * m];
                    let mut got = vec![9.0; heads * n * m];
                    scores_body(&x, &y, &mut want, dims, scale, softmax);
                    scores_blocked_body(&x, &y, &mut got, dims, scale, softmax, product);
                    close(got, want, &format!("{name}: scores"));
                }
                if name == "tiles" && !dims.d_h().is_multiple_of(L) {
                    continue; // apply_f32 takes the portable kernel then
                }
                let mut a = vec![0.0; heads * n * m];
                scores_body(&x, &y, &mut a, dims, 0.25, true);
                for scale in [1.0, 0.5] {
                    let mut want = vec![0.0; n * d];
                    let mut got = vec![9.0; n * d];
                    apply_body(&a, &v, &mut want, dims, scale);
                    apply_blocked_body(&a, &v, &mut got, dims, scale, product);
                    close(got, want, &format!("{name}: A V"));
                }
            }
            if tile::available() && dims.d_h().is_multiple_of(L) {
                let mut a = vec![0.0; heads * n * m];
                scores_body(&x, &y, &mut a, dims, 0.25, true);
                let x_rows = numbers(n * d, 4);
                for scale in [1.0, 0.5] {
                    let mut want = vec![0.0; m * d];
                    let mut got = vec![9.0; m * d];
                    apply_t_body(&a, &x_rows, &mut want, dims, scale);
                    apply_t_tiled_body(&a, &x_rows, &mut got, dims, scale);
                    close(got, want, "tiles: A^T X");
                }
            }
        }
    }
}
