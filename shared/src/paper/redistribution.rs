//! Refinement through graph-based redistribution (Eqs. 11-12).
//!
//! Dimension key: see the crate root (`B`, `N`, `d`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::kernels::{self, Execution};

/// Configuration of the redistribution.
#[derive(Config, Debug)]
pub struct RedistributionConfig {
    /// Hidden size d.
    pub d_model: usize,
}

/// W_c1 and W_c2 of Eq. 12 (a GraphConv layer, Morris et al. 2019).
#[derive(Module, Debug)]
pub struct Redistribution {
    /// W_c1: the token's own transform (with bias, as GraphConv's root weight).
    pub root: Linear,
    /// W_c2: the transform of the messages from biased neighbours (no bias).
    pub neighbour: Linear,
    /// How the operations run (set by [`crate::Model::set_execution`]; not configuration).
    #[module(skip)]
    pub execution: Execution,
}

impl RedistributionConfig {
    /// Builds the redistribution on `device`.
    pub fn init(&self, device: &Device) -> Redistribution {
        Redistribution {
            root: LinearConfig::new(self.d_model, self.d_model).init(device),
            neighbour: LinearConfig::new(self.d_model, self.d_model)
                .with_bias(false)
                .init(device),
            execution: Execution::default(),
        }
    }
}

impl Redistribution {
    /// Eq. 11: A_ji = e_ji if j is biased and i is kept, else 0 (a bipartite sub-matrix of e).
    ///
    /// # Shapes
    /// - e: `[B, N, N]`; kept: `[B, N]` (1.0 kept, 0.0 biased)
    /// - output: `[B, N, N]`, row j = the biased sender, column i = the kept receiver
    pub fn adjacency(e: Tensor<3>, kept: Tensor<2>) -> Tensor<3> {
        let [b, n, _] = e.dims();
        let kept_rows = kept.clone().reshape([b, n, 1]); // [B, N, 1]
        let kept_cols = kept.reshape([b, 1, n]); // [B, 1, N]
        // e k_i (1 - k_j) as e k_i - e k_i k_j (exact: k is 0 or 1): every step then has the
        // output shape [B, N, N], so Burn's fusion runs them as one kernel; 1 - k_j on the
        // [B, N, 1] rows would be a block of its own, and each product after it ran alone.
        let to_kept = e * kept_cols; // [B, N, N]
        to_kept.clone() - to_kept * kept_rows // [B, N, N]
    }

    /// Eq. 12: z_i = GELU(r_i W_c1 + sum_j r_j W_c2 A_ji), for every token i (only the kept
    /// rows are used afterwards; a biased row receives no messages).
    ///
    /// The messages A^T (r W_c2) are computed as ((r W_c2)^T A)^T: the same numbers, but on
    /// Burn 0.22.1's wgpu backend the gradient of `A.swap_dims(1, 2).matmul(x)` with respect to
    /// A is wrong when A comes from attention's `mean_dim` (entries land in transposed places;
    /// flex is right). This form's gradient agrees on both backends (tests/tests/wgpu.rs).
    ///
    /// # Shapes
    /// - r: `[B, N, d]`; adjacency: `[B, N, N]` from [`Redistribution::adjacency`]
    /// - output: `[B, N, d]`
    pub fn forward(&self, r: Tensor<3>, adjacency: Tensor<3>) -> Tensor<3> {
        let messages = kernels::linear_rows(&self.neighbour, r.clone(), self.execution) // [B, N, d]
            .swap_dims(1, 2) // [B, d, N]
            .matmul(adjacency) // [B, d, N]
            .swap_dims(1, 2); // [B, N, d]
        kernels::gelu(
            kernels::linear_rows(&self.root, r, self.execution) + messages,
            self.execution,
        ) // [B, N, d]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    /// Eqs. 11-12 against a plain loop over tokens on a small case.
    #[test]
    fn redistribution_equals_the_loop_computation() {
        let device = Device::flex();
        let (n, d) = (5, 3);
        let layer = RedistributionConfig::new(d).init(&device);
        let r = Tensor::<3>::random([1, n, d], Distribution::Normal(0.0, 1.0), &device);
        let e = Tensor::<3>::random([1, n, n], Distribution::Uniform(0.0, 1.0), &device);
        let kept_v = [1.0f32, 0.0, 1.0, 0.0, 0.0];
        let kept = Tensor::<2>::from_data(TensorData::new(kept_v.to_vec(), [1, n]), &device);
        let a = Redistribution::adjacency(e.clone(), kept);
        let z: Vec<f32> = layer
            .forward(r.clone(), a.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();

        let rv: Vec<f32> = r.into_data().try_to_vec::<f32>().unwrap();
        let ev: Vec<f32> = e.into_data().try_to_vec::<f32>().unwrap();
        let av: Vec<f32> = a.into_data().try_to_vec::<f32>().unwrap();
        let w1: Vec<f32> = layer
            .root
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap(); // [d_in, d_out]
        let b1: Vec<f32> = layer
            .root
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let w2: Vec<f32> = layer
            .neighbour
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let gelu = |x: f32| 0.5 * x * (1.0 + erf((x / std::f32::consts::SQRT_2) as f64) as f32);
        for i in 0..n {
            for o in 0..d {
                let mut acc = b1[o];
                for c in 0..d {
                    acc += rv[i * d + c] * w1[c * d + o];
                }
                for j in 0..n {
                    let a_ji = if kept_v[j] == 0.0 && kept_v[i] == 1.0 {
                        ev[j * n + i]
                    } else {
                        0.0
                    };
                    assert_eq!(av[j * n + i], a_ji);
                    for c in 0..d {
                        acc += rv[j * d + c] * w2[c * d + o] * a_ji;
                    }
                }
                let want = gelu(acc);
                assert!(
                    (z[i * d + o] - want).abs() < 1e-4,
                    "z[{i},{o}] = {} vs {want}",
                    z[i * d + o]
                );
            }
        }
    }

    /// Abramowitz-Stegun 7.1.26 (error < 1.5e-7), enough for a 1e-4 check.
    fn erf(x: f64) -> f64 {
        let t = 1.0 / (1.0 + 0.3275911 * x.abs());
        let y = 1.0
            - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
                + 0.254829592)
                * t
                * (-x * x).exp();
        y.copysign(x)
    }
}
