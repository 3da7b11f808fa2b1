//! A batch on the device: token features, the absence mask and targets.
//!
//! Dimension key: see the crate root (`B`, `M`, `N_i`, `D_i`).

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::absence::AbsenceMask;
use crate::data::{DataSplit, Targets};

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

impl Batch {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_differ_in_size_by_at_most_one_and_drop_empty_ones() {
        let all: Vec<usize> = (0..5).collect();
        assert_eq!(shard(&all, 3), vec![&all[..2], &all[2..4], &all[4..]]);
        assert_eq!(shard(&all[..2], 4), vec![&all[..1], &all[1..2]]);
        assert_eq!(shard(&all, 0), vec![&all[..]]);
    }
}
