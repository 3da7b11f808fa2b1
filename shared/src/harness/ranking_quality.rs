//! How good the ranking of Eq. 9 is, measured against ground truth: on the synthetic data every
//! token is known to be signal or pure noise ([`crate::synthetic::SyntheticSample::noise_tokens`]),
//! so xi can be scored like a classifier of "not biased".
//!
//! - Per refinement layer, on complete inputs: the AUC of xi separating signal tokens (positive)
//!   from noise tokens, and the kept rate (Eq. 10) of each.
//! - Per dropped modality: the share of each layer's kept slots held by that modality's
//!   placeholder tokens (`E_miss`, Eq. 1), beside its share of all tokens.
//!
//! Everything is read off [`SampleTrace`]s, the demo's own trace, so the page and `mgr eval`
//! report the same numbers.

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::absence::AbsenceMask;
use crate::batch::Batch;
use crate::data::DataSplit;
use crate::error::MgrError;
use crate::model::Model;
use crate::trace::SampleTrace;

/// Samples per forward pass while measuring.
const BATCH: usize = 128;

/// The ranking's quality in one refinement layer, on complete inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRanking {
    /// Refinement layer, 0-based.
    pub layer: usize,
    /// P(xi of a random signal token > xi of a random noise token), ties counted half; None
    /// when the layer sees no token of one kind.
    pub auc: Option<f64>,
    /// The same AUC for the feature-level score xi_f alone.
    pub auc_f: Option<f64>,
    /// The same AUC for the correlation-level score xi_e alone.
    pub auc_e: Option<f64>,
    /// Share of the signal tokens entering the layer that it keeps.
    pub kept_rate_signal: f64,
    /// Share of the noise tokens entering the layer that it keeps.
    pub kept_rate_noise: f64,
    /// Signal tokens entering the layer, over all samples.
    pub signal_tokens: usize,
    /// Noise tokens entering the layer, over all samples.
    pub noise_tokens: usize,
}

/// Where the kept slots go when one modality is dropped from every sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DroppedModality {
    /// The dropped modality's name.
    pub modality: String,
    /// Its share of all tokens, N_i / N: what a ranking blind to absence would keep.
    pub token_share: f64,
    /// Per refinement layer: the share of kept slots held by its placeholder tokens.
    pub kept_share: Vec<f64>,
}

/// The ranking report of one model on one sample set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankingReport {
    /// Samples measured.
    pub samples: usize,
    /// One entry per refinement layer (complete inputs).
    pub layers: Vec<LayerRanking>,
    /// One entry per modality, dropped from every sample in turn.
    pub dropped: Vec<DroppedModality>,
}

/// Area under the ROC curve of `scores` for the `positive` class (Mann-Whitney U, ties counted
/// half); None without both classes.
pub fn auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), positive.len(), "one label per score");
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0f64;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let mid_rank = (start + end + 1) as f64 / 2.0; // 1-based average rank of the tie group
        rank_sum_pos +=
            mid_rank * order[start..end].iter().filter(|&&i| positive[i]).count() as f64;
        start = end;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// Per-layer AUC and kept rates of traces made on complete inputs. `noise[s][m][p]`: token `p`
/// of modality `m` of sample `s` is pure noise.
pub fn layer_rankings(traces: &[SampleTrace], noise: &[Vec<Vec<bool>>]) -> Vec<LayerRanking> {
    let n_layers = traces.first().map_or(0, |t| t.layers.len());
    (0..n_layers)
        .map(|l| {
            let mut scores = Vec::new();
            let mut scores_f = Vec::new();
            let mut scores_e = Vec::new();
            let mut signal = Vec::new();
            let mut kept = [0usize; 2]; // [signal, noise]
            for (trace, truth) in traces.iter().zip(noise) {
                for token in &trace.layers[l].tokens {
                    let is_noise = truth[token.origin.modality][token.origin.position];
                    scores.push(token.xi);
                    scores_f.push(token.xi_f);
                    scores_e.push(token.xi_e);
                    signal.push(!is_noise);
                    kept[usize::from(is_noise)] += usize::from(token.kept);
                }
            }
            let n_signal = signal.iter().filter(|&&s| s).count();
            let n_noise = signal.len() - n_signal;
            let rate = |k: usize, n: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
            LayerRanking {
                layer: l,
                auc: auc(&scores, &signal),
                auc_f: auc(&scores_f, &signal),
                auc_e: auc(&scores_e, &signal),
                kept_rate_signal: rate(kept[0], n_signal),
                kept_rate_noise: rate(kept[1], n_noise),
                signal_tokens: n_signal,
                noise_tokens: n_noise,
            }
        })
        .collect()
}

/// Per layer, the share of kept slots held by tokens of `modality`, over all `traces`.
pub fn kept_share(traces: &[SampleTrace], modality: usize) -> Vec<f64> {
    let n_layers = traces.first().map_or(0, |t| t.layers.len());
    (0..n_layers)
        .map(|l| {
            let (mut held, mut slots) = (0usize, 0usize);
            for token in traces.iter().flat_map(|t| &t.layers[l].tokens) {
                if token.kept {
                    slots += 1;
                    held += usize::from(token.origin.modality == modality);
                }
            }
            if slots == 0 {
                0.0
            } else {
                held as f64 / slots as f64
            }
        })
        .collect()
}

/// Traces of every sample of `split` under `mask`, in batches.
fn traces_under(
    model: &Model,
    split: &DataSplit,
    mask: &AbsenceMask,
    device: &Device,
) -> Vec<SampleTrace> {
    let indices: Vec<usize> = (0..split.len()).collect();
    indices
        .chunks(BATCH)
        .flat_map(|chunk| {
            let batch = Batch::from_split(split, chunk, mask, device);
            model.trace(&batch).1
        })
        .collect()
}

/// The ranking report of `model` on `split`, whose samples' ground-truth noise tokens are
/// `noise[s][m][p]` (the synthetic dataset's). The model is switched to validation mode.
pub fn ranking_report(
    model: &Model,
    split: &DataSplit,
    noise: &[Vec<Vec<bool>>],
    device: &Device,
) -> Result<RankingReport, MgrError> {
    if noise.len() != split.len() {
        return Err(MgrError::InvalidData {
            what: split.name.clone(),
            reason: format!(
                "{} ground-truth rows for {} samples",
                noise.len(),
                split.len()
            ),
        });
    }
    for (s, row) in noise.iter().enumerate() {
        let shape_ok = row.len() == split.modalities.len()
            && row
                .iter()
                .zip(&split.modalities)
                .all(|(r, m)| r.len() == m.n_tokens);
        if !shape_ok {
            return Err(MgrError::InvalidData {
                what: split.name.clone(),
                reason: format!("sample {s}: the ground truth does not match the token grid"),
            });
        }
    }
    let model = model.valid();
    let names: Vec<String> = split.modalities.iter().map(|m| m.name.clone()).collect();
    let complete = AbsenceMask::complete(&names, split.len());
    let layers = layer_rankings(&traces_under(&model, split, &complete, device), noise);
    let n_total: usize = split.modalities.iter().map(|m| m.n_tokens).sum();
    let dropped = if names.len() < 2 {
        Vec::new()
    } else {
        (0..names.len())
            .map(|m| {
                let mut mask = complete.clone();
                for row in &mut mask.rows {
                    row[m] = false;
                }
                let traces = traces_under(&model, split, &mask, device);
                DroppedModality {
                    modality: names[m].clone(),
                    token_share: split.modalities[m].n_tokens as f64 / n_total as f64,
                    kept_share: kept_share(&traces, m),
                }
            })
            .collect()
    };
    Ok(RankingReport {
        samples: split.len(),
        layers,
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{LayerTrace, TokenOrigin, TokenTrace};

    #[test]
    fn auc_counts_pairs_and_half_ties() {
        // positives 0.9, 0.5; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.5=0.5, 0.5>0.1) = 3.5 / 4
        let auc = auc(&[0.9, 0.5, 0.5, 0.1], &[true, true, false, false]).unwrap();
        assert!((auc - 0.875).abs() < 1e-12, "{auc}");
        assert_eq!(auc_of(&[0.1, 0.2], &[true, false]), Some(0.0));
        assert_eq!(auc_of(&[0.3, 0.2], &[true, false]), Some(1.0));
        assert_eq!(auc_of(&[0.3, 0.2], &[true, true]), None);
    }

    fn auc_of(s: &[f32], p: &[bool]) -> Option<f64> {
        auc(s, p)
    }

    fn token(modality: usize, position: usize, xi: f32, kept: bool) -> TokenTrace {
        TokenTrace {
            origin: TokenOrigin { modality, position },
            xi_f: xi,
            xi_e: xi,
            xi,
            rank: 0,
            kept,
        }
    }

    fn trace(tokens: Vec<TokenTrace>) -> SampleTrace {
        SampleTrace {
            modalities: vec!["a".into(), "b".into()],
            available: vec![true, true],
            output: vec![1.0],
            predicted_class: Some(0),
            layers: vec![LayerTrace {
                layer: 0,
                tokens,
                edges: Vec::new(),
            }],
        }
    }

    #[test]
    fn layer_rankings_and_kept_share_from_hand_made_traces() {
        // Sample 0: a0 signal kept (0.8), a1 noise dropped (-0.2), b0 signal dropped (0.1).
        // Sample 1: a0 noise kept (0.5), a1 signal kept (0.6), b0 signal dropped (-0.5).
        let traces = vec![
            trace(vec![
                token(0, 0, 0.8, true),
                token(0, 1, -0.2, false),
                token(1, 0, 0.1, false),
            ]),
            trace(vec![
                token(0, 0, 0.5, true),
                token(0, 1, 0.6, true),
                token(1, 0, -0.5, false),
            ]),
        ];
        let noise = vec![
            vec![vec![false, true], vec![false]],
            vec![vec![true, false], vec![false]],
        ];
        let r = &layer_rankings(&traces, &noise)[0];
        assert_eq!((r.signal_tokens, r.noise_tokens), (4, 2));
        // signal {0.8, 0.1, 0.6, -0.5} vs noise {-0.2, 0.5}: wins 2 + 1 + 2 + 0 = 5 of 8
        assert!((r.auc.unwrap() - 5.0 / 8.0).abs() < 1e-12);
        assert!((r.kept_rate_signal - 0.5).abs() < 1e-12);
        assert!((r.kept_rate_noise - 0.5).abs() < 1e-12);
        // 3 kept slots, all held by modality a
        assert_eq!(kept_share(&traces, 0), vec![1.0]);
        assert_eq!(kept_share(&traces, 1), vec![0.0]);
    }
}
