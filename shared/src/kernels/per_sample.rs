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
    let y = x.matmul(linear.weight.val().unsqueeze::<3>()); // [B, N, O]
    match &linear.bias {
        Some(bias) => y + per_sample_row(bias.val(), b), // [B, N, O]
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
    let mean = x.clone().mean_dim(2); // [B, N, 1]
    let centered = x - mean; // [B, N, d]
    let variance = (centered.clone() * centered.clone()).mean_dim(2); // [B, N, 1]
    let normalized = centered / (variance + LAYER_NORM_EPSILON).sqrt(); // [B, N, d]
    let scaled = normalized * per_sample_row(norm.gamma.val(), b); // [B, N, d]
    match &norm.beta {
        Some(beta) => scaled + per_sample_row(beta.val(), b),
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
    use crate::kernels::test_util::{close, close_within, values};
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

    /// y and the gradients of x and of every parameter under the loss sum(y * weights).
    fn run(
        forward: impl Fn(Tensor<3>) -> Tensor<3>,
        x: &Tensor<3>,
        params: &[Tensor<1>],
        matrix: Option<Tensor<2>>,
        weights: &Tensor<3>,
    ) -> Vec<Vec<f32>> {
        let x = x.clone().require_grad();
        let y = forward(x.clone());
        let grads = (y.clone() * weights.clone()).sum().backward();
        let mut out = vec![values(y), values(x.grad(&grads).expect("dx"))];
        out.extend(matrix.map(|w| values(w.grad(&grads).expect("dW"))));
        out.extend(
            params
                .iter()
                .map(|p| values(p.grad(&grads).expect("row grad"))),
        );
        out
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
            let x = random([b, n, i], 1.0);
            let weights = random([b, n, o], 1.0);
            let params = || vec![layer.bias.as_ref().expect("bias").val()];
            let [ours, burns] = [true, false].map(|per_sample| {
                run(
                    |x| {
                        if per_sample {
                            linear(&layer, x)
                        } else {
                            layer.forward(x)
                        }
                    },
                    &x,
                    &params(),
                    Some(layer.weight.val()),
                    &weights,
                )
            });
            let mut ours = ours.into_iter();
            for (what, theirs) in ["y", "dx", "dW", "db"].into_iter().zip(burns) {
                // dW and db sum over every token: two orders of summation differ by a few eps
                // of the terms' magnitudes.
                let slack = vec![1e-6 * (b * n) as f32; theirs.len()];
                close_within(ours.next().expect(what), theirs, &slack, what);
            }
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
            let x = random(shape, std);
            let weights = random(shape, 1.0);
            let params = || vec![norm.gamma.val(), norm.beta.as_ref().expect("beta").val()];
            let [ours, burns] = [true, false].map(|per_sample| {
                run(
                    |x| {
                        if per_sample {
                            layer_norm(&norm, x)
                        } else {
                            norm.forward(x)
                        }
                    },
                    &x,
                    &params(),
                    None,
                    &weights,
                )
            });
            for ((what, a), b) in ["y", "dx", "dgamma", "dbeta"]
                .into_iter()
                .zip(ours)
                .zip(burns)
            {
                let slack = vec![1e-6 * (shape[0] * shape[1]) as f32; b.len()];
                close_within(a, b, &slack, what);
            }
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
