//! Each fused attention step in Burn's own ops, for any backend: flex's fallback for the
//! inputs its kernels do not take (flex.rs), and the backward's form on an inner backend other
//! than flex (autodiff.rs).
//!
//! Dimension key: `B` batch, `H` heads, `N` queries, `M` keys, `d` = `H d_h` features.

use burn::backend::Backend;
use burn::backend::TensorMetadata;
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::tensor::Shape;

use super::score_scale;

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
pub(super) fn composite_scores<B: Backend>(
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
pub(super) fn composite_apply<B: Backend>(
    a: FloatTensor<B>,
    v: FloatTensor<B>,
    scale: f32,
) -> FloatTensor<B> {
    let heads = a.shape()[1];
    let c = B::float_matmul(a, composite_split::<B>(v, heads));
    B::float_mul_scalar(composite_merge::<B>(c), scale.into())
}

/// [`FusedAttentionOps::fused_heads_apply_t`] from Burn's ops.
pub(super) fn composite_apply_t<B: Backend>(
    a: FloatTensor<B>,
    x: FloatTensor<B>,
    scale: f32,
) -> FloatTensor<B> {
    let heads = a.shape()[1];
    let c = B::float_matmul(B::float_swap_dims(a, 2, 3), composite_split::<B>(x, heads));
    B::float_mul_scalar(composite_merge::<B>(c), scale.into())
}
