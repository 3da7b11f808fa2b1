//! A batch on the device: token features, the absence mask and targets.
//!
//! Dimension key: see the crate root (`B`, `M`, `N_i`, `D_i`).

use burn::tensor::{Bool, Device, IndexingUpdateOp, Int, Tensor, TensorData};

use crate::absence::AbsenceMask;
use crate::data::{DataSplit, Targets};
use crate::truth::SampleTruth;

/// Targets on the device.
#[derive(Clone, Debug)]
pub enum BatchTargets {
    /// Class indices. [B]
    Classes(Tensor<1, Int>),
    /// Real values. [B, 1]
    Values(Tensor<2>),
}

/// One batch, ready for [`crate::Model::forward`].
#[derive(Clone, Debug)]
pub struct Batch {
    /// Per modality, the raw tokens. Each `[B, N_i, D_i]`.
    pub inputs: Vec<Tensor<3>>,
    /// 1.0 where the modality is present. [B, M]
    pub available: Tensor<2>,
    /// The same mask on the host (the diversity loss selects rows with it).
    pub available_host: Vec<Vec<bool>>,
    /// Targets, when known.
    pub targets: Option<BatchTargets>,
    /// Each sample's index in its split: with the model's ranking seed and `draw_round`, it
    /// picks the random ranking's scores ([`crate::seeds::ranking_stream`]), so a sample draws
    /// the same scores in any batch or shard.
    pub sample_ids: Vec<usize>,
    /// Which pass over the samples this is: 0 in evaluation, the epoch + 1 in training (each
    /// epoch draws new random-ranking scores).
    pub draw_round: u64,
    /// Each sample's ground truth, where the split has one (the oracle rankings read it).
    pub truth: Option<Vec<SampleTruth>>,
}

/// `indices` split into `parts` contiguous runs whose sizes differ by at most one (the first
/// ones take the remainder): the shards of a batch computed side by side (on a CPU's cores, or
/// on several devices). Empty shards are dropped, so a batch smaller than `parts` has fewer.
pub fn shard(indices: &[usize], parts: usize) -> Vec<&[usize]> {
    let parts = parts.max(1);
    let (base, extra) = (indices.len() / parts, indices.len() % parts);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 0..parts {
        let len = base + usize::from(p < extra);
        if len > 0 {
            out.push(&indices[start..start + len]);
        }
        start += len;
    }
    out
}

/// Which of [`PresentRows`]' two layouts the model computes a modality's rows in: a choice of
/// speed, never of result (the same values to float rounding). One value held by the model
/// (`mgr::Model::with_row_layout`); not part of what a saved model is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RowLayout {
    /// The device's own: masked on GPU backends (bound by kernel launches at these sizes),
    /// gathered on flex (bound by arithmetic).
    #[default]
    Auto,
    /// The present samples' rows alone, on every backend.
    Gathered,
    /// Every sample's rows, the absent ones masked, on every backend.
    Masked,
}

impl RowLayout {
    /// Every layout, in the order `mgr bench --rows` lists them.
    pub const ALL: [RowLayout; 3] = [RowLayout::Auto, RowLayout::Gathered, RowLayout::Masked];

    /// The layout a batch on `device` is computed in: `Auto` resolved to the device's own,
    /// `Gathered` or `Masked` as they are.
    pub fn resolved(self, device: &Device) -> RowLayout {
        match self {
            RowLayout::Auto if crate::kernels::on_flex(device) => RowLayout::Gathered,
            RowLayout::Auto => RowLayout::Masked,
            chosen => chosen,
        }
    }

    /// The layout's name, as `mgr bench --rows` takes it and its JSON reports it.
    pub fn name(self) -> &'static str {
        match self {
            RowLayout::Auto => "auto",
            RowLayout::Gathered => "gathered",
            RowLayout::Masked => "masked",
        }
    }
}

/// The samples of a batch that hold one modality, and where each sample's row sits in a tensor
/// of those samples only.
///
/// An absent modality's content is never used: Eq. 1 replaces its tokens by `E_miss`, and Eq. 3
/// adds `h_u` only where the modality is available (so does L_div, Eq. 4). The tokenizer's
/// projection and the unimodal encoder therefore run on the rows this names
/// ([`PresentRows::computed`]), in one of two layouts:
/// - gathered (the default, and flex's): the present samples alone, `[P, ...]` instead of
///   `[B, ...]`, and [`PresentRows::spread`] puts their rows back in batch order. Less work:
///   a CPU's time goes into arithmetic.
/// - masked ([`PresentRows::masked`], the GPU backends'): every sample's rows,
///   `[B, ...]`, the absent ones zeroed on the way in and masked out on the way back. No row
///   selection, scatter or concatenation: under Burn's fusion the masks join the neighbouring
///   kernels, and a GPU at these sizes is bound by its kernel launches, not its arithmetic.
///
/// Both give the same values in the present rows (each sample's rows are computed from its
/// own rows alone) and the same tokens, features and losses; [`PresentRows::computed_rows`]
/// says how many rows the computed tensors have.
#[derive(Clone, Debug)]
pub struct PresentRows {
    /// The batch rows that hold the modality, ascending.
    rows: Vec<usize>,
    /// Rows of the batch, B.
    batch: usize,
    /// The masked layout's mask, true in the absent samples' rows (`None`: gathered). Made
    /// once, before any product that uses it: under Burn's fusion, an upload recorded between a
    /// product and its masking keeps the masking out of the product's fused block.
    /// [B, 1, 1]
    absent: Option<Tensor<3, Bool>>,
}

impl PresentRows {
    /// The rows of `available` (one row per sample, one flag per modality) that hold
    /// `modality`.
    ///
    /// # Panics
    /// When a row has no flag for `modality`.
    pub fn of(available: &[Vec<bool>], modality: usize) -> Self {
        PresentRows {
            rows: (0..available.len())
                .filter(|&r| available[r][modality])
                .collect(),
            batch: available.len(),
            absent: None,
        }
    }

    /// The same rows in the masked layout, its mask made on `device` (from the host: no
    /// kernel).
    pub fn masked(mut self, device: &Device) -> Self {
        let mut absent = vec![true; self.batch];
        for &r in &self.rows {
            absent[r] = false;
        }
        let shape = [self.batch, 1, 1];
        self.absent = Some(Tensor::from_data(TensorData::new(absent, shape), device));
        self
    }

    /// Whether this is the masked layout (every sample's rows computed).
    pub fn is_masked(&self) -> bool {
        self.absent.is_some()
    }

    /// Rows of the tensors computed for this modality ([`PresentRows::computed`]): B in the
    /// masked layout, P in the gathered one.
    pub fn computed_rows(&self) -> usize {
        if self.is_masked() {
            self.batch
        } else {
            self.rows.len()
        }
    }

    /// The batch rows that hold the modality, ascending.
    pub fn rows(&self) -> &[usize] {
        &self.rows
    }

    /// P, how many samples hold the modality.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no sample holds the modality.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether every sample holds the modality (then `take` and `spread` copy nothing).
    pub fn is_all(&self) -> bool {
        self.rows.len() == self.batch
    }

    /// The present samples' rows of `x`, in batch order.
    ///
    /// # Shapes
    /// - x: `[B, ...]`
    /// - output: `[P, ...]`
    pub fn take<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        assert_eq!(x.dims()[0], self.batch, "take: x has a row per sample");
        if self.is_all() {
            return x;
        }
        let index = index_tensor(self.rows.iter().map(|&r| r as i64), &x.device());
        x.select(0, index) // [P, ...]
    }

    /// The rows of `x` this modality's features are computed from: the present samples'
    /// ([`PresentRows::take`]) in the gathered layout; every sample's in the masked one, the
    /// absent samples' set to 0, so that whatever an absent modality's input holds (NaN
    /// included) never reaches a product, nor, as NaN times a zero gradient, a weight's
    /// gradient.
    ///
    /// # Shapes
    /// - x: `[B, N, D]`
    /// - output: `[computed_rows, N, D]`
    pub fn computed(&self, x: Tensor<3>) -> Tensor<3> {
        let Some(absent) = &self.absent else {
            return self.take(x);
        };
        assert_eq!(x.dims()[0], self.batch, "computed: x has a row per sample");
        if self.is_all() {
            return x;
        }
        x.mask_fill(absent.clone(), 0.0) // [B, N, D]
    }

    /// The present samples' rows of a tensor computed for this modality (rows as
    /// [`PresentRows::computed`] gives them).
    ///
    /// # Shapes
    /// - x: `[computed_rows, ...]`
    /// - output: `[P, ...]`
    pub fn take_computed<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        assert_eq!(
            x.dims()[0],
            self.computed_rows(),
            "take_computed: x has a row per computed sample"
        );
        if self.is_masked() { self.take(x) } else { x }
    }

    /// A batch-sized tensor whose present rows are `present`'s rows (in order; in the masked
    /// layout, the same rows) and whose absent rows are each a copy of `filler`.
    ///
    /// # Shapes
    /// - present: `[computed_rows, N, d]`; filler: `[1, N, d]`
    /// - output: `[B, N, d]`
    pub fn spread(&self, present: Tensor<3>, filler: Tensor<3>) -> Tensor<3> {
        let [p, n, d] = present.dims();
        assert_eq!(p, self.computed_rows(), "spread: a row per computed sample");
        assert_eq!(
            filler.dims(),
            [1, n, d],
            "spread: one filler row of the same shape"
        );
        if self.is_all() {
            return present;
        }
        if let Some(absent) = &self.absent {
            return present.mask_where(absent.clone(), filler); // [B, N, d]
        }
        // Row r of the output is row `source[r]` of [present; filler].
        let mut source = vec![p as i64; self.batch];
        for (k, &r) in self.rows.iter().enumerate() {
            source[r] = k as i64;
        }
        let index = index_tensor(source, &present.device());
        Tensor::cat(vec![present, filler], 0).select(0, index) // [B, N, d]
    }

    /// `x` with each present sample's rows increased by its rows of `present` (in order); the
    /// absent samples' rows unchanged. Gathered: one indexed addition, where
    /// `x + spread(present, 0)` is a zero filler, a concatenation, a selection and the
    /// addition. Masked: the addition of `present` with its absent rows zeroed.
    ///
    /// # Shapes
    /// - x: `[B, N, d]`; present: `[computed_rows, N, d]`
    /// - output: `[B, N, d]`
    pub fn add_to(&self, x: Tensor<3>, present: Tensor<3>) -> Tensor<3> {
        let [p, n, d] = present.dims();
        assert_eq!(p, self.computed_rows(), "add_to: a row per computed sample");
        assert_eq!(
            x.dims(),
            [self.batch, n, d],
            "add_to: x has a row per sample"
        );
        if self.is_all() {
            return x + present;
        }
        if let Some(absent) = &self.absent {
            return x + present.mask_fill(absent.clone(), 0.0); // [B, N, d]
        }
        let index = index_tensor(self.rows.iter().map(|&r| r as i64), &x.device());
        x.select_assign(0, index, present, IndexingUpdateOp::Add) // [B, N, d]
    }
}

/// A 1-D index tensor of `values` on `device`.
fn index_tensor(values: impl IntoIterator<Item = i64>, device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = values.into_iter().collect();
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), device)
}

impl Batch {
    /// Which samples of this batch hold modality `i`.
    pub fn present_rows(&self, i: usize) -> PresentRows {
        PresentRows::of(&self.available_host, i)
    }

    /// The samples `indices` of `split` as `parts` shards ([`shard`]), each a batch of its own.
    pub fn shards_from_split(
        split: &DataSplit,
        indices: &[usize],
        mask: &AbsenceMask,
        device: &Device,
        parts: usize,
    ) -> Vec<Batch> {
        shard(indices, parts)
            .into_iter()
            .map(|part| Batch::from_split(split, part, mask, device))
            .collect()
    }

    /// Batch size B.
    pub fn len(&self) -> usize {
        self.available_host.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.available_host.is_empty()
    }

    /// The samples `indices` of `split`, with the absence pattern `mask` gives each of them.
    pub fn from_split(
        split: &DataSplit,
        indices: &[usize],
        mask: &AbsenceMask,
        device: &Device,
    ) -> Batch {
        let available_host: Vec<Vec<bool>> = indices
            .iter()
            .map(|&i| mask.available(i).to_vec())
            .collect();
        let mut batch = Batch::from_features(split, indices, available_host, device);
        batch.targets = Some(match &split.targets {
            Targets::Classes { labels, .. } => {
                let l: Vec<i64> = indices.iter().map(|&i| labels[i] as i64).collect();
                BatchTargets::Classes(Tensor::from_data(
                    TensorData::new(l, [indices.len()]),
                    device,
                ))
            }
            Targets::Values(v) => {
                let l: Vec<f32> = indices.iter().map(|&i| v[i]).collect();
                BatchTargets::Values(Tensor::from_data(
                    TensorData::new(l, [indices.len(), 1]),
                    device,
                ))
            }
        });
        batch
    }

    /// The samples `indices` of `split` with the given availability rows, without targets.
    pub fn from_features(
        split: &DataSplit,
        indices: &[usize],
        available_host: Vec<Vec<bool>>,
        device: &Device,
    ) -> Batch {
        let b = indices.len();
        let inputs = split
            .modalities
            .iter()
            .enumerate()
            .map(|(m, spec)| {
                let values: Vec<f32> = indices
                    .iter()
                    .flat_map(|&i| split.sample_features(m, i).iter().copied())
                    .collect();
                Tensor::from_data(
                    TensorData::new(values, [b, spec.n_tokens, spec.token_dim]),
                    device,
                )
            })
            .collect();
        let m = split.modalities.len();
        let flat: Vec<f32> = available_host
            .iter()
            .flat_map(|row| row.iter().map(|&a| if a { 1.0 } else { 0.0 }))
            .collect();
        let available = Tensor::from_data(TensorData::new(flat, [b, m]), device);
        Batch {
            inputs,
            available,
            available_host,
            targets: None,
            sample_ids: indices.to_vec(),
            draw_round: 0,
            truth: split.truth_rows(indices),
        }
    }

    /// This batch as pass `round` over its samples (training: the epoch + 1).
    pub fn with_draw_round(mut self, round: u64) -> Batch {
        self.draw_round = round;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Auto` resolves to flex's own layout (gathered) there; a chosen layout stays as chosen.
    #[test]
    fn auto_resolves_to_the_devices_layout_and_a_chosen_layout_stays() {
        let flex = Device::flex();
        assert_eq!(RowLayout::Auto.resolved(&flex), RowLayout::Gathered);
        assert_eq!(RowLayout::Gathered.resolved(&flex), RowLayout::Gathered);
        assert_eq!(RowLayout::Masked.resolved(&flex), RowLayout::Masked);
    }

    #[test]
    fn shards_differ_in_size_by_at_most_one_and_drop_empty_ones() {
        let all: Vec<usize> = (0..5).collect();
        assert_eq!(shard(&all, 3), vec![&all[..2], &all[2..4], &all[4..]]);
        assert_eq!(shard(&all[..2], 4), vec![&all[..1], &all[1..2]]);
        assert_eq!(shard(&all, 0), vec![&all[..]]);
    }

    /// Sample r's rows hold r * 10 + (its token and feature index).
    fn per_sample(b: usize, device: &Device) -> Tensor<3> {
        let values: Vec<f32> = (0..b * 2 * 3)
            .map(|k| ((k / 6) * 10 + k % 6) as f32)
            .collect();
        Tensor::from_data(TensorData::new(values, [b, 2, 3]), device)
    }

    #[test]
    fn present_rows_take_and_spread_put_each_sample_back_in_its_place() {
        let device = Device::flex();
        let available = [[true, false], [false, true], [true, true], [false, false]].map(Vec::from);
        let vision = PresentRows::of(&available, 0);
        assert_eq!(vision.rows(), &[0, 2]);
        assert_eq!(
            (vision.len(), vision.is_all(), vision.is_empty()),
            (2, false, false)
        );
        let x = per_sample(4, &device);
        let taken = vision.take(x.clone());
        let want: Vec<f32> = [0..6, 20..26]
            .into_iter()
            .flatten()
            .map(|v| v as f32)
            .collect();
        assert_eq!(taken.to_data().try_to_vec::<f32>().unwrap(), want);
        // Spread back with a filler of -1: samples 1 and 3 get the filler.
        let filler = Tensor::<3>::full([1, 2, 3], -1.0, &device);
        let spread = vision
            .spread(taken, filler.clone())
            .to_data()
            .try_to_vec::<f32>()
            .unwrap();
        let x = x.to_data().try_to_vec::<f32>().unwrap();
        for (r, sample) in spread.chunks(6).enumerate() {
            let want = if r % 2 == 0 {
                &x[r * 6..][..6]
            } else {
                &[-1.0; 6][..]
            };
            assert_eq!(sample, want, "sample {r}");
        }
        // Audio: samples 1 and 2; none holds both modalities' absence but sample 3.
        let audio = PresentRows::of(&available, 1);
        assert_eq!(audio.rows(), &[1, 2]);
        // Every sample present: nothing is copied, the same tensor comes back.
        let all = PresentRows::of(&[vec![true], vec![true]], 0);
        assert!(all.is_all());
        let x2 = per_sample(2, &device);
        let back = all.spread(all.take(x2.clone()), filler);
        assert_eq!(back.to_data(), x2.to_data());
        let none = PresentRows::of(&[vec![false]], 0);
        assert!(none.is_empty() && !none.is_all());
    }

    #[test]
    fn the_masked_layout_gives_the_gathered_layouts_values_without_reading_absent_rows() {
        let device = Device::flex();
        let available = [[true], [false], [true], [false]].map(Vec::from);
        let gathered = PresentRows::of(&available, 0);
        let masked = gathered.clone().masked(&device);
        assert_eq!((gathered.computed_rows(), masked.computed_rows()), (2, 4));
        // Absent samples' inputs are NaN: the masked layout must zero them on the way in.
        let nan = Tensor::<3>::full([1, 2, 3], f32::NAN, &device);
        let x = per_sample(4, &device)
            .slice_assign([1..2, 0..2, 0..3], nan.clone())
            .slice_assign([3..4, 0..2, 0..3], nan);
        let computed = masked.computed(x.clone());
        let values = computed.to_data().try_to_vec::<f32>().unwrap();
        assert!(values[6..12].iter().chain(&values[18..]).all(|&v| v == 0.0));
        assert_eq!(
            masked.take_computed(computed.clone()).to_data(),
            gathered
                .take_computed(gathered.computed(x.clone()))
                .to_data()
        );
        // What a modality computes from its rows, then back in batch order: the same tensor.
        let work = |t: Tensor<3>| t.mul_scalar(2.0).add_scalar(1.0);
        let filler = Tensor::<3>::full([1, 2, 3], -1.0, &device);
        let spread_gathered = gathered.spread(work(gathered.computed(x.clone())), filler.clone());
        let spread_masked = masked.spread(work(computed.clone()), filler);
        assert_eq!(spread_masked.to_data(), spread_gathered.to_data());
        let base = per_sample(4, &device).mul_scalar(-3.0);
        let added_gathered = gathered.add_to(base.clone(), work(gathered.computed(x)));
        let added_masked = masked.add_to(base, work(computed));
        assert_eq!(added_masked.to_data(), added_gathered.to_data());
    }

    #[test]
    fn add_to_adds_each_present_row_to_its_sample_and_leaves_the_rest() {
        let device = Device::flex();
        let available = [[true], [false], [true], [false]].map(Vec::from);
        let vision = PresentRows::of(&available, 0);
        let x = per_sample(4, &device);
        let extra = Tensor::<3>::from_data(
            TensorData::new([vec![100.0f32; 6], vec![1000.0; 6]].concat(), [2, 2, 3]),
            &device,
        );
        let got = vision
            .add_to(x.clone(), extra.clone())
            .to_data()
            .try_to_vec::<f32>()
            .unwrap();
        let x = x.to_data().try_to_vec::<f32>().unwrap();
        let want: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + [100.0, 0.0, 1000.0, 0.0][i / 6])
            .collect();
        assert_eq!(got, want);
        // Every sample present: a plain sum.
        let all = PresentRows::of(&[vec![true], vec![true]], 0);
        let x2 = per_sample(2, &device);
        let sum = all.add_to(x2.clone(), extra.clone());
        assert_eq!(sum.to_data(), (x2 + extra).to_data());
    }
}
