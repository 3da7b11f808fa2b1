//! The backward of the fused attention through Autodiff: each step's gradients as the same
//! fused products (on flex) or as Burn's ops (the composite forms, on any other backend).
//!
//! Dimension key: `B` batch, `H` heads, `N` queries, `M` keys, `d` = `H d_h` features.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend};
use burn::tensor::Shape;

use super::{FusedAttentionOps, score_scale};

/// `[B, T, d]` -> `[B, H, T, d_h]` from a backend's primitives.
pub(super) fn composite_split<B: Backend>(x: FloatTensor<B>, heads: usize) -> FloatTensor<B> {
    let s = x.shape();
    let (b, t, d) = (s[0], s[1], s[2]);
    B::float_swap_dims(
        B::float_reshape(x, Shape::new([b, t, heads, d / heads])),
        1,
        2,
    )
}

/// `[B, H, T, d_h]` -> `[B, T, d]` from a backend's primitives.
pub(super) fn composite_merge<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
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

impl<B, C> FusedAttentionOps for Autodiff<B, C>
where
    B: Backend + FusedAttentionOps + crate::FusedOps,
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

        impl<B: Backend + FusedAttentionOps + crate::FusedOps> Backward<B, 2> for FusedWeights
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
