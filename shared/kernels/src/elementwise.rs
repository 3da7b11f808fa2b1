//! The element-wise bodies: GELU and its gradient, softmax over rows and its gradient, with
//! branch-free erf and exp that the compiler vectorises; each compiled for AVX2 + FMA where the
//! CPU has them ([`widest!`]).
//!
//! Dimension key: none (element-wise; any shape).

widest!(pub(crate) fn gelu_f32(data: &mut [f32]) => gelu_body);
widest!(pub(crate) fn gelu_grad_f32(xs: &[f32], grad: &mut [f32]) => gelu_grad_body);
widest!(pub(crate) fn softmax_rows_f32(data: &mut [f32], row: usize) => softmax_rows_body);
widest!(pub(crate) fn softmax_grad_rows_f32(ys: &[f32], grad: &mut [f32], row: usize) => softmax_grad_rows_body);

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi).
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu_body(data: &mut [f32]) {
    for v in data.iter_mut() {
        let x = *v;
        *v = 0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2));
    }
}

#[inline(always)]
fn gelu_grad_body(xs: &[f32], grad: &mut [f32]) {
    for (g, &x) in grad.iter_mut().zip(xs) {
        let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
        let pdf = FRAC_1_SQRT_2PI * exp_nonpositive(-0.5 * x * x);
        *g *= cdf + x * pdf;
    }
}

/// Lanes of the partial sums and maxima of a row: reductions in 8 independent accumulators
/// vectorise (one accumulator is a serial chain the compiler may not reorder).
pub(crate) const LANES: usize = 8;

/// The maximum of `row` (NaNs skipped, as `f32::max` does; a NaN still makes its row NaN
/// through exp).
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = larger(acc[i], c[i]);
        }
    }
    rest.iter()
        .chain(&acc)
        .fold(f32::NEG_INFINITY, |m, &v| larger(m, v))
}

/// `v` where it is larger than `m`, else `m`: `f32::max` for every `m` that is not NaN (a NaN
/// `v` is skipped), written as a comparison and a select. `f32::max`'s NaN rule has no
/// WebAssembly instruction (`f32.max` returns NaN), so in the browser it is a call to `fmaxf`
/// per element; a select is one vector instruction there and `maxps` on x86.
#[inline(always)]
fn larger(m: f32, v: f32) -> f32 {
    if v > m { v } else { m }
}

/// sum_i a_i over a row.
#[inline(always)]
pub(crate) fn row_sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// sum_i a_i b_i over a row.
#[inline(always)]
pub(crate) fn row_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Three passes: each row less its maximum, exp over all rows at once, each row over its sum.
/// The exp runs as one loop over every row so that only the whole buffer's last few numbers
/// miss the 8-lane blocks: per row, the attention's 45-long rows left 5 numbers to a scalar
/// exp each, which cost as much as the row's blocks.
#[inline(always)]
pub(crate) fn softmax_rows_body(data: &mut [f32], row: usize) {
    for r in data.chunks_exact_mut(row) {
        let max = row_max(r);
        for v in r.iter_mut() {
            *v -= max;
        }
    }
    for v in data.iter_mut() {
        *v = exp_nonpositive(*v);
    }
    for r in data.chunks_exact_mut(row) {
        let inv = 1.0 / row_sum(r);
        for v in r.iter_mut() {
            *v *= inv;
        }
    }
}

#[inline(always)]
fn softmax_grad_rows_body(ys: &[f32], grad: &mut [f32], row: usize) {
    for (y, g) in ys.chunks_exact(row).zip(grad.chunks_exact_mut(row)) {
        let dot = row_dot(y, g);
        for (gi, &yi) in g.iter_mut().zip(y) {
            *gi = yi * (*gi - dot);
        }
    }
}

/// erf(x) as a rational function of x (Eigen's and XLA's f32 erf; absolute error under 5e-7),
/// exactly +-1 from |x| = 3.92 on, where erf(x) rounds to +-1 in f32: so GELU's 1 + erf(x)
/// is exactly 0 far left instead of a rounding error that grows with |x|. NaN stays NaN.
/// Branch-free (the conditions become selects), so a loop of it vectorises.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the coefficients as published
pub fn erf(z: f32) -> f32 {
    // clamp keeps NaN.
    let x = z.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_2e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_600e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    let e = x * p / q;
    if z.abs() >= 3.92 { z.signum() } else { e }
}

/// exp(x) for x <= 0 (Cephes' expf: x = n ln 2 + r, a degree-6 polynomial in r, times 2^n), 0
/// below -87 where f32 has no normal result; NaN stays NaN; a positive x gives exp(0) = 1 (not
/// in the domain). Branch-free, integer steps on bits only: a loop of it vectorises natively
/// and in the browser (wasm32 SIMD128, where a float-to-integer conversion kept it scalar).
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding 1.5 * 2^23 rounds to the nearest integer without a rounding instruction (SSE2 has
    // none), and leaves that integer in the sum's low bits: every sum below lies in
    // [ROUND - 126, ROUND], where f32's step is 1.
    const ROUND: f32 = 12_582_912.0;
    // Into [-87, 0], NaN to -87 (a comparison with NaN is false): n is then always a small
    // integer. Selects, not f32::max/min (see `larger`).
    let above = if x > -87.0 { x } else { -87.0 };
    let clamped = if above < 0.0 { above } else { 0.0 };
    let shifted = clamped * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // n as an integer in [-126, 0]: the difference of the two sums' bits (same exponent). The
    // wrapping operations cannot wrap here, but the dev profile's overflow checks on plain
    // ones would be branches that keep the loop from vectorising.
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    // x * 0 is 0 for a finite x and NaN for a NaN x, which must come out NaN.
    if x < -87.0 { 0.0 } else { y * scale + x * 0.0 }
}
