//! Bias identification: the dual ranking xi (Eq. 9) and the top-rho split (Eq. 10).
//!
//! Dimension key: see the crate root (`B`, `N`, `K`, `d`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Bool, Device, Tensor, TensorData};

use crate::kernels::{self, Execution};

/// Configuration of the ranking.
#[derive(Config, Debug)]
pub struct RankingConfig {
    /// Hidden size d.
    pub d_model: usize,
    /// alpha_f: weight of the feature-level ranking xi_f against xi_e (Eq. 9); no default here,
    /// the one default is [`crate::RefinementReadings`]'.
    pub alpha_f: f64,
}

/// f_Psi and alpha_f of Eq. 9.
#[derive(Module, Debug)]
pub struct Ranking {
    /// f_Psi: the learnable projector d -> 1 of the feature-level ranking.
    pub projector: Linear,
    /// alpha_f of Eq. 9.
    pub alpha_f: f64,
    /// How the operations run (set by [`crate::Model::set_execution`]; not configuration).
    #[module(skip)]
    pub execution: Execution,
}

impl RankingConfig {
    /// Builds the ranking on `device`.
    pub fn init(&self, device: &Device) -> Ranking {
        Ranking {
            projector: LinearConfig::new(self.d_model, 1).init(device),
            alpha_f: self.alpha_f,
            execution: Execution::default(),
        }
    }
}

/// The three scores of Eq. 9, each `[B, N]`; higher means less likely biased.
pub struct Scores {
    /// xi_f = tanh(f_Psi(r)). [B, N]
    pub xi_f: Tensor<2>,
    /// xi_e = tanh(sum_i e_i): how much attention each token receives. [B, N]
    pub xi_e: Tensor<2>,
    /// xi = alpha_f xi_f + (1 - alpha_f) xi_e. [B, N]
    pub xi: Tensor<2>,
}

impl Ranking {
    /// Eq. 9: xi = alpha_f tanh(f_Psi(r)) + (1 - alpha_f) tanh(sum_i e_i), where sum_i e_i is
    /// the column sum of e (the attention token j receives from all queries).
    ///
    /// # Shapes
    /// - r: `[B, N, d]`; e: `[B, N, N]`
    /// - output: xi_f, xi_e, xi, each `[B, N]`
    pub fn forward(&self, r: Tensor<3>, e: Tensor<3>) -> Scores {
        let [b, n, _] = r.dims();
        // tanh before the reshape: under Burn's fusion it is then the product's (and the sum's)
        // epilogue; after a view op it would be a kernel of its own.
        let xi_f = kernels::linear_rows(&self.projector, r, self.execution)
            .tanh()
            .reshape([b, n]); // [B, N]
        // tanh after the reshape: Burn's fusion runs the column sum as a reduction of its own,
        // and tanh then joins xi's element-wise steps below in one kernel (before the reshape,
        // a view op, it ran alone).
        let xi_e = e.sum_dim(1).reshape([b, n]).tanh(); // [B, N]
        let xi =
            xi_f.clone().mul_scalar(self.alpha_f) + xi_e.clone().mul_scalar(1.0 - self.alpha_f); // [B, N]
        Scores { xi_f, xi_e, xi }
    }
}

/// The split of Eq. 10, as tensors usable inside the graph.
pub struct Split {
    /// Rank of each token by xi, 0 = highest; ties go to the lower index. [B, N]
    pub rank: Tensor<2>,
    /// 1.0 for kept (idx_u), 0.0 for biased (idx_b). [B, N]
    pub kept: Tensor<2>,
    /// Selection matrix, `select[b, r, i] = 1` iff token i has rank r < K: `select @ x` gathers
    /// the kept tokens in rank order. [B, K, N]
    pub select: Tensor<3>,
}

/// Eq. 10: idx_u = ArgSort(xi)_{1:K}, idx_b = the rest, K = `k`.
///
/// Ties are broken by the lower token index, so the split is deterministic on every backend:
/// rank_i = #{j : xi_j > xi_i} + #{j < i : xi_j = xi_i}. The ranks are a permutation of 0..N,
/// computed by comparisons (no reliance on a backend's top-k tie order). The scores are
/// detached: the split itself has no gradient.
///
/// Under [`Execution::Kernels`] on flex the comparisons run on the host ([`kernels::split::top_k_on_host`]): flex's memory is
/// the host's, so reading xi costs a copy, and three tensors replace about fifteen `[B, N, N]`
/// operations (in the browser a tenth of a refinement layer). Elsewhere (wgpu) they stay on
/// the device: no round trip.
///
/// # Shapes
/// - xi: `[B, N]`
/// - output: rank, kept `[B, N]`; select `[B, K, N]`
pub fn top_rho_split(xi: Tensor<2>, k: usize, exec: Execution) -> Split {
    let xi = xi.detach();
    if exec.kernels() && kernels::on_flex(&xi.device()) {
        let (rank, kept, select) = kernels::split::top_k_on_host(xi, k);
        return Split { rank, kept, select };
    }
    let [b, n] = xi.dims();
    let device = xi.device();
    // The comparisons broadcast [B, N, 1] against [B, 1, N]; no operand is expanded first
    // (an expand is a view op Burn's fusion does not fuse; the launch count it saves is in
    // docs/RESULTS.md, 2026-12-03).
    let own: Tensor<3> = xi.clone().reshape([b, n, 1]); // [B, N, 1] xi_i
    let other: Tensor<3> = xi.reshape([b, 1, n]); // [B, 1, N] xi_j
    let before: Vec<f32> = (0..n * n)
        .map(|ij| if ij % n < ij / n { 1.0 } else { 0.0 })
        .collect();
    let before: Tensor<3> = Tensor::<3>::from_data(TensorData::new(before, [1, n, n]), &device); // [1, N, N] 1 where j < i
    let higher = indicator(other.clone().greater(own.clone())); // [B, N, N]
    let tied_before = indicator(other.equal(own)) * before; // [B, N, N]
    let rank = (higher + tied_before).sum_dim(2).reshape([b, n]); // [B, N]
    let kept = indicator(rank.clone().lower_elem(k as f32 - 0.5)); // [B, N]
    let slots: Vec<f32> = (0..k).map(|r| r as f32).collect();
    let slots: Tensor<3> = Tensor::<3>::from_data(TensorData::new(slots, [1, k, 1]), &device); // [1, K, 1]
    let select = indicator(rank.clone().reshape([b, 1, n]).equal(slots)); // [B, K, N]
    Split { rank, kept, select }
}

/// 1.0 where `mask` holds, 0.0 elsewhere, as zeros filled through the mask rather than a
/// bool-to-float cast: Burn's fusion takes the comparison, the fill and the arithmetic after it
/// into one kernel, where a cast (a bool op, which burn-cubecl-fusion's fuser does not take)
/// would end the fused kernel and run as a kernel of its own.
fn indicator<const D: usize>(mask: Tensor<D, Bool>) -> Tensor<D> {
    Tensor::zeros(mask.dims(), &mask.device()).mask_fill(mask, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_host(xi: &[f32], k: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let device = Device::flex();
        let n = xi.len();
        let t = Tensor::<2>::from_data(TensorData::new(xi.to_vec(), [1, n]), &device);
        let s = top_rho_split(t, k, Execution::BurnOps);
        (
            s.rank.into_data().try_to_vec::<f32>().unwrap(),
            s.kept.into_data().try_to_vec::<f32>().unwrap(),
            s.select.into_data().try_to_vec::<f32>().unwrap(),
        )
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        let (rank, kept, select) = split_host(&[0.2, 0.5, 0.2, 0.5, 0.2], 3);
        assert_eq!(rank, vec![2.0, 0.0, 3.0, 1.0, 4.0]);
        assert_eq!(kept, vec![1.0, 1.0, 0.0, 1.0, 0.0]);
        // rank 0 -> token 1, rank 1 -> token 3, rank 2 -> token 0
        let rows: Vec<usize> = select
            .chunks(5)
            .map(|row| row.iter().position(|&v| v == 1.0).unwrap())
            .collect();
        assert_eq!(rows, vec![1, 3, 0]);
    }

    #[test]
    fn the_indicator_is_one_exactly_where_the_mask_holds() {
        let device = Device::flex();
        let xi = Tensor::<2>::from_data([[0.5, -1.0, 2.0], [0.0, 3.0, 0.0]], &device);
        let got = indicator(xi.greater_elem(0.0))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(got, vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn k_of_one_keeps_the_maximum() {
        let (_, kept, _) = split_host(&[-0.3, 0.9, 0.1], 1);
        assert_eq!(kept, vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn ranking_combines_feature_and_correlation_scores() {
        let device = Device::flex();
        let ranking = RankingConfig::new(2, 0.25).init(&device);
        let r = Tensor::<3>::ones([1, 2, 2], &device);
        let e = Tensor::<3>::from_data(
            TensorData::new(vec![0.1f32, 0.7, 0.3, 0.4], [1, 2, 2]),
            &device,
        );
        let scores = ranking.forward(r.clone(), e);
        let xi_e = scores.xi_e.into_data().try_to_vec::<f32>().unwrap();
        assert!((xi_e[0] - 0.4f32.tanh()).abs() < 1e-6 && (xi_e[1] - 1.1f32.tanh()).abs() < 1e-6);
        let xi_f: Vec<f32> = scores.xi_f.into_data().try_to_vec::<f32>().unwrap();
        let xi: Vec<f32> = scores.xi.into_data().try_to_vec::<f32>().unwrap();
        for j in 0..2 {
            assert!((xi[j] - (0.25 * xi_f[j] + 0.75 * xi_e[j])).abs() < 1e-6);
        }
    }

    proptest! {
        /// Eq. 10: the kept set is exactly the top-k of xi, with ties to the lower index.
        #[test]
        fn kept_set_is_exactly_the_top_k(values in prop::collection::vec(0u8..6, 1..12), k_frac in 0.01f64..1.0) {
            let xi: Vec<f32> = values.iter().map(|&v| v as f32 / 5.0).collect();
            let n = xi.len();
            let k = ((k_frac * n as f64).ceil() as usize).clamp(1, n);
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| xi[b].partial_cmp(&xi[a]).unwrap().then(a.cmp(&b)));
            let (rank, kept, _) = split_host(&xi, k);
            for (r, &i) in order.iter().enumerate() {
                prop_assert_eq!(rank[i] as usize, r);
                prop_assert_eq!(kept[i] == 1.0, r < k);
            }
        }

        /// The host's split (flex, fused) equals the comparisons on the device, value for
        /// value, over several samples with ties and NaN scores.
        #[test]
        fn the_host_split_equals_the_device_split(
            values in prop::collection::vec(0u8..7, 1..40), rows in 1usize..4, k_frac in 0.01f64..1.0,
        ) {
            let n = values.len();
            let xi: Vec<f32> = (0..rows * n)
                .map(|i| match values[i % n] { 6 => f32::NAN, v => (v as f32 + (i / n) as f32) / 5.0 })
                .collect();
            let k = ((k_frac * n as f64).ceil() as usize).clamp(1, n);
            let t = Tensor::<2>::from_data(TensorData::new(xi, [rows, n]), &Device::flex());
            let host = top_rho_split(t.clone(), k, Execution::Kernels);
            let device = top_rho_split(t, k, Execution::BurnOps);
            prop_assert_eq!(host.select.dims(), [rows, k, n]);
            for (a, b) in [(host.rank, device.rank), (host.kept, device.kept)] {
                prop_assert_eq!(a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
            }
            prop_assert_eq!(host.select.into_data().try_to_vec::<f32>().unwrap(), device.select.into_data().try_to_vec::<f32>().unwrap());
        }
    }
}
