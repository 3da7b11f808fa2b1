//! A fused layer norm for flex (issue 12): y = (x - mean) / sqrt(var + eps) gamma + beta over
//! each row, forward in one kernel and backward in two (the input's gradient; gamma's), with
//! beta's gradient Burn's column sum of dL/dy, instead of the nine tracked primitives (mean, subtraction, square, mean,
//! addition, square root, division, product, sum) Burn's `LayerNorm` becomes under autodiff,
//! each a pass over the tensor and a saved intermediate. Removing the encoders' layer norms
//! altogether (a timing experiment) made a training step about 13% faster.
//!
//! The backward recomputes each row's mean and 1/sqrt(var + eps) from x (two short passes
//! over d numbers) instead of keeping them: the state is x alone, as Burn's graph keeps it.
//!
//! Dimension key: `R` rows (tokens of every sample), `d` features.

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

use super::per_sample::LAYER_NORM_EPSILON;
use super::{LANES, contiguous, owned_f32, row_dot, row_sum};

/// Burn's `norm` on `[R, d]` rows: the fused kernels on flex when the layer has a beta (every
/// layer norm of the model), Burn's `LayerNorm::forward` otherwise.
///
/// # Shapes
/// - x, output: `[R, d]`
pub fn layer_norm_rows(norm: &burn::nn::LayerNorm, x: Tensor<2>) -> Tensor<2> {
    match &norm.beta {
        Some(beta) if super::on_flex(&x.device()) => {
            Tensor::from_dispatch(<Dispatch as FusedLayerNormOps>::fused_layer_norm(
                x.into_dispatch(),
                norm.gamma.val().into_dispatch(),
                beta.val().into_dispatch(),
            ))
        }
        _ => norm.forward(x),
    }
}

/// The layer norm's operations this module adds to Burn's backends (epsilon: Burn's default,
/// [`LAYER_NORM_EPSILON`], the one every layer norm of the model uses).
#[backend_extension(Flex, Autodiff)]
pub trait FusedLayerNormOps: Backend {
    /// y = (x - mean) / sqrt(var + eps) gamma + beta per row; x `[R, d]`, gamma and beta `[d]`.
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// dL/dx from x, gamma and dL/dy, `[R, d]`.
    fn fused_layer_norm_grad_x(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// dL/dgamma = sum over rows of dL/dy x_hat, `[d]`.
    fn fused_layer_norm_grad_gamma(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// dL/dbeta = sum over rows of dL/dy, `[d]`.
    fn fused_layer_norm_grad_beta(grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

widest!(fn forward_f32(x: &[f32], gamma: &[f32], beta: &[f32], out: &mut [f32]) => forward_body);
widest!(fn grad_x_f32(x: &[f32], gamma: &[f32], grad: &[f32], out: &mut [f32]) => grad_x_body);
widest!(fn grad_gamma_f32(x: &[f32], grad: &[f32], gamma: &mut [f32]) => grad_gamma_body);

/// A row's mean and 1 / sqrt(var + eps), var the mean squared distance from the mean (biased,
/// computed from the centred values as Burn does, not as E[x^2] - E[x]^2).
#[inline(always)]
fn moments(row: &[f32]) -> (f32, f32) {
    let d = row.len() as f32;
    let mean = row_sum(row) / d;
    let mut acc = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for i in 0..LANES {
            let centred = c[i] - mean;
            acc[i] += centred * centred;
        }
    }
    let var = (acc.iter().sum::<f32>() + tail) / d;
    (mean, 1.0 / (var + LAYER_NORM_EPSILON as f32).sqrt())
}

#[inline(always)]
fn forward_body(x: &[f32], gamma: &[f32], beta: &[f32], out: &mut [f32]) {
    let d = gamma.len();
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let (mean, rstd) = moments(row);
        for (((o, &v), &g), &b) in o.iter_mut().zip(row).zip(gamma).zip(beta) {
            *o = (v - mean) * rstd * g + b;
        }
    }
}

/// dx = rstd (g - mean(g) - x_hat mean(g x_hat)), g = dy gamma, x_hat = (x - mean) rstd.
#[inline(always)]
fn grad_x_body(x: &[f32], gamma: &[f32], grad: &[f32], out: &mut [f32]) {
    let d = gamma.len();
    let inv_d = 1.0 / d as f32;
    let mut x_hat = vec![0.0f32; d];
    for ((row, dy), o) in x
        .chunks_exact(d)
        .zip(grad.chunks_exact(d))
        .zip(out.chunks_exact_mut(d))
    {
        let (mean, rstd) = moments(row);
        for (h, &v) in x_hat.iter_mut().zip(row) {
            *h = (v - mean) * rstd;
        }
        // o holds g = dy gamma until the last pass.
        for ((o, &dy), &g) in o.iter_mut().zip(dy).zip(gamma) {
            *o = dy * g;
        }
        let mean_g = row_sum(o) * inv_d;
        let mean_gx = row_dot(o, &x_hat) * inv_d;
        for (o, &h) in o.iter_mut().zip(&x_hat) {
            *o = rstd * (*o - mean_g - h * mean_gx);
        }
    }
}

/// Adds each row's dy x_hat to `gamma` (column sums over the rows).
#[inline(always)]
fn grad_gamma_body(x: &[f32], grad: &[f32], gamma: &mut [f32]) {
    let d = gamma.len();
    for (row, dy) in x.chunks_exact(d).zip(grad.chunks_exact(d)) {
        let (mean, rstd) = moments(row);
        for ((g, &v), &dy) in gamma.iter_mut().zip(row).zip(dy) {
            *g += dy * (v - mean) * rstd;
        }
    }
}

/// An `[R, d]` and a `[d]` f32 operand that fit together: (R, d), or None when the fused
/// kernels do not take them.
fn rows_of(x: &FlexTensor, vector: &FlexTensor) -> Option<(usize, usize)> {
    let (xs, vs) = (x.layout().shape(), vector.layout().shape());
    let f32s = x.dtype() == DType::F32 && vector.dtype() == DType::F32;
    (f32s && xs.num_dims() == 2 && vs.num_dims() == 1 && xs[1] == vs[0] && xs[1] > 0)
        .then(|| (xs[0], xs[1]))
}

/// gamma's gradient over the rows, each task's partial sums added in task order.
fn gamma_sums(x: &[f32], grad: &[f32], d: usize) -> Vec<f32> {
    let sums = |x: &[f32], grad: &[f32]| {
        let mut g = vec![0.0f32; d];
        grad_gamma_f32(x, grad, &mut g);
        g
    };
    #[cfg(not(target_arch = "wasm32"))]
    if x.len() > super::CHUNK {
        use rayon::prelude::*;
        let task = super::rows_per_task(d) * d;
        let parts: Vec<Vec<f32>> = x
            .par_chunks(task)
            .zip(grad.par_chunks(task))
            .map(|(x, g)| sums(x, g))
            .collect();
        let mut g = vec![0.0f32; d];
        for part in parts {
            g.iter_mut().zip(part).for_each(|(s, v)| *s += v);
        }
        return g;
    }
    sums(x, grad)
}

/// `f(x rows, y rows, out rows)` over the same whole rows of d of each, split over the cores
/// as [`super::run_zip`] splits its two.
#[cfg_attr(target_arch = "wasm32", allow(unused_variables))]
fn by_rows_zip(
    x: &[f32],
    y: &[f32],
    out: &mut [f32],
    d: usize,
    f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync + Send,
) {
    #[cfg(not(target_arch = "wasm32"))]
    if out.len() > super::CHUNK {
        use rayon::prelude::*;
        let task = super::rows_per_task(d) * d;
        x.par_chunks(task)
            .zip(y.par_chunks(task))
            .zip(out.par_chunks_mut(task))
            .for_each(|((x, y), o)| f(x, y, o));
        return;
    }
    f(x, y, out);
}

impl FusedLayerNormOps for Flex {
    fn fused_layer_norm(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor) -> FlexTensor {
        let Some((rows, d)) = rows_of(&x, &gamma).filter(|_| beta.dtype() == DType::F32) else {
            return Flex::layer_norm(x, gamma, Some(beta), LAYER_NORM_EPSILON);
        };
        let (x, gamma, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
        let (xs, gs, bs) = (
            x.storage::<f32>(),
            gamma.storage::<f32>(),
            beta.storage::<f32>(),
        );
        let (gs, bs) = (&gs[..d], &bs[..d]);
        let mut out = vec![0.0f32; rows * d];
        super::run_zip(&xs[..rows * d], &mut out, d, |x, o| {
            forward_f32(x, gs, bs, o)
        });
        owned_f32(out, Shape::new([rows, d]))
    }

    fn fused_layer_norm_grad_x(x: FlexTensor, gamma: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let same = x.layout().shape() == grad.layout().shape() && grad.dtype() == DType::F32;
        let Some((rows, d)) = rows_of(&x, &gamma).filter(|_| same) else {
            return composite_grad_x::<Flex>(x, gamma, grad);
        };
        let (x, gamma, grad) = (contiguous(x), contiguous(gamma), contiguous(grad));
        let (xs, gs, dy) = (
            x.storage::<f32>(),
            gamma.storage::<f32>(),
            grad.storage::<f32>(),
        );
        let (xs, gs, dy) = (&xs[..rows * d], &gs[..d], &dy[..rows * d]);
        let mut out = vec![0.0f32; rows * d];
        by_rows_zip(xs, dy, &mut out, d, |x, dy, o| grad_x_f32(x, gs, dy, o));
        owned_f32(out, Shape::new([rows, d]))
    }

    fn fused_layer_norm_grad_gamma(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let shape = x.layout().shape().clone();
        let fits = shape.num_dims() == 2
            && grad.layout().shape() == &shape
            && x.dtype() == DType::F32
            && grad.dtype() == DType::F32
            && shape[1] > 0;
        if !fits {
            return composite_grad_gamma::<Flex>(x, grad);
        }
        let (rows, d) = (shape[0], shape[1]);
        let (x, grad) = (contiguous(x), contiguous(grad));
        let g = gamma_sums(
            &x.storage::<f32>()[..rows * d],
            &grad.storage::<f32>()[..rows * d],
            d,
        );
        owned_f32(g, Shape::new([d]))
    }

    fn fused_layer_norm_grad_beta(grad: FlexTensor) -> FlexTensor {
        let d = grad.layout().shape()[1];
        Flex::float_reshape(Flex::float_sum_dim(grad, 0), Shape::new([d]))
    }
}

/// dL/dx by Burn's primitives (operands the kernels do not take, and second derivatives).
fn composite_grad_x<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let (x_hat, rstd) = normalised::<B>(x);
    let d = gamma.shape()[0];
    let g = B::float_mul(grad, B::float_reshape(gamma, Shape::new([1, d])));
    let mean_g = B::float_mean_dim(g.clone(), 1);
    let mean_gx = B::float_mean_dim(B::float_mul(g.clone(), x_hat.clone()), 1);
    let inner = B::float_sub(B::float_sub(g, mean_g), B::float_mul(x_hat, mean_gx));
    B::float_mul(inner, rstd)
}

/// dL/dgamma by Burn's primitives.
fn composite_grad_gamma<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let (x_hat, _) = normalised::<B>(x);
    let d = x_hat.shape()[1];
    B::float_reshape(
        B::float_sum_dim(B::float_mul(grad, x_hat), 0),
        Shape::new([d]),
    )
}

/// x_hat = (x - mean) rstd `[R, d]` and rstd `[R, 1]`, by Burn's primitives.
fn normalised<B: Backend>(x: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let mean = B::float_mean_dim(x.clone(), 1);
    let centred = B::float_sub(x, mean);
    let var = B::float_mean_dim(B::float_mul(centred.clone(), centred.clone()), 1);
    let std = B::float_sqrt(B::float_add_scalar(var, (LAYER_NORM_EPSILON as f32).into()));
    let rstd = B::float_recip(std);
    (B::float_mul(centred, rstd.clone()), rstd)
}

impl<B: Backend + FusedLayerNormOps, C: CheckpointStrategy> FusedLayerNormOps for Autodiff<B, C> {
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        /// Keeps x (every gradient needs it) and gamma (for x's gradient).
        #[derive(Debug)]
        struct FusedLayerNorm;

        impl<B: Backend + FusedLayerNormOps> Backward<B, 3> for FusedLayerNorm {
            type State = (NodeId, Option<NodeId>);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x_id, gamma_id) = ops.state;
                let x: B::FloatTensorPrimitive = checkpointer.retrieve_node_output(x_id);
                if let (Some(node), Some(id)) = (node_x, gamma_id) {
                    let gamma = checkpointer.retrieve_node_output(id);
                    let dx = B::fused_layer_norm_grad_x(x.clone(), gamma, grad.clone());
                    grads.register::<B>(node.id, dx);
                }
                if let Some(node) = node_gamma {
                    let dgamma = B::fused_layer_norm_grad_gamma(x, grad.clone());
                    grads.register::<B>(node.id, dgamma);
                }
                if let Some(node) = node_beta {
                    grads.register::<B>(node.id, B::fused_layer_norm_grad_beta(grad));
                }
            }
        }

        let x_tracked = x.is_tracked();
        match FusedLayerNorm
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = x_tracked.then(|| prep.checkpoint(&gamma));
                prep.finish(
                    (x_state, gamma_state),
                    B::fused_layer_norm(
                        x.into_primitive(),
                        gamma.into_primitive(),
                        beta.into_primitive(),
                    ),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_layer_norm(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
            )),
        }
    }

    // The three below serve only a second derivative, which the model never takes: Burn's
    // primitives, differentiable in turn.
    fn fused_layer_norm_grad_x(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composite_grad_x::<Self>(x, gamma, grad)
    }

    fn fused_layer_norm_grad_gamma(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composite_grad_gamma::<Self>(x, grad)
    }

    fn fused_layer_norm_grad_beta(grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let d = grad.shape()[1];
        Self::float_reshape(Self::float_sum_dim(grad, 0), Shape::new([d]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{close, close_within, values};
    use burn::module::Param;
    use burn::nn::LayerNormConfig;
    use burn::tensor::{Device, Distribution, TensorData};

    /// A layer norm whose gamma and beta are not 1 and 0, so a missing term shows.
    fn layer(d: usize, device: &Device) -> burn::nn::LayerNorm {
        let mut norm = LayerNormConfig::new(d).init(device);
        let random = || Tensor::<1>::random([d], Distribution::Normal(0.5, 1.0), device);
        norm.gamma = Param::from_tensor(random());
        norm.beta = Some(Param::from_tensor(random()));
        norm
    }

    /// y, dL/dx, dL/dgamma and dL/dbeta of the fused layer norm against Burn's `LayerNorm`, for
    /// the input `x` (`[rows, d]` on flex with autodiff; may be a view) and the loss
    /// sum(y * weights).
    fn check(x: Tensor<2>) {
        let [rows, d] = x.dims();
        let device = x.device();
        let norm = layer(d, &device);
        let weights = Tensor::<2>::random([rows, d], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let x = x.clone().require_grad();
            let y = match fused {
                true => layer_norm_rows(&norm, x.clone()),
                false => norm.forward(x.clone()),
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let beta = norm.beta.as_ref().expect("beta").val();
            (
                values(y),
                values(x.grad(&grads).expect("x grad")),
                values(norm.gamma.val().grad(&grads).expect("gamma grad")),
                values(beta.grad(&grads).expect("beta grad")),
            )
        };
        let (fused, burn) = (run(true), run(false));
        let what = |part: &str| format!("{part} of [{rows}, {d}]");
        close(fused.0, burn.0, &what("y"));
        close(fused.1, burn.1, &what("dx"));
        // dgamma and dbeta sum over every row: their rounding grows with the sum of the terms'
        // magnitudes (|x_hat| <= sqrt(d)), not with their own size.
        let magnitudes = values(weights.abs().sum_dim(0));
        let slack: Vec<f32> = magnitudes
            .iter()
            .map(|m| 1e-6 * m * (d as f32).sqrt())
            .collect();
        close_within(fused.2, burn.2, &slack, &what("dgamma"));
        close_within(fused.3, burn.3, &slack, &what("dbeta"));
    }

    fn random(rows: usize, d: usize, mean: f64, std: f64) -> Tensor<2> {
        let device = Device::flex().autodiff();
        Tensor::random([rows, d], Distribution::Normal(mean, std), &device)
    }

    #[test]
    fn fused_layer_norm_and_its_gradients_match_burns() {
        // The model's shape (tokens x d), large enough to be split over the cores; a width
        // that is not a whole number of 8-lane blocks; one row; one feature (x_hat is 0).
        for (rows, d) in [(1408, 64), (44, 64), (3, 12), (5, 5), (1, 7), (4, 1)] {
            check(random(rows, d, 1.0, 2.0));
        }
        // Large and tiny values (a spread small against the mean would make x - mean lose
        // digits in either form), a transposed view read through its strides.
        check(random(6, 16, 1.0, 1e6));
        check(random(6, 16, 0.0, 1e-3));
        check(random(9, 6, 1.0, 1.0).transpose());
    }

    #[test]
    fn a_constant_row_and_nan_come_through_as_in_burns() {
        let device = Device::flex().autodiff();
        // Row 0 is constant (variance 0: x_hat is 0, rstd 1/sqrt(eps)); row 1 holds a NaN.
        let data = vec![
            3.0f32,
            3.0,
            3.0,
            3.0,
            1.0,
            f32::NAN,
            -2.0,
            0.5,
            4.0,
            -1.0,
            2.0,
            7.0,
        ];
        check(Tensor::from_data(TensorData::new(data, [3, 4]), &device));
    }

    #[test]
    fn without_autodiff_the_fused_layer_norm_gives_burns_values() {
        let device = Device::flex();
        let norm = layer(24, &device);
        let x = Tensor::<2>::random([50, 24], Distribution::Normal(0.0, 3.0), &device);
        close(
            values(layer_norm_rows(&norm, x.clone())),
            values(norm.forward(x)),
            "y",
        );
    }
}
