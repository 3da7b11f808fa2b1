//! Eq. 10's top-rho split on the host, for flex: flex's memory is the host's, so reading xi
//! costs a copy, and three tensors replace about fifteen `[B, N, N]` operations (in the browser
//! a tenth of a refinement layer).
//!
//! Dimension key: `B` samples, `N` tokens, `K` kept tokens.

use burn::tensor::{Tensor, TensorData};

/// The model crate's `ranking::top_rho_split` (Eq. 10) on the host: each token's rank by xi
/// (rank_i = #{j : xi_j > xi_i} + #{j < i : xi_j = xi_i}), its kept flag (rank < K) and the
/// selection matrix, by the same comparisons (`>` and `==`, false for NaN), so the same
/// numbers (tested there, value for value).
///
/// # Shapes
/// - xi: `[B, N]`
/// - output: (rank `[B, N]`, kept `[B, N]`, select `[B, K, N]`)
pub fn top_k_on_host(xi: Tensor<2>, k: usize) -> (Tensor<2>, Tensor<2>, Tensor<3>) {
    let [b, n] = xi.dims();
    let device = xi.device();
    let xi: Vec<f32> = xi
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 after convert");
    let mut rank = vec![0.0f32; b * n];
    let mut kept = vec![0.0f32; b * n];
    let mut select = vec![0.0f32; b * k * n];
    for (s, row) in xi.chunks_exact(n.max(1)).enumerate() {
        for (i, &own) in row.iter().enumerate() {
            let higher = row.iter().filter(|&&other| other > own).count();
            let tied_before = row[..i].iter().filter(|&&other| other == own).count();
            let r = higher + tied_before;
            rank[s * n + i] = r as f32;
            if r < k {
                kept[s * n + i] = 1.0;
                select[(s * k + r) * n + i] = 1.0;
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(rank, [b, n]), &device),
        Tensor::from_data(TensorData::new(kept, [b, n]), &device),
        Tensor::from_data(TensorData::new(select, [b, k, n]), &device),
    )
}
