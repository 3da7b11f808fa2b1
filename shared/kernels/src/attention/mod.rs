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

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

use super::{Execution, on_flex};

// Flex's forward bodies and the products they run on; the backward through Autodiff; each
// step in Burn's ops.
mod autodiff;
mod composite;
mod flex;

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

/// Eq. 7's score scale 1 / sqrt(d_h), d_h = d / heads (1 for a zero width, which has no
/// products to scale).
pub(super) fn score_scale(d: usize, heads: usize) -> f32 {
    1.0 / ((d / heads.max(1)).max(1) as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{close, close_within, values};
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
}
