//! A fused linear layer for flex: y = x W + b as one matrix product into a fresh buffer that
//! starts as the bias rows, and its backward as two products and a column sum (issue 12).
//!
//! Flex runs Burn's linear as a matmul whose output buffer is allocated zeroed as bytes and
//! then copied once more into an aligned one (`FlexTensor::empty`: about 10% of a training
//! step), then adds the bias in a second pass; the backward transposes the weight and the
//! input into strided views for two more such matmuls. Here every product is one `gemm` call
//! that reads the operands through their strides and writes into a `Vec<f32>` that becomes the
//! tensor's storage as it is.
//!
//! Dimension key: `R` rows (tokens of every sample), `I` input features, `O` output features.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Shape, Tensor};

use super::view::View;
use super::{Execution, on_flex, owned_f32};

/// `linear` on `[R, I]` rows: the fused product on flex under [`Execution::Kernels`] when the layer has a bias,
/// Burn's `Linear::forward` otherwise.
///
/// # Shapes
/// - x: `[R, I]`
/// - output: `[R, O]`
pub fn linear_2d(linear: &burn::nn::Linear, x: Tensor<2>, exec: Execution) -> Tensor<2> {
    match &linear.bias {
        Some(bias) if exec.kernels() && on_flex(&x.device()) => {
            Tensor::from_dispatch(<Dispatch as FusedLinearOps>::fused_linear(
                x.into_dispatch(),
                linear.weight.val().into_dispatch(),
                bias.val().into_dispatch(),
            ))
        }
        _ => linear.forward(x),
    }
}

/// The linear layer's operations this module adds to Burn's backends.
#[backend_extension(Flex, Autodiff)]
pub trait FusedLinearOps: Backend {
    /// y = x W + b, x `[R, I]`, W `[I, O]`, b `[O]`.
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// dL/dx = dL/dy W^T, `[R, I]`.
    fn fused_linear_grad_x(weight: FloatTensor<Self>, grad: FloatTensor<Self>)
    -> FloatTensor<Self>;
    /// dL/dW = x^T dL/dy, `[I, O]`.
    fn fused_linear_grad_weight(x: FloatTensor<Self>, grad: FloatTensor<Self>)
    -> FloatTensor<Self>;
    /// dL/db = the column sums of dL/dy, `[O]`.
    fn fused_linear_grad_bias(grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Products below this many multiply-adds run on one core (gemm's threads cost more than
/// they save on them; flex's threshold).
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_MACS: usize = 192 * 192 * 192;

/// `out` = `init` + a b, `out` row-major `[a.rows, b.cols]`, `init` true when `out` already
/// holds the addend (the bias rows), false to overwrite it.
fn gemm_into(out: &mut [f32], init: bool, a: &View, b: &View) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "gemm_into: inner dimensions");
    assert_eq!(out.len(), m * n, "gemm_into: output size");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !init {
            out.fill(0.0);
        }
        return;
    }
    #[cfg(target_arch = "wasm32")]
    if a.col_stride == 1 && b.col_stride == 1 && b.row_stride as usize >= n {
        return blocked_product(out, n, init, a, b);
    }
    #[cfg(not(target_arch = "wasm32"))]
    let parallelism = match m * n * k >= PARALLEL_MACS {
        true => gemm::Parallelism::Rayon(0),
        false => gemm::Parallelism::None,
    };
    #[cfg(target_arch = "wasm32")]
    let parallelism = gemm::Parallelism::None;
    // SAFETY: every index gemm reads, i * row_stride + j * col_stride for i < rows and j < cols,
    // lies inside the tensor's storage (Layout's invariant, from its start offset); `out` holds
    // m * n elements (asserted), written at row stride n.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            init,
            a.data.as_ptr(),
            a.col_stride,
            a.row_stride,
            b.data.as_ptr(),
            b.col_stride,
            b.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// a b, plus the bias row on every row when there is one, as a new `[a.rows, b.cols]` buffer.
///
/// Natively, where the CPU has AVX2 and FMA and b's columns are a whole number of 8-wide
/// pieces (every product of the model's linear layers but the image tokenizer's input
/// gradient), [`fresh_product`]'s register tiles: no packing of the operands, which at K = 64
/// costs gemm about as much as the product; the bias added as each tile is stored instead of
/// written first and read back; a buffer not zeroed first. b's rows are copied into a
/// contiguous `[K, C]` first when its columns are not adjacent (W^T in the input's gradient:
/// O x I numbers, small next to the product). [`gemm_into`] otherwise.
fn product(a: &View, b: &View, bias: Option<&[f32]>) -> Vec<f32> {
    #[cfg(not(target_arch = "wasm32"))]
    if super::tile::available() && b.cols.is_multiple_of(8) {
        use super::tile::{Addend, fresh_product};
        let addend = bias.map_or(Addend::Nothing, Addend::Row);
        if b.col_stride == 1 {
            return fresh_product(addend, 1.0, a, b);
        }
        let (rs, cs) = (b.row_stride as usize, b.col_stride as usize);
        let rows: Vec<f32> = (0..b.rows)
            .flat_map(|i| (0..b.cols).map(move |j| b.data[i * rs + j * cs]))
            .collect();
        return fresh_product(
            addend,
            1.0,
            a,
            &View::row_major(&rows, b.rows, b.cols, b.cols),
        );
    }
    let mut out = Vec::with_capacity(a.rows * b.cols);
    match bias {
        Some(bias) => (0..a.rows).for_each(|_| out.extend_from_slice(bias)),
        None => out.resize(a.rows * b.cols, 0.0),
    }
    gemm_into(&mut out, bias.is_some(), a, b);
    out
}

/// Rows of `out` per register block of [`blocked_product`].
const BLOCK_ROWS: usize = 2;

/// Four-lane column groups of `out` per register block of [`blocked_product`] (16 columns).
const BLOCK_GROUPS: usize = 4;

/// `out` = `init` + a b for row-major operands (`a.col_stride` and `b.col_stride` 1, b's rows
/// not overlapping), out's row i at `i * out_stride`, in blocks of 2 rows x 16 columns of `out`
/// held in eight 4-lane registers over the whole inner dimension: each step loads four 4-wide
/// pieces of a row of b and broadcasts two numbers of a, for 32 multiply-adds. Columns past the
/// last whole 16 go in blocks of 8, then 4, then one at a time; a last odd row goes alone.
///
/// The browser's product (wasm32 SIMD128, one thread): gemm's SIMD128 kernel packs both
/// operands on every call and ran at about 6 GFLOP/s on the page's products (rows 8-82, inner
/// and outer 8-256); this reads them in place. 2 x 16 over the earlier 4 x 8 (the same eight
/// accumulators, two broadcasts per step instead of four) with the loads unchecked (bounds
/// asserted once per call): 20-30 GFLOP/s instead of 9-18 in Chromium here on those shapes.
/// Elsewhere the same code runs on [`Lanes`]' scalar stand-in, so native tests check it.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(super) fn blocked_product(out: &mut [f32], out_stride: usize, init: bool, a: &View, b: &View) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(a.col_stride == 1 && b.col_stride == 1 && b.row_stride as usize >= n);
    assert!(out_stride >= n, "blocked_product: out's rows overlap");
    assert_eq!(k, b.rows, "blocked_product: inner dimensions");
    if m == 0 || n == 0 {
        return;
    }
    let (a_stride, b_stride) = (a.row_stride as usize, b.row_stride as usize);
    assert!(
        (m - 1) * out_stride + n <= out.len(),
        "blocked_product: out too short"
    );
    if k == 0 {
        if !init {
            out.chunks_mut(out_stride)
                .take(m)
                .for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    assert!((m - 1) * a_stride + k <= a.data.len() && (k - 1) * b_stride + n <= b.data.len());
    let operands = Operands {
        a: a.data.as_ptr(),
        a_stride,
        b: b.data.as_ptr(),
        b_stride,
        k,
        out: out.as_mut_ptr(),
        out_stride,
        init,
    };
    // SAFETY: every block reads a's rows i < m at columns < k, b's rows < k at columns < n and
    // writes out's rows i < m at columns < n: inside the three slices by the asserts above.
    unsafe {
        let mut i = 0;
        while i + BLOCK_ROWS <= m {
            operands.row_band::<BLOCK_ROWS>(i, n);
            i += BLOCK_ROWS;
        }
        if i < m {
            operands.row_band::<1>(i, n);
        }
    }
}

/// [`blocked_product`]'s operands as raw pointers with their row strides (columns adjacent).
struct Operands {
    a: *const f32,
    a_stride: usize,
    b: *const f32,
    b_stride: usize,
    /// The inner dimension, at least 1.
    k: usize,
    out: *mut f32,
    out_stride: usize,
    /// `out` holds the addend (true) or is overwritten (false).
    init: bool,
}

impl Operands {
    /// Out's rows `i..i + R`, every column `< n`: blocks of 16 columns, then 8, then 4, then
    /// single columns.
    ///
    /// # Safety
    /// Rows `i..i + R` of a and out, the k rows of b and columns `< n` of b and out lie inside
    /// the buffers.
    #[inline(always)]
    unsafe fn row_band<const R: usize>(&self, i: usize, n: usize) {
        let mut j = 0;
        // SAFETY: every block below covers rows i..i + R and columns j..j + width <= n.
        unsafe {
            while j + 4 * BLOCK_GROUPS <= n {
                self.block::<R, BLOCK_GROUPS>(i, j);
                j += 4 * BLOCK_GROUPS;
            }
            if j + 8 <= n {
                self.block::<R, 2>(i, j);
                j += 8;
            }
            if j + 4 <= n {
                self.block::<R, 1>(i, j);
                j += 4;
            }
            for j in j..n {
                for r in i..i + R {
                    let dot = (0..self.k).fold(0.0, |sum, kk| {
                        sum + *self.a.add(r * self.a_stride + kk)
                            * *self.b.add(kk * self.b_stride + j)
                    });
                    let cell = self.out.add(r * self.out_stride + j);
                    *cell = if self.init { *cell + dot } else { dot };
                }
            }
        }
    }

    /// Out's rows `i..i + R`, columns `j..j + 4 G`, held in `R x G` four-lane registers over
    /// the whole inner dimension.
    ///
    /// # Safety
    /// As [`Operands::row_band`], for columns `j..j + 4 G`.
    #[inline(always)]
    unsafe fn block<const R: usize, const G: usize>(&self, i: usize, j: usize) {
        // SAFETY: the caller's bounds.
        unsafe {
            let out = self.out.add(i * self.out_stride + j);
            let mut acc = [[Lanes::splat(0.0); G]; R];
            if self.init {
                for (r, acc_row) in acc.iter_mut().enumerate() {
                    for (g, lanes) in acc_row.iter_mut().enumerate() {
                        *lanes = Lanes::load(out.add(r * self.out_stride + 4 * g));
                    }
                }
            }
            let a = self.a.add(i * self.a_stride);
            for kk in 0..self.k {
                let b_row = self.b.add(kk * self.b_stride + j);
                let w: [Lanes; G] = std::array::from_fn(|g| Lanes::load(b_row.add(4 * g)));
                for (r, acc_row) in acc.iter_mut().enumerate() {
                    let x = Lanes::splat_from(a.add(r * self.a_stride + kk));
                    for (lanes, w) in acc_row.iter_mut().zip(&w) {
                        *lanes = lanes.mul_add(x, *w);
                    }
                }
            }
            for (r, acc_row) in acc.iter().enumerate() {
                for (g, lanes) in acc_row.iter().enumerate() {
                    lanes.store(out.add(r * self.out_stride + 4 * g));
                }
            }
        }
    }
}

/// Four f32 lanes: a WebAssembly SIMD128 register on wasm32, an array elsewhere (the same
/// arithmetic, a * b then + c without fusing, so both give the same numbers).
#[derive(Clone, Copy)]
#[cfg(target_arch = "wasm32")]
struct Lanes(core::arch::wasm32::v128);

#[cfg(target_arch = "wasm32")]
impl Lanes {
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Lanes(core::arch::wasm32::f32x4_splat(x))
    }
    /// The number at `from` in every lane (one `v128.load32_splat`).
    ///
    /// # Safety
    /// `from` is readable.
    #[inline(always)]
    unsafe fn splat_from(from: *const f32) -> Self {
        // SAFETY: the caller's.
        Lanes(unsafe { core::arch::wasm32::v128_load32_splat(from.cast::<u32>()) })
    }
    /// The four numbers from `from` on (unaligned).
    ///
    /// # Safety
    /// Four numbers from `from` on are readable.
    #[inline(always)]
    unsafe fn load(from: *const f32) -> Self {
        // SAFETY: the caller's; v128_load reads unaligned.
        Lanes(unsafe { core::arch::wasm32::v128_load(from.cast()) })
    }
    /// self + x * w.
    #[inline(always)]
    fn mul_add(self, x: Self, w: Self) -> Self {
        use core::arch::wasm32::{f32x4_add, f32x4_mul};
        Lanes(f32x4_add(self.0, f32x4_mul(x.0, w.0)))
    }
    /// Writes the four lanes from `to` on (unaligned).
    ///
    /// # Safety
    /// Four numbers from `to` on are writable.
    #[inline(always)]
    unsafe fn store(self, to: *mut f32) {
        // SAFETY: the caller's; v128_store writes unaligned.
        unsafe { core::arch::wasm32::v128_store(to.cast(), self.0) }
    }
}

#[derive(Clone, Copy)]
#[cfg(not(target_arch = "wasm32"))]
struct Lanes([f32; 4]);

#[cfg(not(target_arch = "wasm32"))]
#[cfg_attr(not(test), allow(dead_code))]
impl Lanes {
    fn splat(x: f32) -> Self {
        Lanes([x; 4])
    }
    unsafe fn splat_from(from: *const f32) -> Self {
        // SAFETY: the caller's.
        Lanes([unsafe { *from }; 4])
    }
    unsafe fn load(from: *const f32) -> Self {
        // SAFETY: the caller's.
        Lanes(unsafe { std::ptr::read_unaligned(from.cast::<[f32; 4]>()) })
    }
    fn mul_add(self, x: Self, w: Self) -> Self {
        Lanes(std::array::from_fn(|l| self.0[l] + x.0[l] * w.0[l]))
    }
    unsafe fn store(self, to: *mut f32) {
        // SAFETY: the caller's.
        unsafe { std::ptr::write_unaligned(to.cast::<[f32; 4]>(), self.0) }
    }
}

impl FusedLinearOps for Flex {
    fn fused_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let bias_1d = bias.dtype() == DType::F32 && bias.layout().shape().num_dims() == 1;
        match (View::of(&x), View::of(&weight), bias_1d) {
            (Some(xv), Some(wv), true) if xv.cols == wv.rows && bias.shape()[0] == wv.cols => {
                let bias = super::contiguous(bias);
                let b = &bias.storage::<f32>()[..wv.cols];
                let out = product(&xv, &wv, Some(b));
                owned_f32(out, Shape::new([xv.rows, wv.cols]))
            }
            _ => Flex::linear(x, weight, Some(bias)),
        }
    }

    fn fused_linear_grad_x(weight: FlexTensor, grad: FlexTensor) -> FlexTensor {
        match (View::of(&weight), View::of(&grad)) {
            (Some(wv), Some(gv)) if gv.cols == wv.cols => {
                let out = product(&gv, &wv.t(), None);
                owned_f32(out, Shape::new([gv.rows, wv.rows]))
            }
            _ => Flex::linear_x_backward(weight, grad),
        }
    }

    fn fused_linear_grad_weight(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        match (View::of(&x), View::of(&grad)) {
            (Some(xv), Some(gv)) if xv.rows == gv.rows => {
                let out = product(&xv.t(), &gv, None);
                owned_f32(out, Shape::new([xv.cols, gv.cols]))
            }
            _ => Flex::linear_weight_backward(x, grad),
        }
    }

    fn fused_linear_grad_bias(grad: FlexTensor) -> FlexTensor {
        match View::of(&grad) {
            Some(gv) => {
                let mut out = vec![0.0f32; gv.cols];
                for i in 0..gv.rows {
                    let start = i * gv.row_stride as usize;
                    if gv.col_stride == 1 {
                        // A whole row at once: the additions vectorise.
                        let row = &gv.data[start..start + gv.cols];
                        out.iter_mut().zip(row).for_each(|(o, g)| *o += g);
                    } else {
                        for (j, o) in out.iter_mut().enumerate() {
                            *o += gv.data[start + j * gv.col_stride as usize];
                        }
                    }
                }
                owned_f32(out, Shape::new([gv.cols]))
            }
            None => Flex::linear_bias_backward(grad),
        }
    }
}

impl<B: Backend + FusedLinearOps, C: CheckpointStrategy> FusedLinearOps for Autodiff<B, C> {
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        /// Keeps x for the weight's gradient and W for the input's, each only when needed.
        #[derive(Debug)]
        struct FusedLinear;

        impl<B: Backend + FusedLinearOps> Backward<B, 3> for FusedLinear {
            type State = (Option<NodeId>, Option<NodeId>);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_weight, node_bias] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x_state, weight_state) = ops.state;
                if let (Some(node), Some(id)) = (node_x, weight_state) {
                    let weight = checkpointer.retrieve_node_output(id);
                    grads.register::<B>(node.id, B::fused_linear_grad_x(weight, grad.clone()));
                }
                if let (Some(node), Some(id)) = (node_weight, x_state) {
                    let x = checkpointer.retrieve_node_output(id);
                    grads.register::<B>(node.id, B::fused_linear_grad_weight(x, grad.clone()));
                }
                if let Some(node) = node_bias {
                    grads.register::<B>(node.id, B::fused_linear_grad_bias(grad));
                }
            }
        }

        let (x_tracked, weight_tracked) = (x.is_tracked(), weight.is_tracked());
        match FusedLinear
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                // x is needed only for the weight's gradient, W only for x's.
                let x_state = weight_tracked.then(|| prep.checkpoint(&x));
                let weight_state = x_tracked.then(|| prep.checkpoint(&weight));
                prep.finish(
                    (x_state, weight_state),
                    B::fused_linear(
                        x.into_primitive(),
                        weight.into_primitive(),
                        bias.into_primitive(),
                    ),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_linear(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }

    // The three below serve only a second derivative, which the model never takes: Burn's
    // composites, differentiable in turn.
    fn fused_linear_grad_x(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::float_matmul(grad, Self::float_swap_dims(weight, 0, 1))
    }

    fn fused_linear_grad_weight(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::float_matmul(Self::float_swap_dims(x, 0, 1), grad)
    }

    fn fused_linear_grad_bias(grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let outputs = grad.shape()[1];
        Self::float_reshape(Self::float_sum_dim(grad, 0), Shape::new([outputs]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{close, close_within, numbers, values};
    use burn::module::Param;
    use burn::nn::LinearConfig;
    use burn::tensor::{Device, Distribution, TensorData};

    /// y, dL/dx, dL/dW and dL/db of the fused layer against Burn's `Linear::forward`, for the
    /// input `x` (`[rows, inputs]` on flex with autodiff; may be a view) and the loss
    /// sum(y * weights).
    fn check(x: Tensor<2>, outputs: usize) {
        let [rows, inputs] = x.dims();
        let device = x.device();
        let layer = LinearConfig::new(inputs, outputs).init(&device);
        // A bias that is not zero, so a missing bias term shows.
        let layer = burn::nn::Linear {
            bias: Some(Param::from_tensor(Tensor::random(
                [outputs],
                Distribution::Normal(0.0, 1.0),
                &device,
            ))),
            ..layer
        };
        let weights = Tensor::<2>::random([rows, outputs], Distribution::Normal(0.0, 1.0), &device);
        let run = |exec: Execution| {
            let x = x.clone().require_grad();
            let y = linear_2d(&layer, x.clone(), exec);
            let grads = (y.clone() * weights.clone()).sum().backward();
            let bias = layer.bias.as_ref().expect("bias").val();
            (
                values(y),
                x.grad(&grads).map(values).unwrap_or_default(),
                values(layer.weight.val().grad(&grads).expect("weight grad")),
                values(bias.grad(&grads).expect("bias grad")),
            )
        };
        let (fused, burn) = (run(Execution::Kernels), run(Execution::BurnOps));
        close(fused.0, burn.0, "y");
        close(fused.1, burn.1, "dx");
        // dW sums over every row (2816 here): two orders of summation then differ by up to a
        // few eps times the sum of the terms' magnitudes, which cancellation can make far
        // larger than dW itself, so its tolerance grows with that sum.
        let magnitudes = x.abs().transpose().matmul(weights.abs()); // [inputs, outputs]
        let slack: Vec<f32> = values(magnitudes).iter().map(|m| 1e-6 * m).collect();
        close_within(fused.2, burn.2, &slack, "dW");
        close(fused.3, burn.3, "db");
    }

    fn random(rows: usize, cols: usize) -> Tensor<2> {
        let device = Device::flex().autodiff();
        Tensor::random([rows, cols], Distribution::Normal(0.0, 2.0), &device)
    }

    #[test]
    fn fused_linear_and_its_gradients_match_burns() {
        // The model's shapes (tokens x d -> d, 4d, 1; the audio tokenizer), large enough to be
        // split over the cores, a single row and a single feature.
        for (rows, inputs, outputs) in [
            (2816, 64, 64),
            (2816, 64, 256),
            (1792, 448, 64),
            (44, 64, 1),
            (1, 5, 3),
            (7, 1, 2),
        ] {
            check(random(rows, inputs), outputs);
        }
        // A transposed view is read through its strides.
        check(random(9, 6).transpose(), 4);
        // No rows at all.
        check(Tensor::zeros([0, 3], &Device::flex().autodiff()), 2);
    }

    #[test]
    fn large_magnitudes_and_nan_come_through_as_in_burns() {
        let data = vec![1e30f32, -1e30, 0.0, f32::NAN, 3.0, -2.0];
        let device = Device::flex().autodiff();
        check(Tensor::from_data(TensorData::new(data, [3, 2]), &device), 3);
    }

    #[test]
    fn without_autodiff_the_fused_layer_gives_burns_values() {
        let device = Device::flex();
        let layer = LinearConfig::new(5, 3).init(&device);
        let x = Tensor::<2>::random([4, 5], Distribution::Normal(0.0, 1.0), &device);
        close(
            values(linear_2d(&layer, x.clone(), Execution::Kernels)),
            values(layer.forward(x)),
            "y",
        );
    }

    /// The browser's register-blocked product against a plain triple loop: whole and partial
    /// blocks of rows and of 16, 8 and 4 columns, rows of a and b read through strides wider
    /// than the row, out written at a stride wider than its rows (the numbers between them
    /// untouched), with and without an addend already in `out`, and NaN and 1e30 passing
    /// through as in a product.
    #[test]
    fn the_blocked_product_is_the_matrix_product() {
        for (m, k, n) in [
            (1, 1, 1),
            (4, 3, 8),
            (5, 2, 9),
            (17, 64, 64),
            (82, 64, 256),
            (6, 256, 1),
            (3, 16, 13),
            (3, 16, 29),
            (2, 5, 16),
            (7, 3, 4),
            (0, 4, 8),
            (2, 0, 8),
        ] {
            // a's rows lie 3 apart beyond their width, b's 5 apart, out's 2.
            let (a_stride, b_stride, out_stride) = (k + 3, n + 5, n + 2);
            let mut a_data = numbers(m * a_stride, 1);
            let b_data = numbers(k.max(1) * b_stride, 2);
            if m * k > 2 {
                a_data[1] = f32::NAN;
                a_data[2] = 1e30;
            }
            let a = View::row_major(&a_data, m, k, a_stride);
            let b = View::row_major(&b_data, k, n, b_stride);
            for init in [false, true] {
                let addend = numbers(m * out_stride, 3);
                let mut got = if init {
                    addend.clone()
                } else {
                    vec![7.0; m * out_stride]
                };
                blocked_product(&mut got, out_stride, init, &a, &b);
                for i in 0..m {
                    for j in 0..out_stride {
                        let g = got[i * out_stride + j];
                        let untouched = if init {
                            addend[i * out_stride + j]
                        } else {
                            7.0
                        };
                        if j >= n {
                            assert_eq!(g, untouched, "({m}, {k}, {n}): [{i}, {j}] beyond the row");
                            continue;
                        }
                        let dot: f32 = (0..k)
                            .map(|kk| a.data[i * a_stride + kk] * b.data[kk * b_stride + j])
                            .sum();
                        let want = if init { untouched + dot } else { dot };
                        let same = (want.is_nan() && g.is_nan())
                            || (g - want).abs() <= 1e-4 * (1.0 + want.abs());
                        assert!(
                            same,
                            "({m}, {k}, {n}) init {init}: [{i}, {j}] {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
