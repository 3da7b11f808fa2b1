//! Losses: the squared distance correlation of Eq. 4, the task losses and the total of Eq. 13.
//!
//! Dimension key: see the crate root (`B`, `d`, `C`); `n` is the number of samples in a
//! distance-correlation estimate.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Eq. 13's weights: L = L_task + lambda_div L_div + lambda_orth L_orth (lambda_div 0 for the
/// methods without h_u and for `mgr-no-div`; L_orth only MSPs have).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossWeights {
    /// lambda_div as the method uses it.
    pub div: f64,
    /// lambda_orth.
    pub orth: f64,
}

impl LossWeights {
    /// Eq. 13 on the graph: L = L_task + lambda_div L_div + lambda_orth L_orth.
    ///
    /// # Shapes
    /// - each part, output: `[1]`
    pub fn total(&self, task: Tensor<1>, div: Tensor<1>, orth: Tensor<1>) -> Tensor<1> {
        task + div.mul_scalar(self.div) + orth.mul_scalar(self.orth)
    }

    /// Eq. 13 of values already on the host (a sharded step's losses), in the same order.
    pub fn total_of(&self, task: f64, div: f64, orth: f64) -> f64 {
        task + self.div * div + self.orth * orth
    }
}

/// Default epsilon inside the square root of Eq. 4.
pub const DCOR_EPS: f64 = 1e-9;

/// Double-centred pairwise Euclidean distance matrix of Szekely's V_n^2.
///
/// a_kl = |x_k - x_l|, A_kl = a_kl - mean_row_k - mean_col_l + mean_all. Distances are computed
/// from the differences (not |x|^2 + |y|^2 - 2xy, which cancels badly in f32), with 1e-12 inside
/// the square root so the gradient on the zero diagonal stays finite.
///
/// # Shapes
/// - x: `[n, d_x]`
/// - output: `[n, n]`
fn double_centred_distances(x: Tensor<2>) -> Tensor<2> {
    let [n, d] = x.dims();
    let rows: Tensor<3> = x.clone().reshape([n, 1, d]).expand([n, n, d]); // [n, n, d]
    let cols: Tensor<3> = x.reshape([1, n, d]).expand([n, n, d]); // [n, n, d]
    let dist: Tensor<2> = (rows - cols)
        .powi_scalar(2)
        .sum_dim(2)
        .add_scalar(1e-12)
        .sqrt()
        .reshape([n, n]); // [n, n]
    let row_mean = dist.clone().mean_dim(1); // [n, 1]
    let col_mean = dist.clone().mean_dim(0); // [1, n]
    let all_mean = dist.clone().mean().reshape([1, 1]); // [1, 1]
    dist - row_mean - col_mean + all_mean // [n, n]
}

/// Eq. 4 for one modality: the squared distance correlation
/// `V_n^2(x, y) / sqrt(V_n^2(x, x) V_n^2(y, y) + eps)` (Szekely, Rizzo & Bakirov 2007), with
/// `V_n^2(x, y) = mean_kl A_kl B_kl` over the double-centred distance matrices.
///
/// It is 0 when x and y are independent (exactly so for an empirical product distribution) and
/// 1 when y is an affine function of x with a scalar factor (y = a x + b).
///
/// # Shapes
/// - x: `[n, d_x]`, y: `[n, d_y]` (the same n samples)
/// - output: `[1]`
pub fn squared_distance_correlation(x: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    squared_distance_correlation_eps(x, y, DCOR_EPS)
}

/// [`squared_distance_correlation`] with an explicit epsilon.
///
/// # Shapes
/// - x: `[n, d_x]`, y: `[n, d_y]`
/// - output: `[1]`
pub fn squared_distance_correlation_eps(x: Tensor<2>, y: Tensor<2>, eps: f64) -> Tensor<1> {
    assert_eq!(
        x.dims()[0],
        y.dims()[0],
        "distance correlation needs the same samples in x and y"
    );
    let a = double_centred_distances(x); // [n, n]
    let b = double_centred_distances(y); // [n, n]
    let v_xy = (a.clone() * b.clone()).mean(); // [1]
    let v_xx = (a.clone() * a).mean(); // [1]
    let v_yy = (b.clone() * b).mean(); // [1]
    v_xy / (v_xx * v_yy).add_scalar(eps).sqrt() // [1]
}

/// Cross-entropy of logits against class indices, averaged over the batch (L_task of Eq. 13,
/// classification).
///
/// # Shapes
/// - logits: `[B, C]`; targets: `[B]`
/// - output: `[1]`
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let b = targets.dims()[0];
    let log_p = log_softmax(logits, 1); // [B, C]
    let picked = log_p.gather(1, targets.reshape([b, 1])); // [B, 1]
    picked.mean().neg() // [1]
}

/// Mean absolute error (L_task of Eq. 13, regression).
///
/// # Shapes
/// - prediction, target: `[B, 1]`
/// - output: `[1]`
pub fn l1(prediction: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    (prediction - target).abs().mean()
}

/// MSPs' orthogonality loss: mean squared off-diagonal cosine similarity between the prompts
/// of different modalities (0 when they are mutually orthogonal).
///
/// # Shapes
/// - prompts: `[M, L * d]` (one flattened prompt per modality)
/// - output: `[1]`
pub fn orthogonality(prompts: Tensor<2>) -> Tensor<1> {
    let [m, _] = prompts.dims();
    let device = prompts.device();
    let norm = prompts
        .clone()
        .powi_scalar(2)
        .sum_dim(1)
        .add_scalar(1e-12)
        .sqrt(); // [M, 1]
    let unit = prompts / norm; // [M, L*d]
    let gram = unit.clone().matmul(unit.transpose()); // [M, M]
    let off_diagonal = gram - Tensor::<2>::eye(m, &device); // [M, M]
    off_diagonal.powi_scalar(2).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    fn t2(rows: &[[f32; 2]]) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), 2]), &Device::flex())
    }

    /// The 4x2 case computed by hand (and by `torch_mgr.py dcor`): distances of x are
    /// 0,1,1,sqrt2 patterns of a unit square; y reorders two corners.
    #[test]
    fn eq4_matches_hand_computed_4x2_case() {
        let x = t2(&[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]);
        let y = t2(&[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]);
        // By hand: x's distance matrix rows are [0,1,1,s],[1,0,s,1],[1,s,0,1],[s,1,1,0] with
        // s = sqrt 2; every row and column mean is (2 + s)/4 = grand mean, so A = a - (2+s)/4.
        // y swaps the last two points, so B is A with rows/cols 2 and 3 swapped.
        let s = 2f64.sqrt();
        let m = (2.0 + s) / 4.0;
        let a = [
            [0.0, 1.0, 1.0, s],
            [1.0, 0.0, s, 1.0],
            [1.0, s, 0.0, 1.0],
            [s, 1.0, 1.0, 0.0],
        ];
        let perm = [0, 1, 3, 2];
        let (mut vxy, mut vxx) = (0.0, 0.0);
        for k in 0..4 {
            for l in 0..4 {
                let ak = a[k][l] - m;
                let bk = a[perm[k]][perm[l]] - m;
                vxy += ak * bk / 16.0;
                vxx += ak * ak / 16.0;
            }
        }
        let expected = vxy / vxx; // V(y,y) = V(x,x) by symmetry
        // The same by a second route (numpy): V(x,y) = 0.228553, V(x,x) = 0.271447.
        assert!(
            (expected - 0.8419828528814562).abs() < 1e-9,
            "hand value {expected}"
        );
        let got: f32 = squared_distance_correlation(x, y).into_scalar();
        assert!(
            (got as f64 - expected).abs() < 1e-4,
            "got {got}, expected {expected}"
        );
    }

    /// The host form of Eq. 4: Burn's value, and Burn's gradient through autodiff, on random
    /// rows of the model's sizes, on two rows, and on rows with a repeated sample (a zero
    /// distance off the diagonal).
    #[test]
    fn eq4_on_the_host_gives_burns_value_and_gradient() {
        let device = Device::flex().autodiff();
        let mut cases: Vec<(Tensor<2>, Tensor<2>)> = [(43, 64, 64), (2, 3, 5), (7, 1, 4)]
            .into_iter()
            .map(|(n, dx, dy)| {
                let x = Tensor::random([n, dx], Distribution::Normal(0.0, 1.0), &device);
                // y depends on x, so that R is neither 0 nor 1.
                let noise = Tensor::random([n, dy], Distribution::Normal(0.0, 1.0), &device);
                let y = x.clone().narrow(1, 0, 1).repeat_dim(1, dy) + noise;
                (x, y)
            })
            .collect();
        let x = Tensor::random([5, 4], Distribution::Normal(0.0, 1.0), &device);
        let repeated = Tensor::cat(vec![x.clone(), x.clone().narrow(0, 0, 1)], 0); // [6, 4]
        cases.push((repeated.clone(), repeated.clone().mul_scalar(-2.0).exp()));
        for (x, y) in cases {
            let [n, _] = x.dims();
            let host = |t: &Tensor<2>| t.to_data().try_to_vec::<f32>().expect("f32");
            let (value, grad_x, grad_y) =
                crate::kernels::dcor::squared_distance_correlation_with_gradient(
                    &host(&x),
                    &host(&y),
                    n,
                    DCOR_EPS,
                );
            let (x, y) = (x.require_grad(), y.require_grad());
            let burn = squared_distance_correlation(x.clone(), y.clone());
            let grads = burn.clone().backward();
            let burn_value: f32 = burn.into_scalar();
            assert!(
                (value - burn_value as f64).abs() < 1e-5,
                "n = {n}: R {value} vs Burn's {burn_value}"
            );
            for (what, ours, leaf) in [("dR/dx", grad_x, &x), ("dR/dy", grad_y, &y)] {
                let theirs = host(&leaf.grad(&grads).expect("grad"));
                // 1e-6 absolute: with n = 2, R is 1 for any rows and its gradient is zero, which
                // Burn's f32 computes as noise of about 1e-7.
                let largest = theirs.iter().fold(0f32, |m, g| m.max(g.abs()));
                for (i, (p, q)) in ours.iter().zip(&theirs).enumerate() {
                    assert!(
                        (p - q).abs() <= 1e-3 * largest + 1e-6,
                        "n = {n}, {what}[{i}]: {p} vs Burn's {q}"
                    );
                }
            }
        }
    }

    #[test]
    fn eq4_is_one_for_affine_maps() {
        let device = Device::flex();
        let x = Tensor::<2>::random([32, 3], Distribution::Normal(0.0, 1.0), &device);
        let y = x.clone().mul_scalar(-2.5).add_scalar(4.0);
        let got: f32 = squared_distance_correlation(x, y).into_scalar();
        assert!((got - 1.0).abs() < 1e-3, "got {got}");
    }

    /// An empirical product distribution: every pair (u_p, v_q) appears once, so x and y are
    /// independent by construction and V_n^2(x, y) is exactly 0.
    #[test]
    fn eq4_is_zero_for_independent_by_construction() {
        let u = [
            [0.0f32, 1.0],
            [2.0, -1.0],
            [0.5, 0.5],
            [3.0, 2.0],
            [-1.0, 0.0],
        ];
        let v = [[1.0f32, 0.0], [0.0, 4.0], [2.0, 2.0], [-3.0, 1.0]];
        let (mut xs, mut ys) = (vec![], vec![]);
        for p in u {
            for q in v {
                xs.push(p);
                ys.push(q);
            }
        }
        let got: f32 = squared_distance_correlation(t2(&xs), t2(&ys)).into_scalar();
        assert!(got.abs() < 1e-5, "got {got}");
    }

    #[test]
    fn eq13_weighs_its_parts_the_same_on_the_graph_and_on_the_host() {
        let device = Device::flex();
        let one = |v: f32| Tensor::<1>::from_data(TensorData::new(vec![v], [1]), &device);
        let weights = LossWeights {
            div: 0.1,
            orth: 0.5,
        };
        let graph: f32 = weights.total(one(1.0), one(2.0), one(3.0)).into_scalar();
        assert!((graph - 2.7).abs() < 1e-6, "{graph}");
        assert!((weights.total_of(1.0, 2.0, 3.0) - 2.7).abs() < 1e-12);
    }

    #[test]
    fn cross_entropy_of_uniform_logits_is_log_c() {
        let device = Device::flex();
        let logits = Tensor::<2>::zeros([3, 5], &device);
        let targets = Tensor::<1, Int>::from_data(TensorData::from([0i64, 4, 2]), &device);
        let got: f32 = cross_entropy(logits, targets).into_scalar();
        assert!((got - 5f32.ln()).abs() < 1e-5);
    }

    #[test]
    fn orthogonality_is_zero_for_orthogonal_and_positive_otherwise() {
        let device = Device::flex();
        let eye = Tensor::<2>::eye(3, &device);
        assert!(orthogonality(eye).into_scalar::<f32>().abs() < 1e-6);
        let same = Tensor::<2>::ones([2, 4], &device);
        let got: f32 = orthogonality(same).into_scalar();
        assert!(
            (got - 0.5).abs() < 1e-5,
            "two equal prompts: off-diagonals 1, mean 2/4, got {got}"
        );
    }
}
