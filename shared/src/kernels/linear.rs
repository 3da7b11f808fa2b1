//! A fused linear layer for flex: y = x W + b as one matrix product into a fresh buffer that
//! starts as the bias rows, and its backward as two products and a column sum (issue 12).
//!
//! Flex runs Burn's linear as a matmul whose output buffer is allocated zeroed as bytes and
//! then copied once more into an aligned one (`FlexTensor::empty`: about 10% of a training
//! step), then adds the bias in a second pass; the backward transposes the weight and the
//! input into strided views for two more such matmuls. Here every product is one `gemm` call
//! that reads the operands through their strides and writes into a `Vec<f32>` that becomes the
//! tensor's storage as it is.
//!
//! Dimension key: `R` rows (tokens of every sample), `I` input features, `O` output features.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Shape, Tensor};

use super::{on_flex, owned_f32};

/// `linear` on `[R, I]` rows: the fused product on flex when `fused` and the layer has a bias,
/// Burn's `Linear::forward` otherwise.
///
/// # Shapes
/// - x: `[R, I]`
/// - output: `[R, O]`
pub fn linear_2d(linear: &burn::nn::Linear, x: Tensor<2>, fused: bool) -> Tensor<2> {
    match &linear.bias {
        Some(bias) if fused && on_flex(&x.device()) => {
            Tensor::from_dispatch(<Dispatch as FusedLinearOps>::fused_linear(
                x.into_dispatch(),
                linear.weight.val().into_dispatch(),
                bias.val().into_dispatch(),
            ))
        }
        _ => linear.forward(x),
    }
}

/// The linear layer's operations this module adds to Burn's backends.
#[backend_extension(Flex, Autodiff)]
pub trait FusedLinearOps: Backend {
    /// y = x W + b, x `[R, I]`, W `[I, O]`, b `[O]`.
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// dL/dx = dL/dy W^T, `[R, I]`.
    fn fused_linear_grad_x(weight: FloatTensor<Self>, grad: FloatTensor<Self>)
    -> FloatTensor<Self>;
    /// dL/dW = x^T dL/dy, `[I, O]`.
    fn fused_linear_grad_weight(x: FloatTensor<Self>, grad: FloatTensor<Self>)
    -> FloatTensor<Self>;
    /// dL/db = the column sums of dL/dy, `[O]`.
    fn fused_linear_grad_bias(grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// A row-major f32 matrix view: element (i, j) at `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a> View<'a> {
    /// `t` as a matrix when it is a 2-D f32 tensor with non-negative strides.
    fn of(t: &'a FlexTensor) -> Option<Self> {
        let layout = t.layout();
        let shape = layout.shape();
        if t.dtype() != DType::F32 || shape.num_dims() != 2 {
            return None;
        }
        let strides = layout.strides();
        let (row_stride, col_stride) = (strides[0], strides[1]);
        if row_stride < 0 || col_stride < 0 {
            return None;
        }
        Some(View {
            data: &t.storage::<f32>()[layout.start_offset()..],
            rows: shape[0],
            cols: shape[1],
            row_stride,
            col_stride,
        })
    }

    /// The same numbers transposed (no copy).
    fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// Products below this many multiply-adds run on one core (gemm's threads cost more than
/// they save on them; flex's threshold).
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_MACS: usize = 192 * 192 * 192;

/// `out` = `init` + a b, `out` row-major `[a.rows, b.cols]`, `init` true when `out` already
/// holds the addend (the bias rows), false to overwrite it.
fn gemm_into(out: &mut [f32], init: bool, a: &View, b: &View) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "gemm_into: inner dimensions");
    assert_eq!(out.len(), m * n, "gemm_into: output size");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !init {
            out.fill(0.0);
        }
        return;
    }
    #[cfg(not(target_arch = "wasm32"))]
    let parallelism = match m * n * k >= PARALLEL_MACS {
        true => gemm::Parallelism::Rayon(0),
        false => gemm::Parallelism::None,
    };
    #[cfg(target_arch = "wasm32")]
    let parallelism = gemm::Parallelism::None;
    // SAFETY: every index gemm reads, i * row_stride + j * col_stride for i < rows and j < cols,
    // lies inside the tensor's storage (Layout's invariant, from its start offset); `out` holds
    // m * n elements (asserted), written at row stride n.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            init,
            a.data.as_ptr(),
            a.col_stride,
            a.row_stride,
            b.data.as_ptr(),
            b.col_stride,
            b.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

impl FusedLinearOps for Flex {
    fn fused_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let bias_1d = bias.dtype() == DType::F32 && bias.layout().shape().num_dims() == 1;
        match (View::of(&x), View::of(&weight), bias_1d) {
            (Some(xv), Some(wv), true) if xv.cols == wv.rows && bias.shape()[0] == wv.cols => {
                let bias = super::contiguous(bias);
                let b = &bias.storage::<f32>()[..wv.cols];
                let mut out = Vec::with_capacity(xv.rows * wv.cols);
                for _ in 0..xv.rows {
                    out.extend_from_slice(b);
                }
                gemm_into(&mut out, true, &xv, &wv);
                owned_f32(out, Shape::new([xv.rows, wv.cols]))
            }
            _ => Flex::linear(x, weight, Some(bias)),
        }
    }

    fn fused_linear_grad_x(weight: FlexTensor, grad: FlexTensor) -> FlexTensor {
        match (View::of(&weight), View::of(&grad)) {
            (Some(wv), Some(gv)) if gv.cols == wv.cols => {
                let mut out = vec![0.0; gv.rows * wv.rows];
                gemm_into(&mut out, false, &gv, &wv.t());
                owned_f32(out, Shape::new([gv.rows, wv.rows]))
            }
            _ => Flex::linear_x_backward(weight, grad),
        }
    }

    fn fused_linear_grad_weight(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        match (View::of(&x), View::of(&grad)) {
            (Some(xv), Some(gv)) if xv.rows == gv.rows => {
                let mut out = vec![0.0; xv.cols * gv.cols];
                gemm_into(&mut out, false, &xv.t(), &gv);
                owned_f32(out, Shape::new([xv.cols, gv.cols]))
            }
            _ => Flex::linear_weight_backward(x, grad),
        }
    }

    fn fused_linear_grad_bias(grad: FlexTensor) -> FlexTensor {
        match View::of(&grad) {
            Some(gv) => {
                let mut out = vec![0.0f32; gv.cols];
                for i in 0..gv.rows {
                    let start = i * gv.row_stride as usize;
                    if gv.col_stride == 1 {
                        // A whole row at once: the additions vectorise.
                        let row = &gv.data[start..start + gv.cols];
                        out.iter_mut().zip(row).for_each(|(o, g)| *o += g);
                    } else {
                        for (j, o) in out.iter_mut().enumerate() {
                            *o += gv.data[start + j * gv.col_stride as usize];
                        }
                    }
                }
                owned_f32(out, Shape::new([gv.cols]))
            }
            None => Flex::linear_bias_backward(grad),
        }
    }
}

impl<B: Backend + FusedLinearOps, C: CheckpointStrategy> FusedLinearOps for Autodiff<B, C> {
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        /// Keeps x for the weight's gradient and W for the input's, each only when needed.
        #[derive(Debug)]
        struct FusedLinear;

        impl<B: Backend + FusedLinearOps> Backward<B, 3> for FusedLinear {
            type State = (Option<NodeId>, Option<NodeId>);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_weight, node_bias] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x_state, weight_state) = ops.state;
                if let (Some(node), Some(id)) = (node_x, weight_state) {
                    let weight = checkpointer.retrieve_node_output(id);
                    grads.register::<B>(node.id, B::fused_linear_grad_x(weight, grad.clone()));
                }
                if let (Some(node), Some(id)) = (node_weight, x_state) {
                    let x = checkpointer.retrieve_node_output(id);
                    grads.register::<B>(node.id, B::fused_linear_grad_weight(x, grad.clone()));
                }
                if let Some(node) = node_bias {
                    grads.register::<B>(node.id, B::fused_linear_grad_bias(grad));
                }
            }
        }

        let (x_tracked, weight_tracked) = (x.is_tracked(), weight.is_tracked());
        match FusedLinear
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                // x is needed only for the weight's gradient, W only for x's.
                let x_state = weight_tracked.then(|| prep.checkpoint(&x));
                let weight_state = x_tracked.then(|| prep.checkpoint(&weight));
                prep.finish(
                    (x_state, weight_state),
                    B::fused_linear(
                        x.into_primitive(),
                        weight.into_primitive(),
                        bias.into_primitive(),
                    ),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_linear(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }

    // The three below serve only a second derivative, which the model never takes: Burn's
    // composites, differentiable in turn.
    fn fused_linear_grad_x(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::float_matmul(grad, Self::float_swap_dims(weight, 0, 1))
    }

    fn fused_linear_grad_weight(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::float_matmul(Self::float_swap_dims(x, 0, 1), grad)
    }

    fn fused_linear_grad_bias(grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let outputs = grad.shape()[1];
        Self::float_reshape(Self::float_sum_dim(grad, 0), Shape::new([outputs]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{close, values};
    use burn::module::Param;
    use burn::nn::LinearConfig;
    use burn::tensor::{Device, Distribution, TensorData};

    /// y, dL/dx, dL/dW and dL/db of the fused layer against Burn's `Linear::forward`, for the
    /// input `x` (`[rows, inputs]` on flex with autodiff; may be a view) and the loss
    /// sum(y * weights).
    fn check(x: Tensor<2>, outputs: usize) {
        let [rows, inputs] = x.dims();
        let device = x.device();
        let layer = LinearConfig::new(inputs, outputs).init(&device);
        // A bias that is not zero, so a missing bias term shows.
        let layer = burn::nn::Linear {
            bias: Some(Param::from_tensor(Tensor::random(
                [outputs],
                Distribution::Normal(0.0, 1.0),
                &device,
            ))),
            ..layer
        };
        let weights = Tensor::<2>::random([rows, outputs], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let x = x.clone().require_grad();
            let y = linear_2d(&layer, x.clone(), fused);
            let grads = (y.clone() * weights.clone()).sum().backward();
            let bias = layer.bias.as_ref().expect("bias").val();
            (
                values(y),
                x.grad(&grads).map(values).unwrap_or_default(),
                values(layer.weight.val().grad(&grads).expect("weight grad")),
                values(bias.grad(&grads).expect("bias grad")),
            )
        };
        let (fused, burn) = (run(true), run(false));
        close(fused.0, burn.0, "y");
        close(fused.1, burn.1, "dx");
        close(fused.2, burn.2, "dW");
        close(fused.3, burn.3, "db");
    }

    fn random(rows: usize, cols: usize) -> Tensor<2> {
        let device = Device::flex().autodiff();
        Tensor::random([rows, cols], Distribution::Normal(0.0, 2.0), &device)
    }

    #[test]
    fn fused_linear_and_its_gradients_match_burns() {
        // The model's shapes (tokens x d -> d, 4d, 1; the audio tokenizer), large enough to be
        // split over the cores, a single row and a single feature.
        for (rows, inputs, outputs) in [
            (2816, 64, 64),
            (2816, 64, 256),
            (1792, 448, 64),
            (44, 64, 1),
            (1, 5, 3),
            (7, 1, 2),
        ] {
            check(random(rows, inputs), outputs);
        }
        // A transposed view is read through its strides.
        check(random(9, 6).transpose(), 4);
        // No rows at all.
        check(Tensor::zeros([0, 3], &Device::flex().autodiff()), 2);
    }

    #[test]
    fn large_magnitudes_and_nan_come_through_as_in_burns() {
        let data = vec![1e30f32, -1e30, 0.0, f32::NAN, 3.0, -2.0];
        let device = Device::flex().autodiff();
        check(Tensor::from_data(TensorData::new(data, [3, 2]), &device), 3);
    }

    #[test]
    fn without_autodiff_the_fused_layer_gives_burns_values() {
        let device = Device::flex();
        let layer = LinearConfig::new(5, 3).init(&device);
        let x = Tensor::<2>::random([4, 5], Distribution::Normal(0.0, 1.0), &device);
        close(
            values(linear_2d(&layer, x.clone(), true)),
            values(layer.forward(x)),
            "y",
        );
    }
}
