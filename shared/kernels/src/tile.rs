//! The native register-tile product of the linear layers and the attention kernels (issue 12):
//! out = alpha a b + an addend (nothing, what `out` holds, or a bias row), b row-major with a
//! multiple of 8 columns, a read through any strides, in tiles of up to 6 rows x 16 columns of
//! `out` held in twelve AVX2 registers over the inner dimension. Each step of the inner loop
//! loads two 8-wide pieces of a row of b and broadcasts six numbers of a for 12 fused
//! multiply-adds (the shape of gemm's own f32 microkernel), with no packing: at the model's
//! sizes (inner dimension 16-448, except a weight's gradient) gemm's packing and per-call
//! set-up cost about as much as the products. A linear layer's output is a new buffer written
//! once ([`fresh_product`]: bias added as each tile is stored, not zeroed first), its rows split
//! over the cores.
//!
//! Measured alone on this project's 2-core VM (AMD EPYC, AVX2 + FMA), both cores, best of 3,
//! microseconds: linear forward [2816, 64] x [64, 256] 873 against gemm's 982, [2816, 64] x
//! [64, 64] 212 against 237; input gradient [2816, 256] x [256, 64] 834 against 769; weight
//! gradient [64, 2816] x [2816, 256] 1258 against 1483 (about 105 GFLOP/s but the last).
//!
//! Without AVX2 and FMA the same product runs as a plain loop; the attention kernels keep
//! their own portable bodies for that case, and the linear layers call gemm.
//!
//! Dimension key: `R` rows of a and out, `K` the inner dimension, `C` columns of b and out.

use super::view::View;

/// Rows of `out` per register tile.
const TILE_ROWS: usize = 6;

/// The longest run of the inner dimension summed in registers before it is added to `out`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const INNER_CHUNK: usize = 256;

/// Whether [`tile_product`] runs its AVX2 tiles on this CPU (the callers choose their kernel by
/// it).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::avx2_fma()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// What [`tile_product`] adds to alpha a b.
#[derive(Clone, Copy, Debug)]
pub(super) enum Addend<'a> {
    /// Nothing: `out` is overwritten (what it held is never read).
    Nothing,
    /// What `out` held.
    Out,
    /// The same row (C numbers) to every row: a linear layer's bias.
    Row(&'a [f32]),
}

/// `out` = alpha a b + `addend`; out's row i at `i * out_stride`, columns adjacent.
///
/// # Shapes
/// - a: `[R, K]`, any strides; b: `[K, C]`, `b.col_stride` 1, C a multiple of 8
/// - out: `[R, C]` at row stride `out_stride`
///
/// # Panics
/// When b's columns are not adjacent or not a multiple of 8, the inner dimensions differ, or a
/// view, `out` or the addend row is shorter than its shape and strides say.
pub(super) fn tile_product(
    out: &mut [f32],
    out_stride: usize,
    addend: Addend,
    alpha: f32,
    a: &View,
    b: &View,
) {
    // SAFETY: `out` is valid for reads and writes of its `len` initialised numbers.
    unsafe { product_raw(out.as_mut_ptr(), out.len(), out_stride, addend, alpha, a, b) }
}

/// alpha a b + `addend` as a new contiguous `[R, C]` buffer, written once (not zeroed first:
/// zeroing a linear layer's output cost about a tenth of its product), its rows split over the
/// cores in whole tiles when the product is large.
///
/// # Shapes
/// - a: `[R, K]`, any strides; b: `[K, C]` as for [`tile_product`]
/// - output: `[R, C]`, contiguous
///
/// # Panics
/// As [`tile_product`], and for `Addend::Out` (a new buffer holds nothing to add).
pub(super) fn fresh_product(addend: Addend, alpha: f32, a: &View, b: &View) -> Vec<f32> {
    assert!(
        !matches!(addend, Addend::Out),
        "fresh_product: a new buffer holds nothing to add"
    );
    let (rows, cols) = (a.rows, b.cols);
    let len = rows * cols;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    // SAFETY (each call below): the piece is valid for writes of its `len()` numbers, and with
    // an addend other than `Out` none of it is read.
    {
        use rayon::prelude::*;
        let threads = rayon::current_num_threads();
        let a_rs = a.row_stride.max(0) as usize;
        if rows * a.cols * cols >= PARALLEL_MACS && threads > 1 && cols > 0 {
            // About four pieces per core, so a core that starts late still finds work.
            let piece_rows = rows.div_ceil(4 * threads).div_ceil(TILE_ROWS) * TILE_ROWS;
            spare
                .par_chunks_mut(piece_rows * cols)
                .enumerate()
                .for_each(|(p, piece)| {
                    let a_p = View {
                        data: &a.data[p * piece_rows * a_rs..],
                        rows: piece.len() / cols,
                        ..*a
                    };
                    let out_p = piece.as_mut_ptr().cast::<f32>();
                    unsafe { product_raw(out_p, piece.len(), cols, addend, alpha, &a_p, b) };
                });
        } else {
            let out_p = spare.as_mut_ptr().cast::<f32>();
            unsafe { product_raw(out_p, len, cols, addend, alpha, a, b) };
        }
    }
    // SAFETY: the product wrote every one of the R x C numbers (every cell of every tile, or
    // of the plain loop; the pieces together cover all rows).
    unsafe { out.set_len(len) };
    out
}

/// Products below this many multiply-adds run on one core (splitting them costs more than it
/// saves; the threshold of the linear layers' gemm calls).
const PARALLEL_MACS: usize = 192 * 192 * 192;

/// [`tile_product`] on `out_len` numbers from `out`: every cell of the `[R, C]` product is
/// written; a cell is read first only for `Addend::Out`.
///
/// # Safety
/// `out` is valid for writes of `out_len` numbers, and for reads of them (initialised) when
/// the addend is `Out`.
unsafe fn product_raw(
    out: *mut f32,
    out_len: usize,
    out_stride: usize,
    addend: Addend,
    alpha: f32,
    a: &View,
    b: &View,
) {
    let (rows, inner, cols) = (a.rows, a.cols, b.cols);
    if let Addend::Row(row) = addend {
        assert!(row.len() >= cols, "tile_product: addend row too short");
    }
    assert_eq!(inner, b.rows, "tile_product: inner dimensions");
    assert!(
        b.col_stride == 1 && cols.is_multiple_of(8),
        "tile_product: b needs adjacent columns, a multiple of 8"
    );
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        a.row_stride >= 0 && a.col_stride >= 0 && b.row_stride >= 0,
        "tile_product: negative strides"
    );
    let (a_rs, a_cs, b_rs) = (
        a.row_stride as usize,
        a.col_stride as usize,
        b.row_stride as usize,
    );
    assert!(
        (rows - 1) * out_stride + cols <= out_len,
        "tile_product: out too short"
    );
    if inner > 0 {
        assert!(
            (rows - 1) * a_rs + (inner - 1) * a_cs < a.data.len(),
            "tile_product: a too short"
        );
        assert!(
            (inner - 1) * b_rs + cols <= b.data.len(),
            "tile_product: b too short"
        );
    }
    #[cfg(target_arch = "x86_64")]
    if available() {
        let shape = Shape {
            rows,
            inner,
            cols,
            a_rs,
            a_cs,
            b_rs,
            out_stride,
        };
        // SAFETY: the CPU has AVX2 and FMA (checked); every index the tiles read or write is
        // inside the operands (asserted above from the shapes and strides); `out` is readable
        // where the addend is `Out` (the caller's contract).
        unsafe { avx2::product(out, addend, alpha, a.data.as_ptr(), b.data.as_ptr(), shape) };
        return;
    }
    for i in 0..rows {
        for j in 0..cols {
            let dot: f32 = (0..inner)
                .map(|kk| a.data[i * a_rs + kk * a_cs] * b.data[kk * b_rs + j])
                .sum();
            // SAFETY: i * out_stride + j < out_len (asserted above); read only for `Out`.
            unsafe {
                let cell = out.add(i * out_stride + j);
                let add = match addend {
                    Addend::Nothing => 0.0,
                    Addend::Out => cell.read(),
                    Addend::Row(row) => row[j],
                };
                cell.write(alpha * dot + add);
            }
        }
    }
}

/// Sizes and strides of one product (elements).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Shape {
    rows: usize,
    inner: usize,
    cols: usize,
    a_rs: usize,
    a_cs: usize,
    b_rs: usize,
    out_stride: usize,
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Addend, INNER_CHUNK, Shape, TILE_ROWS};
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };

    /// The whole product, tile by tile: column pieces of 16 (8 for the last when C is an odd
    /// number of 8s), rows in sixes and then the rest; an inner dimension longer than
    /// [`INNER_CHUNK`] in chunks, each chunk's sums added to the previous ones in `out` (the
    /// rounding error of a sum then grows with the chunk's length, not K's, as in gemm: a
    /// weight's gradient sums over all 2816 tokens of a batch).
    ///
    /// # Safety
    /// AVX2 and FMA; `out`, `a` and `b` valid for every index `shape` reaches.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn product(
        out: *mut f32,
        addend: Addend,
        alpha: f32,
        a: *const f32,
        b: *const f32,
        s: Shape,
    ) {
        let mut k0 = 0;
        loop {
            let inner = INNER_CHUNK.min(s.inner - k0);
            let chunk = Shape { inner, ..s };
            // After the first chunk, the sums so far are in `out`.
            let addend = if k0 == 0 { addend } else { Addend::Out };
            // SAFETY: the chunk's columns of a and rows of b are inside the product.
            unsafe {
                let (a, b) = (a.add(k0 * s.a_cs), b.add(k0 * s.b_rs));
                chunk_product(out, addend, alpha, a, b, chunk);
            }
            k0 += inner;
            if k0 >= s.inner {
                break;
            }
        }
    }

    /// [`product`] over one chunk of the inner dimension.
    ///
    /// # Safety
    /// As [`product`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn chunk_product(
        out: *mut f32,
        addend: Addend,
        alpha: f32,
        a: *const f32,
        b: *const f32,
        s: Shape,
    ) {
        let mut j0 = 0;
        while j0 < s.cols {
            let wide = s.cols - j0 >= 16;
            let mut i0 = 0;
            while i0 < s.rows {
                let rows = TILE_ROWS.min(s.rows - i0);
                // SAFETY: the tile's rows i0.., columns j0.. are inside the product.
                unsafe {
                    let out = out.add(i0 * s.out_stride + j0);
                    let (a, b) = (a.add(i0 * s.a_rs), b.add(j0));
                    // The addend of the tile's first row, and whether each row has its own.
                    let (addend, own) = match addend {
                        Addend::Nothing => (std::ptr::null(), false),
                        Addend::Out => (out.cast_const(), true),
                        Addend::Row(row) => (row.as_ptr().add(j0), false),
                    };
                    let t = Tile {
                        out,
                        addend,
                        own,
                        alpha,
                        a,
                        b,
                    };
                    match (rows, wide) {
                        (6, true) => tile::<6, 2>(t, s),
                        (5, true) => tile::<5, 2>(t, s),
                        (4, true) => tile::<4, 2>(t, s),
                        (3, true) => tile::<3, 2>(t, s),
                        (2, true) => tile::<2, 2>(t, s),
                        (1, true) => tile::<1, 2>(t, s),
                        (6, false) => tile::<6, 1>(t, s),
                        (5, false) => tile::<5, 1>(t, s),
                        (4, false) => tile::<4, 1>(t, s),
                        (3, false) => tile::<3, 1>(t, s),
                        (2, false) => tile::<2, 1>(t, s),
                        _ => tile::<1, 1>(t, s),
                    }
                }
                i0 += rows;
            }
            j0 += if wide { 16 } else { 8 };
        }
    }

    /// Where one tile starts in each operand.
    #[derive(Clone, Copy)]
    struct Tile {
        /// The tile's corner in `out`.
        out: *mut f32,
        /// The addend of its first row (null: none).
        addend: *const f32,
        /// Whether the addend has a row per row of `out` (at out's stride), or one row for all.
        own: bool,
        alpha: f32,
        /// The tile's first row of a.
        a: *const f32,
        /// The tile's first column of b.
        b: *const f32,
    }

    /// One tile: `R` rows x `V` 8-wide pieces of `out`.
    ///
    /// The inner loop has no multiplications or checked additions: row r of a is a pointer set
    /// once, and the step's offsets into a and b grow by wrapping additions (the dev profile
    /// checks our crates' arithmetic for overflow, and each check kept the accumulators from
    /// staying in registers).
    ///
    /// # Safety
    /// As [`product`], for the tile's indices.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize, const V: usize>(t: Tile, s: Shape) {
        let Tile {
            out,
            addend,
            own,
            alpha,
            a,
            b,
        } = t;
        let mut acc: [[__m256; V]; R] = [[_mm256_setzero_ps(); V]; R];
        let mut a_rows = [a; R];
        let mut offset = 0usize;
        for a_row in a_rows.iter_mut().skip(1) {
            offset = offset.wrapping_add(s.a_rs);
            *a_row = a.wrapping_add(offset);
        }
        let (mut a_at, mut b_at) = (0usize, 0usize);
        for _ in 0..s.inner {
            // SAFETY: row kk of b's piece and column kk of a's rows are inside the product
            // (a_at = kk a_cs, b_at = kk b_rs).
            unsafe {
                let b_row = b.wrapping_add(b_at);
                let mut w = [_mm256_setzero_ps(); V];
                for (v, w_v) in w.iter_mut().enumerate() {
                    *w_v = _mm256_loadu_ps(b_row.wrapping_add(8 * v));
                }
                for r in 0..R {
                    let x = _mm256_broadcast_ss(&*a_rows[r].wrapping_add(a_at));
                    for v in 0..V {
                        acc[r][v] = _mm256_fmadd_ps(x, w[v], acc[r][v]);
                    }
                }
            }
            a_at = a_at.wrapping_add(s.a_cs);
            b_at = b_at.wrapping_add(s.b_rs);
        }
        let alpha = _mm256_set1_ps(alpha);
        let (mut out_row, mut addend_row) = (out, addend);
        for acc_r in &acc {
            for (v, acc_rv) in acc_r.iter().enumerate() {
                // SAFETY: row r, piece v of the tile is inside `out` and the addend.
                unsafe {
                    let at = out_row.wrapping_add(8 * v);
                    let mut y = _mm256_mul_ps(*acc_rv, alpha);
                    if !addend_row.is_null() {
                        y = _mm256_add_ps(y, _mm256_loadu_ps(addend_row.wrapping_add(8 * v)));
                    }
                    _mm256_storeu_ps(at, y);
                }
            }
            out_row = out_row.wrapping_add(s.out_stride);
            if own {
                addend_row = addend_row.wrapping_add(s.out_stride);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{close, numbers};
    use super::*;

    /// out = alpha a b (+ out) by the definition.
    fn reference(
        out: &mut [f32],
        out_stride: usize,
        addend: Addend,
        alpha: f32,
        a: &View,
        b: &View,
    ) {
        let (a_rs, a_cs, b_rs) = (
            a.row_stride as usize,
            a.col_stride as usize,
            b.row_stride as usize,
        );
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut dot = 0.0f64;
                for kk in 0..a.cols {
                    dot += a.data[i * a_rs + kk * a_cs] as f64 * b.data[kk * b_rs + j] as f64;
                }
                let cell = &mut out[i * out_stride + j];
                let y = (alpha as f64 * dot) as f32;
                *cell = match addend {
                    Addend::Nothing => y,
                    Addend::Out => *cell + y,
                    Addend::Row(row) => row[j] + y,
                };
            }
        }
    }

    #[test]
    fn tiles_match_the_definition_for_every_tile_shape_and_stride() {
        // Rows: whole sixes, each remainder 1-5; columns: 8, 16, 24 (a 16 and an 8), 48;
        // inner 0, 1, the attention's sizes and more than one chunk; a read row-major and
        // transposed; each addend.
        for (rows, inner, cols) in [
            (1, 1, 8),
            (5, 16, 16),
            (6, 16, 24),
            (7, 0, 8),
            (11, 45, 48),
            (44, 16, 48),
            (23, 23, 16),
            (3, 7, 40),
            // Inner dimensions of more than one chunk (a weight's gradient over many tokens).
            (13, 600, 24),
            (6, 512, 16),
        ] {
            for transposed_a in [false, true] {
                let bias = numbers(cols, 6);
                let addends = [
                    (Addend::Nothing, 1.0),
                    (Addend::Out, 0.25),
                    (Addend::Row(&bias), -2.0),
                ];
                for (addend, alpha) in addends {
                    let a_data = numbers(rows * inner + 3, 1);
                    let a = match transposed_a {
                        // a stored as [K, R] and read as its transpose.
                        true => View {
                            data: &a_data,
                            rows,
                            cols: inner,
                            row_stride: 1,
                            col_stride: rows as isize,
                        },
                        false => View::row_major(&a_data, rows, inner, inner),
                    };
                    let b_stride = cols + 5;
                    let b_data = numbers(inner * b_stride, 2);
                    let b = View::row_major(&b_data, inner, cols, b_stride);
                    let out_stride = cols + 3;
                    let start = numbers(rows * out_stride, 3);
                    let (mut got, mut want) = (start.clone(), start.clone());
                    tile_product(&mut got, out_stride, addend, alpha, &a, &b);
                    reference(&mut want, out_stride, addend, alpha, &a, &b);
                    let what =
                        format!("{rows}x{inner}x{cols} transposed {transposed_a} {addend:?}");
                    close(got.clone(), want, &what);
                    // Between rows, out's padding columns are left as they were.
                    for i in 0..rows.saturating_sub(1) {
                        for j in cols..out_stride {
                            assert_eq!(got[i * out_stride + j], start[i * out_stride + j]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nan_in_a_reaches_only_its_row_and_nan_in_b_only_its_column() {
        let (rows, inner, cols) = (7, 5, 16);
        let mut a_data = numbers(rows * inner, 4);
        let mut b_data = numbers(inner * cols, 5);
        a_data[3 * inner + 2] = f32::NAN;
        b_data[4 * cols + 9] = f32::NAN;
        let a = View::row_major(&a_data, rows, inner, inner);
        let b = View::row_major(&b_data, inner, cols, cols);
        let mut out = vec![0.0; rows * cols];
        tile_product(&mut out, cols, Addend::Nothing, 1.0, &a, &b);
        for i in 0..rows {
            for j in 0..cols {
                assert_eq!(out[i * cols + j].is_nan(), i == 3 || j == 9, "({i}, {j})");
            }
        }
    }

    #[test]
    #[should_panic(expected = "multiple of 8")]
    fn columns_not_a_multiple_of_8_are_refused() {
        let data = numbers(12, 0);
        let a = View::row_major(&data, 2, 2, 2);
        let b = View::row_major(&data, 2, 6, 6);
        tile_product(&mut [0.0; 12], 6, Addend::Nothing, 1.0, &a, &b);
    }
}
