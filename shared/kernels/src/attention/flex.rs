//! Flex's fused attention: the scores with their softmax, A V and A^T X for every head of
//! every sample, over the cores; on the native register tiles where the CPU has AVX2 + FMA
//! (tile.rs), on 8-lane blocks in the browser, else portable loops.
//!
//! Dimension key: `B` batch, `H` heads, `N` queries, `M` keys, `d` = `H d_h` features.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Shape};

use super::composite::{composite_apply, composite_apply_t, composite_scores};
use super::{FusedAttentionOps, score_scale};
use crate::linear::blocked_product;
#[cfg(not(target_arch = "wasm32"))]
use crate::tile::{self, Addend, tile_product};
use crate::view::View;
use crate::{contiguous, owned_f32};

/// The sizes of one attention product.
#[derive(Clone, Copy, Debug)]
struct Dims {
    /// Heads H.
    heads: usize,
    /// Queries N.
    n: usize,
    /// Keys M.
    m: usize,
    /// Features d = H d_h.
    d: usize,
}

impl Dims {
    fn d_h(&self) -> usize {
        self.d / self.heads
    }
}

/// `x` as contiguous f32 of rank `rank` from the start of its storage, or `x` given back as it
/// is (then the composite runs).
fn f32_of_rank(x: FlexTensor, rank: usize) -> Result<FlexTensor, FlexTensor> {
    match x.dtype() == DType::F32 && x.layout().shape().num_dims() == rank {
        true => Ok(contiguous(x)),
        false => Err(x),
    }
}

fn dims3(t: &FlexTensor) -> [usize; 3] {
    let s = t.layout().shape();
    [s[0], s[1], s[2]]
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

/// `f(b, out_b)` for every sample b, `out` cut into B equal parts, over the cores.
fn per_sample(out: &mut [f32], batch: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if batch == 0 || out.is_empty() {
        return;
    }
    let part = out.len() / batch;
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(part)
            .enumerate()
            .for_each(|(b, o)| f(b, o));
    }
    #[cfg(target_arch = "wasm32")]
    out.chunks_mut(part).enumerate().for_each(|(b, o)| f(b, o));
}

impl FusedAttentionOps for Flex {
    fn fused_attention_weights(q: FlexTensor, k: FlexTensor, heads: usize) -> FlexTensor {
        scores(q, k, heads, None)
    }

    fn fused_attention_context(a: FlexTensor, v: FlexTensor) -> FlexTensor {
        Self::fused_heads_apply(a, v, 1.0)
    }

    fn fused_heads_scores(x: FlexTensor, y: FlexTensor, heads: usize, scale: f32) -> FlexTensor {
        scores(x, y, heads, Some(scale))
    }

    fn fused_heads_apply(a: FlexTensor, v: FlexTensor, scale: f32) -> FlexTensor {
        heads_product(a, v, scale, false)
    }

    fn fused_heads_apply_t(a: FlexTensor, x: FlexTensor, scale: f32) -> FlexTensor {
        heads_product(a, x, scale, true)
    }
}

/// scale A_h X_h (x `[B, M, d]` -> `[B, N, d]`), or scale A_h^T X_h when `transposed` (x
/// `[B, N, d]` -> `[B, M, d]`), per head; Burn's ops for what the kernels do not take.
fn heads_product(a: FlexTensor, x: FlexTensor, scale: f32, transposed: bool) -> FlexTensor {
    match (f32_of_rank(a, 4), f32_of_rank(x, 3)) {
        (Ok(a), Ok(x)) if fits(&a, &x, transposed) => {
            let ([b, heads, n, m], [_, rows_in, d]) = (dims4(&a), dims3(&x));
            let rows_out = if transposed { m } else { n };
            let dims = Dims { heads, n, m, d };
            let (a_s, x_s) = (a.storage::<f32>(), x.storage::<f32>());
            let mut out = vec![0.0; b * rows_out * d];
            per_sample(&mut out, b, |i, o| {
                let a_b = &a_s[i * heads * n * m..(i + 1) * heads * n * m];
                let x_b = &x_s[i * rows_in * d..(i + 1) * rows_in * d];
                match transposed {
                    false => apply_f32(a_b, x_b, o, dims, scale),
                    true => apply_t_f32(a_b, x_b, o, dims, scale),
                }
            });
            owned_f32(out, Shape::new([b, rows_out, d]))
        }
        (a, x) if transposed => composite_apply_t::<Flex>(unwrap(a), unwrap(x), scale),
        (a, x) => composite_apply::<Flex>(unwrap(a), unwrap(x), scale),
    }
}

fn unwrap(r: Result<FlexTensor, FlexTensor>) -> FlexTensor {
    r.unwrap_or_else(|t| t)
}

/// Whether a `[B, H, N, M]` and x `[B, M, d]` (`[B, N, d]` when `transposed`) fit together.
fn fits(a: &FlexTensor, x: &FlexTensor, transposed: bool) -> bool {
    let ([b, heads, n, m], [bx, t, d]) = (dims4(a), dims3(x));
    b == bx && t == if transposed { n } else { m } && heads > 0 && d % heads == 0
}

/// scale X_h Y_h^T per head, then softmax over each row when `scale` is None (the scale is
/// then 1 / sqrt(d_h)).
fn scores(x: FlexTensor, y: FlexTensor, heads: usize, scale: Option<f32>) -> FlexTensor {
    let fit = |x: &FlexTensor, y: &FlexTensor| {
        let ([b, _, d], [by, _, dy]) = (dims3(x), dims3(y));
        b == by && d == dy && heads > 0 && d % heads == 0
    };
    match (f32_of_rank(x, 3), f32_of_rank(y, 3)) {
        (Ok(x), Ok(y)) if fit(&x, &y) => {
            let ([b, n, d], [_, m, _]) = (dims3(&x), dims3(&y));
            let dims = Dims { heads, n, m, d };
            let softmax = scale.is_none();
            let scale = scale.unwrap_or(score_scale(d, heads));
            let (x_s, y_s) = (x.storage::<f32>(), y.storage::<f32>());
            let mut out = vec![0.0; b * heads * n * m];
            per_sample(&mut out, b, |i, o| {
                let x_b = &x_s[i * n * d..(i + 1) * n * d];
                let y_b = &y_s[i * m * d..(i + 1) * m * d];
                scores_f32(x_b, y_b, o, dims, scale, softmax)
            });
            owned_f32(out, Shape::new([b, heads, n, m]))
        }
        (x, y) => composite_scores::<Flex>(unwrap(x), unwrap(y), heads, scale),
    }
}

// Natively the products run through the AVX2 register tiles of `tile_product` where the CPU
// has them (and, for A V and A^T X, d_h is a whole number of 8-wide pieces); the portable
// bodies below otherwise.
#[cfg(not(target_arch = "wasm32"))]
fn scores_f32(x: &[f32], y: &[f32], out: &mut [f32], dims: Dims, scale: f32, softmax: bool) {
    match tile::available() {
        true => scores_blocked_body(x, y, out, dims, scale, softmax, tiles),
        false => scores_portable(x, y, out, dims, scale, softmax),
    }
}
#[cfg(not(target_arch = "wasm32"))]
fn apply_f32(a: &[f32], v: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    match tile::available() && dims.d_h().is_multiple_of(L) {
        true => apply_blocked_body(a, v, out, dims, scale, tiles),
        false => apply_portable(a, v, out, dims, scale),
    }
}
#[cfg(not(target_arch = "wasm32"))]
fn apply_t_f32(a: &[f32], x: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    match tile::available() && dims.d_h().is_multiple_of(L) {
        true => apply_t_tiled_body(a, x, out, dims, scale),
        false => apply_t_portable(a, x, out, dims, scale),
    }
}
#[cfg(not(target_arch = "wasm32"))]
widest!(fn scores_portable(x: &[f32], y: &[f32], out: &mut [f32], dims: Dims, scale: f32, softmax: bool) => scores_body);
#[cfg(not(target_arch = "wasm32"))]
widest!(fn apply_portable(a: &[f32], v: &[f32], out: &mut [f32], dims: Dims, scale: f32) => apply_body);
#[cfg(not(target_arch = "wasm32"))]
widest!(fn apply_t_portable(a: &[f32], x: &[f32], out: &mut [f32], dims: Dims, scale: f32) => apply_t_body);

/// out = a b, out's rows at the given stride: the product the blocked bodies run.
type Product = fn(&mut [f32], usize, &View, &View);

/// The native product: [`tile_product`]'s AVX2 tiles.
#[cfg(not(target_arch = "wasm32"))]
fn tiles(out: &mut [f32], out_stride: usize, a: &View, b: &View) {
    tile_product(out, out_stride, Addend::Nothing, 1.0, a, b)
}

// The browser: the products through the SIMD128 register blocks of `blocked_product`.
#[cfg(target_arch = "wasm32")]
fn scores_f32(x: &[f32], y: &[f32], out: &mut [f32], dims: Dims, scale: f32, softmax: bool) {
    scores_blocked_body(x, y, out, dims, scale, softmax, blocks)
}
#[cfg(target_arch = "wasm32")]
fn apply_f32(a: &[f32], v: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    apply_blocked_body(a, v, out, dims, scale, blocks)
}
#[cfg(target_arch = "wasm32")]
widest!(fn apply_t_f32(a: &[f32], x: &[f32], out: &mut [f32], dims: Dims, scale: f32) => apply_t_body);

/// The browser's product: [`blocked_product`]'s SIMD128 blocks (natively: its tests).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn blocks(out: &mut [f32], out_stride: usize, a: &View, b: &View) {
    blocked_product(out, out_stride, false, a, b)
}

/// Lanes of one register block (AVX2: 8 f32).
const L: usize = crate::LANES;

/// `s[at..at + L]` as an array, so the block's arithmetic is one vector operation.
#[inline(always)]
fn lanes(s: &[f32], at: usize) -> &[f32; L] {
    s[at..at + L].try_into().expect("a block of L lanes")
}

/// sum_r c_r x_r over the `terms` (c_r, x_r), x_r a block of L lanes: four partial sums in
/// turn, so four additions are in flight instead of each waiting for the previous one. The
/// terms come from iterators, not indices: an index computed in the inner loop costs more than
/// the block's arithmetic (bounds and, in the dev profile, overflow checks).
#[inline(always)]
fn reduce<'a>(mut terms: impl Iterator<Item = (f32, &'a [f32; L])>) -> [f32; L] {
    let mut acc = [[0.0f32; L]; 4];
    loop {
        match (terms.next(), terms.next(), terms.next(), terms.next()) {
            (Some(t0), Some(t1), Some(t2), Some(t3)) => {
                for (acc_k, (c, x)) in acc.iter_mut().zip([t0, t1, t2, t3]) {
                    for l in 0..L {
                        acc_k[l] += c * x[l];
                    }
                }
            }
            (t0, t1, t2, _) => {
                for (c, x) in [t0, t1, t2].into_iter().flatten() {
                    for l in 0..L {
                        acc[0][l] += c * x[l];
                    }
                }
                break;
            }
        }
    }
    let mut sum = [0.0f32; L];
    for l in 0..L {
        sum[l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
    }
    sum
}

/// Y_h^T into `y_t` (`[d_h, padded]`, one row per feature of the head): row t holds column
/// `first + t` of y (`[M, d]`) in its first M places; the rest is left as it is (zero padding).
#[inline(always)]
fn head_transposed(y: &[f32], d: usize, first: usize, y_t: &mut [f32], padded: usize) {
    for (t, y_t_row) in y_t.chunks_exact_mut(padded).enumerate() {
        for (o, y_row) in y_t_row.iter_mut().zip(y.chunks_exact(d)) {
            *o = y_row[first + t];
        }
    }
}

/// One sample: out `[H, N, M]` = scale X_h Y_h^T (x `[N, d]`, y `[M, d]`), rows softmaxed
/// when `softmax`. Y_h is transposed (and padded to whole blocks of keys) first; each block of
/// L scores then stays in a register while the d_h products are summed into it.
// The browser runs the `*_blocked_body` kernels instead (see `scores_f32`).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
#[inline(always)]
fn scores_body(x: &[f32], y: &[f32], out: &mut [f32], dims: Dims, scale: f32, softmax: bool) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    let padded = m.div_ceil(L) * L;
    let mut y_t = vec![0.0f32; d_h * padded];
    let mut scratch = vec![0.0f32; padded];
    for h in 0..heads {
        head_transposed(y, d, h * d_h, &mut y_t, padded);
        for i in 0..n {
            let x_i = &x[i * d + h * d_h..i * d + (h + 1) * d_h];
            // Whole blocks into the padded scratch row (vector stores), then the M scores.
            for (block, s) in scratch.as_chunks_mut::<L>().0.iter_mut().enumerate() {
                let terms = x_i.iter().zip(y_t.chunks_exact(padded));
                let acc = reduce(terms.map(|(&c, y_row)| (c, lanes(y_row, block * L))));
                for l in 0..L {
                    s[l] = acc[l] * scale;
                }
            }
            let row = &mut out[(h * n + i) * m..(h * n + i + 1) * m];
            row.copy_from_slice(&scratch[..m]);
            if softmax {
                crate::softmax_rows_body(row, m);
            }
        }
    }
}

/// [`scores_body`] as one register-blocked `product` per head: [`tile_product`]'s AVX2 tiles
/// natively, [`blocked_product`]'s SIMD128 blocks in the browser (LLVM vectorises `reduce`'s
/// blocks for SIMD128 only in part).
fn scores_blocked_body(
    x: &[f32],
    y: &[f32],
    out: &mut [f32],
    dims: Dims,
    scale: f32,
    softmax: bool,
    product: Product,
) {
    let Dims { heads, n, m, d } = dims;
    if n == 0 || m == 0 {
        return;
    }
    let d_h = dims.d_h();
    let padded = m.div_ceil(L) * L;
    let mut y_t = vec![0.0f32; d_h * padded];
    let mut scratch = vec![0.0f32; n * padded];
    for h in 0..heads {
        head_transposed(y, d, h * d_h, &mut y_t, padded);
        let x_h = View::row_major(&x[h * d_h..], n, d_h, d);
        let y_h_t = View::row_major(&y_t, d_h, padded, padded);
        product(&mut scratch, padded, &x_h, &y_h_t);
        let out_h = &mut out[h * n * m..(h + 1) * n * m];
        for (row, scores) in out_h.chunks_exact_mut(m).zip(scratch.chunks_exact(padded)) {
            for (o, s) in row.iter_mut().zip(scores) {
                *o = s * scale;
            }
        }
        if softmax {
            crate::softmax_rows_f32(out_h, m);
        }
    }
}

/// [`apply_body`] as one register-blocked `product` per head (as [`scores_blocked_body`]).
fn apply_blocked_body(
    a: &[f32],
    v: &[f32],
    out: &mut [f32],
    dims: Dims,
    scale: f32,
    product: Product,
) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    for h in 0..heads {
        let a_h = View::row_major(&a[h * n * m..(h + 1) * n * m], n, m, m);
        let v_h = View::row_major(&v[h * d_h..], m, d_h, d);
        product(&mut out[h * d_h..], d, &a_h, &v_h);
    }
    if scale != 1.0 {
        out.iter_mut().for_each(|o| *o *= scale);
    }
}

/// [`apply_t_body`] as one [`tile_product`] per head, A_h read transposed in place (native; d_h
/// a whole number of 8-wide pieces).
#[cfg(not(target_arch = "wasm32"))]
fn apply_t_tiled_body(a: &[f32], x: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    for h in 0..heads {
        let a_h_t = View {
            data: &a[h * n * m..(h + 1) * n * m],
            rows: m,
            cols: n,
            row_stride: 1,
            col_stride: m as isize,
        };
        let x_h = View::row_major(&x[h * d_h..], n, d_h, d);
        tile_product(&mut out[h * d_h..], d, Addend::Nothing, scale, &a_h_t, &x_h);
    }
}

/// One sample: out `[N, d]`, head h's columns = scale A_h V_h (a `[H, N, M]`, v `[M, d]`);
/// each block of L output features stays in a register over the M keys.
// The browser runs the `*_blocked_body` kernels instead (see `scores_f32`).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
#[inline(always)]
fn apply_body(a: &[f32], v: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    if !d_h.is_multiple_of(L) {
        return apply_rows_body(a, v, out, dims, scale);
    }
    for h in 0..heads {
        for i in 0..n {
            let a_row = &a[(h * n + i) * m..(h * n + i + 1) * m];
            for block in (h * d_h..(h + 1) * d_h).step_by(L) {
                let terms = a_row.iter().zip(v.chunks_exact(d));
                let acc = reduce(terms.map(|(&c, v_row)| (c, lanes(v_row, block))));
                for (o, s) in out[i * d + block..i * d + block + L].iter_mut().zip(&acc) {
                    *o = s * scale;
                }
            }
        }
    }
}

/// One sample: out `[M, d]`, head h's columns = scale A_h^T X_h (a `[H, N, M]`, x `[N, d]`);
/// each block of L output features stays in a register over the N queries.
#[inline(always)]
fn apply_t_body(a: &[f32], x: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    if !d_h.is_multiple_of(L) {
        return apply_t_rows_body(a, x, out, dims, scale);
    }
    for h in 0..heads {
        let a_h = &a[h * n * m..(h + 1) * n * m];
        for j in 0..m {
            for block in (h * d_h..(h + 1) * d_h).step_by(L) {
                let terms = a_h.chunks_exact(m).zip(x.chunks_exact(d));
                let acc = reduce(terms.map(|(a_row, x_row)| (a_row[j], lanes(x_row, block))));
                for (o, s) in out[j * d + block..j * d + block + L].iter_mut().zip(&acc) {
                    *o = s * scale;
                }
            }
        }
    }
}

/// [`apply_body`] for any d_h (not a whole number of blocks): row updates.
// The browser runs the `*_blocked_body` kernels instead (see `scores_f32`).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
#[inline(always)]
fn apply_rows_body(a: &[f32], v: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    for h in 0..heads {
        for i in 0..n {
            let o = &mut out[i * d + h * d_h..i * d + (h + 1) * d_h];
            for (j, &a_ij) in a[(h * n + i) * m..(h * n + i + 1) * m].iter().enumerate() {
                axpy(o, a_ij * scale, &v[j * d + h * d_h..j * d + (h + 1) * d_h]);
            }
        }
    }
}

/// [`apply_t_body`] for any d_h: row updates.
#[inline(always)]
fn apply_t_rows_body(a: &[f32], x: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    let Dims { heads, n, m, d } = dims;
    let d_h = dims.d_h();
    for h in 0..heads {
        for i in 0..n {
            let x_i = &x[i * d + h * d_h..i * d + (h + 1) * d_h];
            for (j, &a_ij) in a[(h * n + i) * m..(h * n + i + 1) * m].iter().enumerate() {
                axpy(
                    &mut out[j * d + h * d_h..j * d + (h + 1) * d_h],
                    a_ij * scale,
                    x_i,
                );
            }
        }
    }
}

/// out += c x.
#[inline(always)]
fn axpy(out: &mut [f32], c: f32, x: &[f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o += c * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{close, numbers};

    /// The register-blocked scores, A V and A^T X (`*_blocked_body` with the browser's blocks,
    /// and with the native AVX2 tiles where the CPU has them) against the portable kernels, on
    /// one sample: the encoder's and refinement's shapes, heads that are not a whole number of
    /// 8-lane blocks, one key, a scale and a NaN query.
    #[test]
    fn the_blocked_and_tiled_products_match_the_portable_kernels() {
        let mut products: Vec<(&str, Product)> = vec![("blocks", blocks)];
        if tile::available() {
            products.push(("tiles", tiles));
        }
        for (heads, n, m, d) in [
            (4, 44, 44, 64),
            (4, 44, 45, 64),
            (4, 22, 23, 64),
            (3, 5, 7, 9),
            (2, 3, 1, 32),
        ] {
            let dims = Dims { heads, n, m, d };
            let (mut x, y, v) = (numbers(n * d, 1), numbers(m * d, 2), numbers(m * d, 3));
            x[0] = f32::NAN;
            for &(name, product) in &products {
                for (scale, softmax) in [(0.25, true), (0.5, false)] {
                    let mut want = vec![0.0; heads * n * m];
                    let mut got = vec![9.0; heads * n * m];
                    scores_body(&x, &y, &mut want, dims, scale, softmax);
                    scores_blocked_body(&x, &y, &mut got, dims, scale, softmax, product);
                    close(got, want, &format!("{name}: scores"));
                }
                if name == "tiles" && !dims.d_h().is_multiple_of(L) {
                    continue; // apply_f32 takes the portable kernel then
                }
                let mut a = vec![0.0; heads * n * m];
                scores_body(&x, &y, &mut a, dims, 0.25, true);
                for scale in [1.0, 0.5] {
                    let mut want = vec![0.0; n * d];
                    let mut got = vec![9.0; n * d];
                    apply_body(&a, &v, &mut want, dims, scale);
                    apply_blocked_body(&a, &v, &mut got, dims, scale, product);
                    close(got, want, &format!("{name}: A V"));
                }
            }
            if tile::available() && dims.d_h().is_multiple_of(L) {
                let mut a = vec![0.0; heads * n * m];
                scores_body(&x, &y, &mut a, dims, 0.25, true);
                let x_rows = numbers(n * d, 4);
                for scale in [1.0, 0.5] {
                    let mut want = vec![0.0; m * d];
                    let mut got = vec![9.0; m * d];
                    apply_t_body(&a, &x_rows, &mut want, dims, scale);
                    apply_t_tiled_body(&a, &x_rows, &mut got, dims, scale);
                    close(got, want, "tiles: A^T X");
                }
            }
        }
    }
}
