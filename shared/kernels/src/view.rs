//! A matrix view over f32 numbers with any non-negative strides: what the products of the
//! linear layers (linear.rs), the register tiles (tile.rs) and the attention kernels
//! (attention/flex.rs) read their operands through, without a copy.

use burn::backend::flex::FlexTensor;
use burn::tensor::DType;

/// A row-major f32 matrix view: element (i, j) at `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: isize,
    pub(crate) col_stride: isize,
}

impl<'a> View<'a> {
    /// `t` as a matrix when it is a 2-D f32 tensor with non-negative strides.
    pub(crate) fn of(t: &'a FlexTensor) -> Option<Self> {
        let layout = t.layout();
        let shape = layout.shape();
        if t.dtype() != DType::F32 || shape.num_dims() != 2 {
            return None;
        }
        let strides = layout.strides();
        let (row_stride, col_stride) = (strides[0], strides[1]);
        if row_stride < 0 || col_stride < 0 {
            return None;
        }
        Some(View {
            data: &t.storage::<f32>()[layout.start_offset()..],
            rows: shape[0],
            cols: shape[1],
            row_stride,
            col_stride,
        })
    }

    /// `rows` x `cols` numbers of `data` with adjacent columns, row i from `i * row_stride`.
    pub(crate) fn row_major(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        View {
            data,
            rows,
            cols,
            row_stride: row_stride as isize,
            col_stride: 1,
        }
    }

    /// The same numbers transposed (no copy).
    pub(crate) fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}
