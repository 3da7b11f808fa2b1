//! Linear layers and layer norms for GPU backends (wgpu), written so that the parameter
//! gradients are computed per sample and then summed, instead of as one reduction over every
//! token of the batch.
//!
//! Burn's `Linear` backward computes dL/dW as one `[d_in, B N] x [B N, d_out]` product and dL/db
//! as one column sum over the B N rows; its layer norm's dL/dgamma and dL/dbeta are likewise one
//! sum over B N rows. On a GPU such a product or sum has only d_in x d_out (or d) outputs, each
//! a loop over B N = 23 040 tokens at batch 512, and CubeCL runs it on a few workgroups: on an
//! H200 each of those products took 7 ms and each sum 1.2 ms, about 90% of a training step,
//! growing with the batch (training ran at 1 480 samples/s at batch 512 and 1 310 at batch 2048;
//! inference at 47 000 and 102 000).
//!
//! Here the weight enters as a `[1, d_in, d_out]` operand of a batched product over the B
//! samples, so its gradient is B products of `[d_in, N] x [N, d_out]` side by side and a sum
//! over B; a bias, gamma or beta enters expanded to `[B, 1, d]`, so its gradient is a sum over
//! the N tokens of each sample (B d outputs) and then over B. The values are those of Burn's
//! layers up to float rounding (tests below, on flex); only the order of the sums differs.
//!
//! Dimension key: `B` samples, `N` tokens per sample, `I` input features, `O` output features,
//! `d` features.

use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;

/// The epsilon of every layer norm in the model: Burn's default (`LayerNormConfig`,
/// `TransformerEncoderConfig::layer_norm_eps`), which the model does not change. Burn keeps a
/// layer's epsilon private; the tests check that this form gives its layers' values.
pub(crate) const LAYER_NORM_EPSILON: f64 = 1e-5;

/// y = x W + b with W and b's gradients computed per sample (see the module doc).
///
/// # Shapes
/// - x: `[B, N, I]`
/// - output: `[B, N, O]`
pub(crate) fn linear(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [b, _, _] = x.dims();
    // The bias row is shaped before the product so that, under Burn's fusion, the product is
    // followed directly by the addition and takes it as its epilogue: a reshape or expand
    // recorded between them ends the fused block (a view op's output must have the block's
    // shape), and the addition then runs as a kernel of its own.
    let bias = linear
        .bias
        .as_ref()
        .map(|bias| per_sample_row(bias.val(), b)); // [B, 1, O]
    let y = x.matmul(linear.weight.val().unsqueeze::<3>()); // [B, N, O]
    match bias {
        Some(bias) => y + bias, // [B, N, O]
        None => y,
    }
}

/// y^T = W^T x^T + b, feature-major: [`linear`]'s values with the output's axes swapped, W and b's
/// gradients per sample as there. An attention splits a feature-major projection into its heads
/// as a view a product reads without a copy (`[B, H, d_h, N]`, contiguous, or its transpose),
/// where the token-major `[B, N, d]` split is a strided view that Burn's products copy first.
///
/// # Shapes
/// - x: `[B, N, I]`
/// - output: `[B, O, N]`
pub(crate) fn linear_columns(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [b, _, _] = x.dims();
    let x_t = x.swap_dims(1, 2); // [B, I, N]
    let weight = linear.weight.val().transpose().unsqueeze::<3>(); // [1, O, I]
    // The bias column is shaped before the product, for the reason given in `linear`.
    let bias = linear.bias.as_ref().map(|bias| {
        let [o] = bias.dims();
        bias.val().reshape([1, o, 1]).expand([b, o, 1]) // [B, O, 1]
    });
    let y = weight.matmul(x_t); // [B, O, N]
    match bias {
        Some(bias) => y + bias, // [B, O, N]
        None => y,
    }
}

/// Layer norm over the last axis, (x - mean) / sqrt(var + eps) gamma + beta, as Burn's default
/// `layer_norm` computes it, with gamma's and beta's gradients computed per sample.
///
/// # Shapes
/// - x, output: `[B, N, d]`
pub(crate) fn layer_norm(norm: &LayerNorm, x: Tensor<3>) -> Tensor<3> {
    let [b, _, _] = x.dims();
    // gamma's and beta's rows are shaped first, so that no view op falls inside the fused
    // chain of reductions and element-wise ops below (see `linear`).
    let gamma = per_sample_row(norm.gamma.val(), b); // [B, 1, d]
    let beta = norm.beta.as_ref().map(|beta| per_sample_row(beta.val(), b)); // [B, 1, d]
    let mean = x.clone().mean_dim(2); // [B, N, 1]
    let centered = x - mean; // [B, N, d]
    let variance = (centered.clone() * centered.clone()).mean_dim(2); // [B, N, 1]
    let normalized = centered / (variance + LAYER_NORM_EPSILON).sqrt(); // [B, N, d]
    let scaled = normalized * gamma; // [B, N, d]
    match beta {
        Some(beta) => scaled + beta,
        None => scaled,
    }
}

/// A parameter row repeated once per sample, so that its gradient sums each sample's tokens
/// first (B d outputs) and the samples after (d outputs).
///
/// # Shapes
/// - row: `[d]`
/// - output: `[B, 1, d]`
fn per_sample_row(row: Tensor<1>, samples: usize) -> Tensor<3> {
    let [d] = row.dims();
    row.reshape([1, 1, d]).expand([samples, 1, d]) // [B, 1, d]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{close, close_within, values};
    use burn::module::Param;
    use burn::nn::transformer::TransformerEncoderConfig;
    use burn::nn::{LayerNormConfig, LinearConfig};
    use burn::tensor::{Device, Distribution};

    fn device() -> Device {
        Device::flex().autodiff()
    }

    fn random(shape: [usize; 3], std: f64) -> Tensor<3> {
        Tensor::random(shape, Distribution::Normal(0.0, std), &device())
    }

    fn random_row(d: usize) -> Param<Tensor<1>> {
        Param::from_tensor(Tensor::random(
            [d],
            Distribution::Normal(0.5, 1.0),
            &device(),
        ))
    }

    /// y and the gradients of x, of `matrix` (when given) and of every one of `rows` under the
    /// loss sum(y * weights).
    fn run(
        forward: impl Fn(Tensor<3>) -> Tensor<3>,
        x: &Tensor<3>,
        matrix: Option<&Tensor<2>>,
        rows: &[Tensor<1>],
        weights: &Tensor<3>,
    ) -> Vec<Vec<f32>> {
        let x = x.clone().require_grad();
        let y = forward(x.clone());
        let grads = (y.clone() * weights.clone()).sum().backward();
        let mut out = vec![values(y), values(x.grad(&grads).expect("dx"))];
        out.extend(matrix.map(|w| values(w.grad(&grads).expect("dW"))));
        out.extend(
            rows.iter()
                .map(|p| values(p.grad(&grads).expect("row grad"))),
        );
        out
    }

    /// `ours` and `burns` (one layer written two ways) give the same [`run`] results, named by
    /// `names` in its order. Parameter gradients sum over all B N tokens, and two orders of
    /// summation differ by a few eps of the terms' magnitudes: 1e-6 of slack per token.
    fn assert_same(
        names: &[&str],
        ours: impl Fn(Tensor<3>) -> Tensor<3>,
        burns: impl Fn(Tensor<3>) -> Tensor<3>,
        x: &Tensor<3>,
        matrix: Option<&Tensor<2>>,
        rows: &[Tensor<1>],
    ) {
        let [b, n, _] = x.dims();
        let weights = random(burns(x.clone()).dims(), 1.0);
        let ours = run(ours, x, matrix, rows, &weights);
        let burns = run(burns, x, matrix, rows, &weights);
        assert_eq!(ours.len(), names.len(), "one name per result");
        for ((what, a), theirs) in names.iter().zip(ours).zip(burns) {
            let slack = vec![1e-6 * (b * n) as f32; theirs.len()];
            close_within(a, theirs, &slack, what);
        }
    }

    #[test]
    fn the_per_sample_linear_gives_burns_values_and_gradients() {
        // The model's shapes (tokens x d -> d, 4d, 1; the audio tokenizer), one sample, one token.
        for (b, n, i, o) in [
            (8, 45, 64, 64),
            (3, 28, 448, 64),
            (5, 7, 64, 1),
            (1, 1, 5, 3),
        ] {
            let layer = LinearConfig::new(i, o).init(&device());
            let layer = Linear {
                bias: Some(random_row(o)),
                ..layer
            };
            let bias = layer.bias.as_ref().expect("bias").val();
            assert_same(
                &["y", "dx", "dW", "db"],
                |x| linear(&layer, x),
                |x| layer.forward(x),
                &random([b, n, i], 1.0),
                Some(&layer.weight.val()),
                &[bias],
            );
        }
    }

    #[test]
    fn the_feature_major_linear_is_the_linear_with_its_output_transposed() {
        // The attention's projections (keys: one token more than the queries), one token.
        for (b, n, i, o) in [(8, 45, 64, 64), (2, 3, 6, 4), (1, 1, 5, 3)] {
            let layer = LinearConfig::new(i, o).init(&device());
            let layer = Linear {
                bias: Some(random_row(o)),
                ..layer
            };
            let bias = layer.bias.as_ref().expect("bias").val();
            let x = random([b, n, i], 1.0);
            assert_eq!(linear_columns(&layer, x.clone()).dims(), [b, o, n]);
            assert_same(
                &["y", "dx", "dW", "db"],
                |x| linear_columns(&layer, x).swap_dims(1, 2),
                |x| layer.forward(x),
                &x,
                Some(&layer.weight.val()),
                &[bias],
            );
        }
    }

    #[test]
    fn the_per_sample_linear_without_bias_is_x_w() {
        let layer = LinearConfig::new(4, 3).with_bias(false).init(&device());
        let x = random([2, 5, 4], 1.0);
        close(
            values(linear(&layer, x.clone())),
            values(x.matmul(layer.weight.val().unsqueeze::<3>())),
            "y",
        );
    }

    #[test]
    fn the_per_sample_layer_norm_gives_burns_values_and_gradients() {
        // Tokens of small variance (std 1e-3: var 1e-6, close to eps), so a wrong epsilon shows.
        for (shape, std) in [([6, 45, 64], 1.0), ([2, 3, 8], 1e-3), ([1, 1, 4], 2.0)] {
            let [_, _, d] = shape;
            let mut norm = LayerNormConfig::new(d).init(&device());
            norm.gamma = random_row(d);
            norm.beta = Some(random_row(d));
            let beta = norm.beta.as_ref().expect("beta").val();
            assert_same(
                &["y", "dx", "dgamma", "dbeta"],
                |x| layer_norm(&norm, x),
                |x| norm.forward(x),
                &random(shape, std),
                None,
                &[norm.gamma.val(), beta],
            );
        }
    }

    #[test]
    fn the_models_layer_norms_use_the_epsilon_assumed_here() {
        assert_eq!(LayerNormConfig::new(8).epsilon, LAYER_NORM_EPSILON);
        assert_eq!(
            TransformerEncoderConfig::new(8, 32, 2, 1).layer_norm_eps,
            LAYER_NORM_EPSILON
        );
    }
}
