//! Eq. 4 (the squared distance correlation of the diversity loss) and its closed-form gradient
//! on the host, in f64: the fast form of the model crate's `loss::squared_distance_correlation`
//! for the sharded training step, where the rows are few (at most the batch, d wide) and
//! Burn's ops with autodiff spent about 5 ms of a 70 ms step on them, serially.
//!
//! Dimension key: `n` rows (samples), `d` features per row.

/// Eq. 4 and its gradient on the host, in f64, for the sharded training step (one estimate over
/// every shard's rows, which are small: n <= the batch, d = the model width).
///
/// The same value as the model crate's `loss::squared_distance_correlation_eps` (Eq. 4 written
/// with Burn's ops) up to f32 rounding, and its gradient (tested there against Burn's autodiff). The gradient:
/// with A = H a H (H = I - 11^T/n, so <A, B> = <a, B>), V_xy = <A, B>/n^2 and
/// S = sqrt(V_xx V_yy + eps), R = V_xy / S has
/// dR/da = (B - V_xy V_yy A / S^2) / (n^2 S), dR/db = (A - V_xy V_xx B / S^2) / (n^2 S), and
/// a_kl = sqrt(|x_k - x_l|^2 + 1e-12) gives dR/dx_k = 2 sum_l dR/da_kl (x_k - x_l) / a_kl
/// (dR/da is symmetric).
///
/// # Shapes
/// - x: `[n, d_x]`, y: `[n, d_y]`, row-major
/// - output: (R, dR/dx `[n, d_x]`, dR/dy `[n, d_y]`)
pub fn squared_distance_correlation_with_gradient(
    x: &[f32],
    y: &[f32],
    n: usize,
    eps: f64,
) -> (f64, Vec<f32>, Vec<f32>) {
    assert!(
        n > 0 && x.len().is_multiple_of(n) && y.len().is_multiple_of(n),
        "distance correlation needs the same n > 0 samples in x ({} values) and y ({} values)",
        x.len(),
        y.len()
    );
    let to_f64 = |v: &[f32]| v.iter().map(|&e| e as f64).collect::<Vec<f64>>();
    let (x, y) = (to_f64(x), to_f64(y));
    let (a, dist_x) = double_centred_distances_host(&x, n); // [n, n] each
    let (b, dist_y) = double_centred_distances_host(&y, n); // [n, n] each
    let mean_product =
        |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(u, v)| u * v).sum::<f64>() / (n * n) as f64;
    let (v_xy, v_xx, v_yy) = (
        mean_product(&a, &b),
        mean_product(&a, &a),
        mean_product(&b, &b),
    );
    let s = (v_xx * v_yy + eps).sqrt();
    let scale = 1.0 / ((n * n) as f64 * s);
    let grad_a: Vec<f64> = (0..n * n)
        .map(|i| (b[i] - v_xy * v_yy * a[i] / (s * s)) * scale)
        .collect(); // [n, n]
    let grad_b: Vec<f64> = (0..n * n)
        .map(|i| (a[i] - v_xy * v_xx * b[i] / (s * s)) * scale)
        .collect(); // [n, n]
    (
        v_xy / s,
        distance_gradient(&x, n, &dist_x, &grad_a),
        distance_gradient(&y, n, &dist_y, &grad_b),
    )
}

/// The double-centred distance matrix A = H a H of Eq. 4 on the host, and the distances a_kl
/// themselves.
///
/// # Shapes
/// - x: `[n, d]`, row-major
/// - output: (A `[n, n]`, a `[n, n]`)
fn double_centred_distances_host(x: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let d = x.len() / n;
    let row = |k: usize| &x[k * d..(k + 1) * d];
    let mut dist = vec![0.0f64; n * n];
    for k in 0..n {
        dist[k * n + k] = 1e-12f64.sqrt();
        for l in k + 1..n {
            let squared: f64 = row(k)
                .iter()
                .zip(row(l))
                .map(|(p, q)| (p - q) * (p - q))
                .sum();
            let a = (squared + 1e-12).sqrt();
            dist[k * n + l] = a;
            dist[l * n + k] = a;
        }
    }
    let row_mean: Vec<f64> = (0..n)
        .map(|k| dist[k * n..(k + 1) * n].iter().sum::<f64>() / n as f64)
        .collect();
    let col_mean: Vec<f64> = (0..n)
        .map(|l| (0..n).map(|k| dist[k * n + l]).sum::<f64>() / n as f64)
        .collect();
    let all_mean = row_mean.iter().sum::<f64>() / n as f64;
    let centred = (0..n * n)
        .map(|i| dist[i] - row_mean[i / n] - col_mean[i % n] + all_mean)
        .collect();
    (centred, dist)
}

/// dR/dx from dR/da through a_kl = sqrt(|x_k - x_l|^2 + 1e-12), for a symmetric dR/da.
///
/// # Shapes
/// - x: `[n, d]`; dist, grad_dist: `[n, n]`
/// - output: `[n, d]`
fn distance_gradient(x: &[f64], n: usize, dist: &[f64], grad_dist: &[f64]) -> Vec<f32> {
    let d = x.len() / n;
    let mut grad = vec![0.0f64; n * d];
    // Each pair once: x_k gets w (x_k - x_l) and x_l gets w (x_l - x_k).
    for k in 0..n {
        for l in k + 1..n {
            let weight = 2.0 * grad_dist[k * n + l] / dist[k * n + l];
            for j in 0..d {
                let step = weight * (x[k * d + j] - x[l * d + j]);
                grad[k * d + j] += step;
                grad[l * d + j] -= step;
            }
        }
    }
    grad.into_iter().map(|g| g as f32).collect()
}
