//! Burn's backend extension for the element-wise kernels: the [`FusedOps`] trait (GELU and
//! softmax, forward and backward), implemented for flex on its f32 buffers and for autodiff with
//! a hand-written backward; and the buffer helpers every flex kernel of this crate shares
//! (contiguity, owned buffers, maps and zips split over the cores).

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::{Bytes, DType};

use crate::elementwise::{gelu_f32, gelu_grad_f32, softmax_grad_rows_f32, softmax_rows_f32};

/// The operations this module adds to Burn's backends.
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// GELU(x) = x Phi(x), Phi the standard normal CDF.
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradient of GELU at `x` times `grad`: grad (Phi(x) + x phi(x)).
    fn fused_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Softmax over the last axis: y_i = exp(x_i - max x) / sum_j exp(x_j - max x).
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradient of softmax from its output `y` and `grad`: y (grad - sum_j grad_j y_j),
    /// the sum over each row of the last axis.
    fn fused_softmax_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl FusedOps for Flex {
    fn fused_gelu(x: FlexTensor) -> FlexTensor {
        match contiguous_f32(&x) {
            true => map_f32(x, 1, gelu_f32),
            false => <Flex as ActivationOps<Flex>>::gelu(x),
        }
    }

    fn fused_gelu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let same_shape = x.layout().shape() == grad.layout().shape();
        match same_shape && contiguous_f32(&x) && contiguous_f32(&grad) {
            true => zip_f32(&x, grad, 1, gelu_grad_f32),
            false => <Flex as ActivationOps<Flex>>::gelu_backward(x, grad),
        }
    }

    fn fused_softmax(x: FlexTensor) -> FlexTensor {
        let (last, row) = last_axis(&x);
        if x.dtype() != DType::F32 || row == 0 {
            return <Flex as ActivationOps<Flex>>::softmax(x, last);
        }
        map_f32(contiguous(x), row, |rows| softmax_rows_f32(rows, row))
    }

    fn fused_softmax_backward(y: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let (last, row) = last_axis(&y);
        let f32s = y.dtype() == DType::F32 && grad.dtype() == DType::F32;
        if !f32s || row == 0 || grad.layout().shape() != y.layout().shape() {
            // y (grad - sum(grad y)) from Burn's primitives (never taken by the model: its
            // softmax inputs are f32).
            let dot = Flex::float_sum_dim(Flex::float_mul(grad.clone(), y.clone()), last);
            return Flex::float_mul(y, Flex::float_sub(grad, dot));
        }
        zip_f32(&contiguous(y), contiguous(grad), row, |ys, g| {
            softmax_grad_rows_f32(ys, g, row)
        })
    }
}

impl<B: Backend + FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct FusedGelu;

        impl<B: Backend + FusedOps> Backward<B, 1> for FusedGelu {
            type State = NodeId;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let input = checkpointer.retrieve_node_output(ops.state);
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    B::fused_gelu_backward(input, grad)
                });
            }
        }

        match FusedGelu
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&x);
                prep.finish(state, B::fused_gelu(x.primitive().clone()))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_gelu(x.into_primitive())),
        }
    }

    fn fused_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // The backward above calls the inner backend's; this one (a second derivative) is
        // Burn's composite, differentiable in turn.
        <Self as ActivationOps<Self>>::gelu_backward(x, grad)
    }

    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        /// The backward keeps the output y (the gradient needs only y), not the input.
        #[derive(Debug)]
        struct FusedSoftmax;

        impl<B: Backend + FusedOps> Backward<B, 1> for FusedSoftmax
        where
            B::FloatTensorPrimitive: Clone + Send + core::fmt::Debug,
        {
            type State = B::FloatTensorPrimitive;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let y = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    B::fused_softmax_backward(y, grad)
                });
            }
        }

        match FusedSoftmax
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::fused_softmax(x.primitive().clone());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_softmax(x.into_primitive())),
        }
    }

    fn fused_softmax_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // Only for a second derivative: Burn's composite, differentiable in turn.
        let last = y.shape().num_dims() - 1;
        let dot = Self::float_sum_dim(Self::float_mul(grad.clone(), y.clone()), last);
        Self::float_mul(y, Self::float_sub(grad, dot))
    }
}

/// The last axis of `t` and its length (0 for a scalar).
fn last_axis(t: &FlexTensor) -> (usize, usize) {
    let shape = t.layout().shape();
    match shape.num_dims() {
        0 => (0, 0),
        rank => (rank - 1, shape[rank - 1]),
    }
}

/// `t` with a contiguous layout from the start of its storage (itself when it has one already).
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    if contiguous_f32(&t) {
        t
    } else {
        t.to_contiguous()
    }
}

/// A contiguous f32 tensor that owns `data` (no copy: the vector becomes its storage).
pub(crate) fn owned_f32(data: Vec<f32>, shape: burn::tensor::Shape) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// Whether the fused path takes `t`: f32, contiguous, from the start of its storage.
fn contiguous_f32(t: &FlexTensor) -> bool {
    t.dtype() == DType::F32 && t.layout().is_contiguous() && t.layout().start_offset() == 0
}

/// Elements per task when a kernel is split over the cores: large enough that a task's
/// overhead (a few microseconds) is small against its work.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) const CHUNK: usize = 1 << 15;

/// Rows of `row` elements per task when a kernel is split over the cores (an element-wise
/// kernel passes row 1: CHUNK elements per task).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn rows_per_task(row: usize) -> usize {
    (CHUNK / row).max(1)
}

/// `f` over a contiguous f32 tensor, given whole rows of `row` elements (1 for an element-wise
/// kernel): in place when the tensor owns its storage, into a new one otherwise.
fn map_f32(mut x: FlexTensor, row: usize, f: impl Fn(&mut [f32]) + Sync + Send) -> FlexTensor {
    let n = x.layout().num_elements();
    if x.is_unique() {
        run(&mut x.storage_mut::<f32>()[..n], row, f);
        return x;
    }
    let mut out = x.storage::<f32>()[..n].to_vec();
    run(&mut out, row, f);
    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(x.layout().shape().clone()),
        DType::F32,
    )
}

/// `f(x, grad)` over whole rows into `grad` (in place when it owns its storage).
fn zip_f32(
    x: &FlexTensor,
    mut grad: FlexTensor,
    row: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync + Send,
) -> FlexTensor {
    let n = x.layout().num_elements();
    let xs = &x.storage::<f32>()[..n];
    if grad.is_unique() {
        run_zip(xs, &mut grad.storage_mut::<f32>()[..n], row, f);
        return grad;
    }
    let mut out = grad.storage::<f32>()[..n].to_vec();
    run_zip(xs, &mut out, row, f);
    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(grad.layout().shape().clone()),
        DType::F32,
    )
}

/// `f` on `data`, split over the cores in tasks of whole rows when it is large.
#[cfg_attr(target_arch = "wasm32", allow(unused_variables))]
fn run(data: &mut [f32], row: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    #[cfg(not(target_arch = "wasm32"))]
    if data.len() > CHUNK {
        use rayon::prelude::*;
        data.par_chunks_mut(rows_per_task(row) * row).for_each(f);
        return;
    }
    f(data);
}

/// `f(xs, out)` split as [`run`] splits.
#[cfg_attr(target_arch = "wasm32", allow(unused_variables))]
pub(crate) fn run_zip(
    xs: &[f32],
    out: &mut [f32],
    row: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync + Send,
) {
    #[cfg(not(target_arch = "wasm32"))]
    if out.len() > CHUNK {
        use rayon::prelude::*;
        let task = rows_per_task(row) * row;
        xs.par_chunks(task)
            .zip(out.par_chunks_mut(task))
            .for_each(|(x, o)| f(x, o));
        return;
    }
    f(xs, out);
}
