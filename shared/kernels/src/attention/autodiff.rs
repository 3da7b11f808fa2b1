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
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend};

use super::composite::{composite_apply, composite_apply_t, composite_scores};
use super::{FusedAttentionOps, score_scale};

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
