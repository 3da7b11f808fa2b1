//! # mgr-kernels: how the MGR model's operations run fast
//!
//! The model crate (`mgr`) writes each equation of the paper once, with Burn's ops; this crate
//! holds the faster forms it calls through a small facade, chosen by one [`Execution`] policy:
//! [`linear_rows`] (every linear layer), [`layer_norm`], [`gelu`], [`softmax`],
//! [`attention_weights`] / [`attention_context`], and [`optimizer::FusedAdamW`]. Each gives
//! Burn's result to float rounding (the tests beside each kernel compare the two), and under
//! [`Execution::BurnOps`] each is Burn's own op. It imports nothing from the model crate.
//!
//! Fused CPU kernels for Burn's flex backend (issue 12).
//!
//! Flex computes GELU one element at a time through scalar `libm::erff`, on one thread (34x
//! slower than PyTorch at the model's shapes; a training step runs GELU forward and backward on
//! about 2.4 M elements), and under autodiff Burn builds softmax from about five tracked ops.
//! Here GELU's and softmax's forward and backward are one pass each over contiguous f32 data
//! (softmax: per row of the last axis), with branch-free approximations of erf (the rational one
//! of Eigen and XLA) and exp (Cephes') that the compiler vectorises (AVX2 where the CPU has it),
//! split over the cores for large tensors. Two submodules do the same for the products:
//! [`linear_2d`] (every linear layer, as one product over all tokens, into a buffer that is
//! not zeroed and copied first) and [`attention_weights`] / [`attention_context`] (attention on
//! Q, K, V in their `[B, tokens, d]` layout, without the head reshapes and 4 B small products).
//!
//! They reach Burn through its backend extension (`#[backend_extension(Flex, Autodiff)]`):
//! implemented for `Flex`, and for `Autodiff<Flex>` with a hand-written backward. Other backends
//! (wgpu) use Burn's own ops except for the linear layers and layer norms, which `per_sample`
//! writes so that a GPU sums their parameter gradients per sample; other dtypes use Burn's own
//! ops, as does everything under [`Execution::BurnOps`] (the reference the tests and `mgr bench`
//! compare the kernels with).
//!
//! Dimension key: none (element-wise; any shape).

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::{Device, Tensor};

/// How the model's operations run: a choice of speed, never of result (the two agree to float
/// rounding, tested per kernel and for a whole training run). One value held by the model
/// (`mgr::Model::set_execution`), set from the training config (`train.execution`) or by the
/// page; not part of what a saved model is.
#[derive(
    serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum Execution {
    /// The project's kernels: on flex the fused CPU kernels of this module (GELU, softmax, layer
    /// norm, linear layers, attention, the top-rho split on the host); on GPU backends the linear
    /// layers and layer norms with their parameter gradients summed per sample ([`per_sample`]),
    /// Burn's ops otherwise.
    #[default]
    Kernels,
    /// Burn's own ops everywhere: the reference the kernels are tested and benchmarked against.
    BurnOps,
}

impl Execution {
    /// Whether the project's kernels run (else Burn's own ops).
    pub fn kernels(self) -> bool {
        self == Execution::Kernels
    }
}

/// GELU (erf form), fused where it applies (see the module doc), Burn's otherwise.
///
/// # Shapes
/// - x, output: any, the same
pub fn gelu<const D: usize>(x: Tensor<D>, exec: Execution) -> Tensor<D> {
    if exec.kernels() && on_flex(&x.device()) {
        Tensor::from_dispatch(<Dispatch as FusedOps>::fused_gelu(x.into_dispatch()))
    } else {
        burn::tensor::activation::gelu(x)
    }
}

/// Softmax over the last axis, fused where it applies (see the module doc), Burn's otherwise.
///
/// # Shapes
/// - x, output: any, the same; each row of the last axis sums to 1
pub fn softmax<const D: usize>(x: Tensor<D>, exec: Execution) -> Tensor<D> {
    if exec.kernels() && on_flex(&x.device()) {
        Tensor::from_dispatch(<Dispatch as FusedOps>::fused_softmax(x.into_dispatch()))
    } else {
        burn::tensor::activation::softmax(x, D - 1)
    }
}

/// The mean over the tokens of each sample. Under [`Execution::Kernels`] on a GPU backend, a
/// product with a row of 1/N: Burn's fusion cannot fuse a reduction over a middle axis, and
/// recorded after a layer norm it cut the norm's fused block, whose last element-wise steps
/// then ran as kernels of their own (lavapipe, batch 64: 6 kernels per refinement layer for the
/// norm and this mean, against 3 with the product). `mean_dim(1)` otherwise (flex: the same
/// bits as before).
///
/// # Shapes
/// - x: `[B, N, d]`
/// - output: `[B, d]`
pub fn mean_over_tokens(x: Tensor<3>, exec: Execution) -> Tensor<2> {
    if !exec.kernels() || on_flex(&x.device()) {
        let [b, _, d] = x.dims();
        return x.mean_dim(1).reshape([b, d]);
    }
    mean_over_tokens_by_product(x)
}

/// [`mean_over_tokens`]'s GPU form: `[1/N, ..., 1/N] x` per sample.
fn mean_over_tokens_by_product(x: Tensor<3>) -> Tensor<2> {
    let [b, n, d] = x.dims();
    let averaging = Tensor::<3>::from_data(
        burn::tensor::TensorData::new(vec![1.0 / n as f32; n], [1, 1, n]),
        &x.device(),
    ); // [1, 1, N]
    averaging.matmul(x).reshape([b, d]) // [B, d]
}

/// A `Linear` applied to every token. Under [`Execution::Kernels`]: on flex, one `[B N, d_in] x [d_in,
/// d_out]` product (flex runs Burn's 3-D form as B separate small products, each packing the
/// weight again and none split over the cores); on other backends (wgpu), a product batched over
/// the samples, so that dL/dW is B small products summed instead of one product over every token
/// ([`per_sample`]). Burn's `Linear::forward` otherwise. The same values up to float rounding on
/// every backend.
///
/// # Shapes
/// - x: `[B, N, d_in]`
/// - output: `[B, N, d_out]`
pub fn linear_rows(linear: &burn::nn::Linear, x: Tensor<3>, exec: Execution) -> Tensor<3> {
    if !exec.kernels() {
        return linear.forward(x);
    }
    if !on_flex(&x.device()) {
        return per_sample::linear(linear, x);
    }
    let [b, n, d_in] = x.dims();
    let out = linear_2d(linear, x.reshape([b * n, d_in]), exec); // [B N, d_out]
    let d_out = out.dims()[1];
    out.reshape([b, n, d_out]) // [B, N, d_out]
}

/// A `Linear` applied to every token, its output feature-major: [`linear_rows`] with the output's
/// axes swapped. On a GPU backend under [`Execution::Kernels`] it is computed in that layout
/// (the weight's transpose times the tokens' transpose, both views, the parameter gradients per
/// sample), so that an attention splits it into heads without a copy
/// ([`HeadLayout::FeatureMajor`]); elsewhere it is [`linear_rows`]'s output viewed so.
///
/// # Shapes
/// - x: `[B, N, d_in]`
/// - output: `[B, d_out, N]`
pub fn linear_columns(linear: &burn::nn::Linear, x: Tensor<3>, exec: Execution) -> Tensor<3> {
    if exec.kernels() && !on_flex(&x.device()) {
        return per_sample::linear_columns(linear, x);
    }
    linear_rows(linear, x, exec).swap_dims(1, 2) // [B, d_out, N]
}

/// A `Linear` applied to one vector per sample (Eq. 5's f_Mix, the task head). Under
/// [`Execution::Kernels`] on a GPU backend, the bias row is shaped before the product: Burn's
/// `Linear::forward` shapes it between the product and the addition, and under Burn's fusion
/// that view op ends the product's block, so the addition ran as a kernel of its own instead
/// of the product's epilogue. Burn's `Linear::forward` otherwise (flex included: its values
/// there stay exactly Burn's).
///
/// # Shapes
/// - x: `[B, I]`
/// - output: `[B, O]`
pub fn linear_vectors(linear: &burn::nn::Linear, x: Tensor<2>, exec: Execution) -> Tensor<2> {
    if !exec.kernels() || on_flex(&x.device()) {
        return linear.forward(x);
    }
    bias_first_linear(linear, x)
}

/// y = x W + b with b shaped before the product ([`linear_vectors`]).
///
/// # Shapes
/// - x: `[B, I]`
/// - output: `[B, O]`
fn bias_first_linear(linear: &burn::nn::Linear, x: Tensor<2>) -> Tensor<2> {
    let bias = linear.bias.as_ref().map(|bias| bias.val().unsqueeze::<2>()); // [1, O]
    let y = x.matmul(linear.weight.val()); // [B, O]
    match bias {
        Some(bias) => y + bias, // [B, O]
        None => y,
    }
}

/// Burn's `LayerNorm` under [`Execution::BurnOps`]; under [`Execution::Kernels`], on flex the fused kernels of
/// [`layer_norm_rows`] (one kernel forward, two backward and Burn's column sum for beta,
/// instead of Burn's nine tracked primitives), on other backends (wgpu) the same normalisation with gamma's and beta's
/// gradients summed per sample first ([`per_sample`]: on a GPU, Burn's single sum over every
/// token of the batch runs on a few workgroups).
///
/// # Shapes
/// - x, output: `[B, N, d]`
pub fn layer_norm(norm: &burn::nn::LayerNorm, x: Tensor<3>, exec: Execution) -> Tensor<3> {
    if !exec.kernels() {
        return norm.forward(x);
    }
    if !on_flex(&x.device()) {
        return per_sample::layer_norm(norm, x);
    }
    let [b, n, d] = x.dims();
    layer_norm_rows(norm, x.reshape([b * n, d])).reshape([b, n, d]) // [B, N, d]
}

/// A `LayerNorm` on one vector per sample (the task head): Burn's `LayerNorm::forward` under
/// [`Execution::BurnOps`] and on flex; on GPU backends the form of [`layer_norm`] (gamma and
/// beta shaped before the chain, their gradients summed per sample), whose reductions and
/// element-wise steps Burn's fusion joins: Burn's own reshapes gamma and beta between its steps,
/// and each of those view ops ends a fused block.
///
/// # Shapes
/// - x, output: `[B, d]`
pub fn layer_norm_vectors(norm: &burn::nn::LayerNorm, x: Tensor<2>, exec: Execution) -> Tensor<2> {
    if !exec.kernels() || on_flex(&x.device()) {
        return norm.forward(x);
    }
    per_sample_vector_norm(norm, x)
}

/// [`per_sample::layer_norm`] on one vector per sample ([`layer_norm_vectors`]' GPU form).
///
/// # Shapes
/// - x, output: `[B, d]`
fn per_sample_vector_norm(norm: &burn::nn::LayerNorm, x: Tensor<2>) -> Tensor<2> {
    let [b, d] = x.dims();
    per_sample::layer_norm(norm, x.reshape([b, 1, d])).reshape([b, d]) // [B, d]
}

/// Whether `device` computes on flex (directly or under autodiff).
pub fn on_flex(device: &Device) -> bool {
    matches!(
        device.clone().inner().as_dispatch(),
        DispatchDevice::Flex(_)
    )
}

/// Whether this CPU runs AVX2 and FMA: the instructions of [`widest!`]'s wide bodies and of the
/// native register tiles (`tile.rs`).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `fn $name(args)` running `$body` compiled for AVX2 and FMA (8 lanes) where the CPU has them,
/// for the build's baseline (SSE2 on x86_64: 4 lanes; wasm32: scalar) otherwise.
macro_rules! widest {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),*) => $body:ident) => {
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn wide($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if $crate::avx2_fma() {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { wide($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

// After `widest!`, which they use.
mod attention;
mod backend;
pub mod dcor;
mod elementwise;
mod layer_norm;
mod linear;
pub mod optimizer;
mod per_sample;
pub mod split;
// Native only: the browser's products are `linear::blocked_product`'s SIMD128 blocks.
#[cfg(not(target_arch = "wasm32"))]
mod tile;
mod view;

pub use attention::{
    FusedAttentionOps, HeadLayout, attend, attention_context, attention_context_feature_major,
    attention_weights, attention_weights_feature_major, self_attention_context,
};
pub use backend::FusedOps;
// What the kernel modules share, reached as `super::NAME` from each of them.
#[cfg(not(target_arch = "wasm32"))]
use backend::{CHUNK, rows_per_task};
use backend::{contiguous, owned_f32, run_zip};
use elementwise::{LANES, row_dot, row_sum, softmax_rows_body, softmax_rows_f32};
pub use elementwise::{erf, exp_nonpositive};
pub use layer_norm::{FusedLayerNormOps, layer_norm_rows};
pub use linear::{FusedLinearOps, linear_2d};

/// Helpers of the kernels' tests (here and in the submodules).
#[cfg(test)]
mod test_util {
    use burn::tensor::Tensor;

    /// `len` numbers in [-1.3, 1.3) that repeat with period 19, a different phase per `seed`:
    /// inputs for comparing two kernels on the same data without a random generator.
    pub fn numbers(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 37 + seed * 11) % 19) as f32 / 7.0 - 1.3)
            .collect()
    }

    /// A tensor's values.
    pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32")
    }

    /// Equal to f32 rounding: sums of up to a few hundred products in another order differ by a
    /// few 1e-5 on values near 1; a wrong index or term is off by O(1). NaN matches NaN.
    pub fn close(a: Vec<f32>, b: Vec<f32>, what: &str) {
        close_within(a, b, &[], what)
    }

    /// [`close`], each element i allowed `slack[i]` more (none past the end of `slack`): for
    /// results whose rounding grows with something other than their own size.
    pub fn close_within(a: Vec<f32>, b: Vec<f32>, slack: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            let slack_i = slack.get(i).copied().unwrap_or(0.0);
            assert!(
                (p - q).abs() <= 1e-4 * (1.0 + q.abs()) + slack_i || (p.is_nan() && q.is_nan()),
                "{what}[{i}]: {p} vs {q} (slack {slack_i})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::values;
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn the_mean_over_tokens_by_product_is_the_mean() {
        let device = Device::flex();
        // Sample b, token t, feature f holds b * 100 + t * 10 + f: each mean is b*100 + 10 + f.
        let values: Vec<f32> = (0..2 * 3 * 4)
            .map(|i| ((i / 12) * 100 + ((i / 4) % 3) * 10 + i % 4) as f32)
            .collect();
        let x = Tensor::<3>::from_data(TensorData::new(values, [2, 3, 4]), &device);
        let got = mean_over_tokens_by_product(x.clone());
        assert_eq!(got.dims(), [2, 4]);
        let want: Vec<f32> = (0..8)
            .map(|i| ((i / 4) * 100 + 10 + i % 4) as f32)
            .collect();
        for (g, w) in got.into_data().iter::<f32>().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{g} against {w}");
        }
        let reference = mean_over_tokens(x, Execution::Kernels).into_data();
        assert_eq!(reference.iter::<f32>().collect::<Vec<_>>(), want);
    }

    #[test]
    fn erf_and_exp_match_libm_to_f32_accuracy() {
        let mut worst_erf = 0.0f64;
        let mut worst_exp = 0.0f64;
        for i in -100_000i32..=100_000 {
            let x = i as f32 * 1e-4 * 6.0; // [-6, 6]
            worst_erf = worst_erf.max((erf(x) as f64 - libm::erf(x as f64)).abs());
            let e = -(i.abs() as f32) * 1e-3; // [-100, 0]
            let want = (e as f64).exp();
            worst_exp = worst_exp.max((exp_nonpositive(e) as f64 - want).abs() / want.max(1e-30));
        }
        assert!(worst_erf < 5e-7, "erf: worst absolute error {worst_erf:e}");
        // Relative, where f32 has a normal result; 0 below.
        assert!(
            worst_exp < 1e-6 || worst_exp.is_nan(),
            "exp: worst relative error {worst_exp:e}"
        );
        assert!(erf(f32::NAN).is_nan() && exp_nonpositive(f32::NAN).is_nan());
        assert_eq!((erf(f32::INFINITY), erf(f32::NEG_INFINITY)), (1.0, -1.0));
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    /// The GPU forms of the per-sample-vector layers ([`linear_vectors`],
    /// [`layer_norm_vectors`]) give Burn's layers' outputs and gradients (run here on flex,
    /// where the model itself keeps Burn's; `tests/tests/wgpu.rs` runs them on wgpu).
    #[test]
    fn the_vector_layers_gpu_forms_equal_burns_layers() {
        use burn::nn::{LayerNormConfig, LinearConfig};
        let device = Device::flex().autodiff();
        let x = Tensor::<2>::random([5, 6], Distribution::Normal(0.3, 1.5), &device);
        let weights = Tensor::<2>::random([5, 4], Distribution::Normal(0.0, 1.0), &device);
        let linear = LinearConfig::new(6, 4).init(&device);
        let run = |ours: bool| {
            let x = x.clone().require_grad();
            let y = match ours {
                true => bias_first_linear(&linear, x.clone()),
                false => linear.forward(x.clone()),
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let bias = linear.bias.as_ref().expect("a bias");
            [
                values(y),
                values(x.grad(&grads).expect("dx")),
                values(linear.weight.grad(&grads).expect("dW")),
                values(bias.grad(&grads).expect("db")),
            ]
        };
        for (what, (a, b)) in ["y", "dx", "dW", "db"]
            .iter()
            .zip(run(true).into_iter().zip(run(false)))
        {
            test_util::close(a, b, &format!("linear {what}"));
        }

        let norm = LayerNormConfig::new(6).init(&device);
        let norm_weights = Tensor::<2>::random([5, 6], Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let x = x.clone().require_grad();
            let y = match ours {
                true => per_sample_vector_norm(&norm, x.clone()),
                false => norm.forward(x.clone()),
            };
            let grads = (y.clone() * norm_weights.clone()).sum().backward();
            [
                values(y),
                values(x.grad(&grads).expect("dx")),
                values(norm.gamma.grad(&grads).expect("dgamma")),
            ]
        };
        for (what, (a, b)) in ["y", "dx", "dgamma"]
            .iter()
            .zip(run(true).into_iter().zip(run(false)))
        {
            test_util::close(a, b, &format!("layer norm {what}"));
        }
    }

    #[test]
    fn fused_gelu_and_its_gradient_match_burns_on_random_and_edge_values() {
        let device = Device::flex().autodiff();
        let mut data: Vec<f32> =
            Tensor::<2>::random([300, 257], Distribution::Normal(0.0, 3.0), &Device::flex())
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32");
        // Edge cases: zero, tiny, large magnitudes, infinities.
        data[..8].copy_from_slice(&[0.0, -0.0, 1e-30, -1e-30, 60.0, -60.0, 1e30, -1e30]);
        let input = || {
            Tensor::<2>::from_data(TensorData::new(data.clone(), [300, 257]), &device)
                .require_grad()
        };
        let (x_fused, x_burn) = (input(), input());
        let y_fused = gelu(x_fused.clone(), Execution::Kernels);
        let y_burn = gelu(x_burn.clone(), Execution::BurnOps);
        let weights = Tensor::<2>::random([300, 257], Distribution::Normal(0.0, 1.0), &device);
        let g_fused = (y_fused.clone() * weights.clone()).sum().backward();
        let g_burn = (y_burn.clone() * weights).sum().backward();
        let close = |a: &[f32], b: &[f32], what: &str| {
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                // erf's absolute error (5e-7) times |x| / 2 where GELU is near 0, f32 rounding
                // elsewhere.
                let tolerance = 2e-6 + 1e-6 * q.abs();
                assert!(
                    (p - q).abs() <= tolerance,
                    "{what}[{i}] (x = {}): {p} vs {q}",
                    data[i]
                );
            }
        };
        close(&values(y_fused), &values(y_burn), "gelu");
        close(
            &values(x_fused.grad(&g_fused).expect("grad")),
            &values(x_burn.grad(&g_burn).expect("grad")),
            "gradient",
        );
    }

    #[test]
    fn nan_propagates_and_views_and_empty_tensors_take_burns_path() {
        let device = Device::flex();
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![f32::NAN, 1.0, -2.0, 0.5], [2, 2]),
            &device,
        );
        let y = values(gelu(x.clone(), Execution::Kernels));
        assert!(y[0].is_nan());
        // A transposed view is not contiguous: Burn's GELU, same values.
        let t = x.clone().slice([0..2, 1..2]);
        assert_eq!(
            values(gelu(t.clone(), Execution::Kernels)),
            values(gelu(t, Execution::BurnOps))
        );
        let empty = Tensor::<2>::zeros([0, 3], &device);
        assert_eq!(gelu(empty, Execution::Kernels).dims(), [0, 3]);
    }

    /// Fused softmax and its gradient against Burn's, for a `[rows, row]` input.
    fn check_softmax(data: Vec<f32>, rows: usize, row: usize) {
        let device = Device::flex().autodiff();
        let input = || {
            Tensor::<2>::from_data(TensorData::new(data.clone(), [rows, row]), &device)
                .require_grad()
        };
        let (x_fused, x_burn) = (input(), input());
        let (y_fused, y_burn) = (
            softmax(x_fused.clone(), Execution::Kernels),
            softmax(x_burn.clone(), Execution::BurnOps),
        );
        let weights = Tensor::<2>::random([rows, row], Distribution::Normal(0.0, 1.0), &device);
        let g_fused = (y_fused.clone() * weights.clone()).sum().backward();
        let g_burn = (y_burn.clone() * weights.clone()).sum().backward();
        let close = |a: Vec<f32>, b: Vec<f32>, slack: &[f32], what: &str| {
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (p - q).abs() <= 2e-6 + 1e-5 * q.abs() + slack[i],
                    "{what}[{i}]: {p} vs {q}"
                );
            }
        };
        let (y, g) = (values(y_burn), values(weights));
        close(values(y_fused), y.clone(), &vec![0.0; y.len()], "softmax");
        // The gradient y_i (g_i - sum_j g_j y_j) cancels: its rounding error scales with
        // y_i (|g_i| + sum_j |g_j y_j|), not with the result (an unseeded 1e-5 |q| alone failed
        // about one run in five, e.g. -0.0623375 vs -0.0623406).
        let slack: Vec<f32> = y
            .chunks_exact(row)
            .zip(g.chunks_exact(row))
            .flat_map(|(y_r, g_r)| {
                let magnitude: f32 = y_r.iter().zip(g_r).map(|(a, b)| (a * b).abs()).sum();
                y_r.iter()
                    .zip(g_r)
                    .map(move |(y_i, g_i)| 1e-4 * y_i * (g_i.abs() + magnitude))
            })
            .collect();
        close(
            values(x_fused.grad(&g_fused).expect("grad")),
            values(x_burn.grad(&g_burn).expect("grad")),
            &slack,
            "gradient",
        );
    }

    #[test]
    fn fused_softmax_and_its_gradient_match_burns() {
        // The model's row lengths (44 keys, 45 with the prompt), a row shorter than the lanes,
        // one long enough to be split over the cores, large magnitudes.
        for (rows, row, scale) in [
            (512, 45, 3.0),
            (300, 44, 30.0),
            (7, 3, 1.0),
            (3, 40_000, 5.0),
        ] {
            let data: Vec<f32> = Tensor::<2>::random(
                [rows, row],
                Distribution::Normal(0.0, scale),
                &Device::flex(),
            )
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
            check_softmax(data, rows, row);
        }
        check_softmax(vec![1e30, -1e30, 0.0, 5.0, 5.0, 5.0], 2, 3);
        check_softmax(vec![2.0], 1, 1);
    }

    #[test]
    fn softmax_rows_sum_to_one_and_a_view_is_read_in_its_own_order() {
        let device = Device::flex();
        let x = Tensor::<2>::random([6, 45], Distribution::Normal(0.0, 4.0), &device);
        let sums = values(softmax(x.clone(), Execution::Kernels).sum_dim(1));
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
        // A transposed view (not contiguous) is copied first, not read in storage order.
        let t = x.transpose();
        assert_eq!(t.dims(), [45, 6]);
        let (fused, burn) = (
            values(softmax(t.clone(), Execution::Kernels)),
            values(softmax(t, Execution::BurnOps)),
        );
        assert!(fused.iter().zip(&burn).all(|(a, b)| (a - b).abs() < 1e-6));
        let nan =
            Tensor::<2>::from_data(TensorData::new(vec![f32::NAN, 1.0, 2.0], [1, 3]), &device);
        assert!(
            values(softmax(nan, Execution::Kernels))
                .iter()
                .all(|v| v.is_nan())
        );
    }

    #[test]
    fn the_fused_path_is_taken_on_flex_only() {
        // Without it, the comparisons above would compare Burn's GELU with itself.
        assert!(on_flex(&Device::flex()) && on_flex(&Device::flex().autodiff()));
    }

    #[test]
    fn a_shared_input_is_not_overwritten() {
        let device = Device::flex();
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, -1.0, 2.0, 3.0], [2, 2]),
            &device,
        );
        let before = values(x.clone());
        let _ = gelu(x.clone(), Execution::Kernels);
        assert_eq!(values(x), before);
    }
}
