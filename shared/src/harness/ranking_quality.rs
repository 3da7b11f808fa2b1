//! How good the ranking of Eq. 9 is, measured against ground truth: the synthetic data knows
//! every token ([`crate::truth`]), so the split's order can be scored like a classifier of "not
//! biased", in the two senses the truth has.
//!
//! Per refinement layer:
//! - *noise*: the AUC of the split's score separating signal tokens (positive) from pure-noise
//!   tokens inside each modality, and their mean; the same AUC pooled over every modality
//!   (which mostly grades a preference for one modality: 7 of the 8 text tokens are filler
//!   words), and the kept rate (Eq. 10) of each kind;
//! - *conflict*, the paper's sense: tokens of a modality that shows the label (positive)
//!   against tokens of a modality of the same sample that shows another digit, as the AUC over
//!   those pairs (the split compares tokens of one sample) and the kept rate of each.
//!
//! Graded on complete inputs and, where asked, under the run's own absence setting (whose
//! placeholder tokens are neither signal nor noise: their kept rate is reported on its own).
//! Per dropped modality: the share of each layer's kept slots held by that modality's
//! placeholder tokens (`E_miss`, Eq. 1), beside its share of all tokens.
//!
//! The score graded is the one the split ranked by ([`TokenTrace::split_score`]): xi under the
//! learned ranking, the reference ranking's own under the others. Everything is read off
//! [`SampleTrace`]s, the demo's own trace, so the page and `mgr eval` report the same numbers.

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::absence::AbsenceMask;
use crate::batch::Batch;
use crate::data::{DataSplit, Targets};
use crate::error::MgrError;
use crate::model::{Model, ModelOutput};
use crate::trace::{SampleTrace, TokenTrace};
use crate::truth::{SampleTruth, TokenKind};

/// Each token's class evidence, `[layer][sample][token]` ([`label_margins`]).
type Margins = Vec<Vec<Vec<f32>>>;

/// Samples per forward pass while measuring.
const BATCH: usize = 128;

/// The noise grade of one modality in one layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModalityGrade {
    /// The modality's name.
    pub modality: String,
    /// AUC of the split's score, signal against noise tokens of this modality; None without both.
    pub auc: Option<f64>,
    /// Its signal tokens entering the layer, over all samples.
    pub signal_tokens: usize,
    /// Its noise tokens entering the layer, over all samples.
    pub noise_tokens: usize,
}

/// The conflict grade of one layer: the paper's bias, a modality showing another digit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConflictGrade {
    /// P(score of a token of an agreeing modality > score of a token of a conflicting modality
    /// of the same sample), ties counted half; None where no sample has both.
    pub auc: Option<f64>,
    /// Share of the agreeing modalities' tokens entering the layer that it keeps.
    pub kept_rate_agreeing: f64,
    /// Share of the conflicting modalities' tokens entering the layer that it keeps.
    pub kept_rate_conflicting: f64,
    /// Tokens of agreeing modalities entering the layer, over all samples.
    pub agreeing_tokens: usize,
    /// Tokens of conflicting modalities entering the layer, over all samples.
    pub conflicting_tokens: usize,
}

/// The ranking's quality in one refinement layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRanking {
    /// Refinement layer, 0-based.
    pub layer: usize,
    /// AUC of the split's score, signal against noise tokens pooled over every modality
    /// (`auc_pooled`; files before the per-modality grades called it `auc`). None when the
    /// layer sees no token of one kind.
    #[serde(rename = "auc_pooled", alias = "auc")]
    pub auc: Option<f64>,
    /// The pooled AUC of the feature-level score xi_f alone.
    pub auc_f: Option<f64>,
    /// The pooled AUC of the correlation-level score xi_e alone.
    pub auc_e: Option<f64>,
    /// The noise AUC inside each modality.
    #[serde(default)]
    pub by_modality: Vec<ModalityGrade>,
    /// The mean of the per-modality AUCs that exist: the noise grade free of any preference
    /// between modalities.
    #[serde(default)]
    pub auc_modality_mean: Option<f64>,
    /// The conflict grade.
    #[serde(default)]
    pub conflict: ConflictGrade,
    /// Share of the signal tokens entering the layer that it keeps.
    pub kept_rate_signal: f64,
    /// Share of the noise tokens entering the layer that it keeps.
    pub kept_rate_noise: f64,
    /// Share of the placeholder tokens (absent modalities) entering the layer that it keeps;
    /// None on complete inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_rate_placeholder: Option<f64>,
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
    /// Per refinement layer: the mean xi of its placeholder tokens (E_miss, Eq. 1) and of the
    /// present modalities' tokens, so a reader sees whether xi tells them apart.
    #[serde(default)]
    pub mean_xi_placeholder_present: Vec<(f64, f64)>,
}

/// Per layer, the mean xi of `modality`'s tokens and of the other tokens.
fn mean_xi_of(traces: &[SampleTrace], modality: usize) -> Vec<(f64, f64)> {
    let n_layers = traces.first().map_or(0, |t| t.layers.len());
    (0..n_layers)
        .map(|l| {
            let mut sums = [(0.0f64, 0usize); 2];
            for token in traces.iter().flat_map(|t| &t.layers[l].tokens) {
                let s = &mut sums[usize::from(token.origin.modality != modality)];
                s.0 += f64::from(token.xi);
                s.1 += 1;
            }
            let mean = |(sum, n): (f64, usize)| if n == 0 { 0.0 } else { sum / n as f64 };
            (mean(sums[0]), mean(sums[1]))
        })
        .collect()
}

/// What the learned score xi follows in one layer (complete inputs, every token): the named
/// properties a token has in the trace, so a reader can say what the ranking does rank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerDrivers {
    /// Refinement layer, 0-based.
    pub layer: usize,
    /// Per modality, its tokens' mean xi (a ranking that orders modalities shows here).
    pub mean_xi_by_modality: Vec<(String, f64)>,
    /// Pearson correlation of xi with xi_e = tanh(attention the token receives), per token.
    pub corr_xi_attention: Option<f64>,
    /// Pearson correlation of xi with the token's position in its modality (0 first, 1 last).
    pub corr_xi_position: Option<f64>,
    /// The share of xi's variance across tokens that the modality explains (eta squared).
    pub modality_share_of_variance: Option<f64>,
    /// Pearson correlation of xi with the token's class evidence: the margin of the label's
    /// logit over the best other class when the task head reads that token's r alone (the
    /// model's own head as the probe, a "logit lens"). None for regression.
    #[serde(default)]
    pub corr_xi_label_margin: Option<f64>,
    /// The same correlation inside each sample, averaged over samples: whether the split
    /// (which compares the tokens of one sample) keeps the tokens that argue for the label.
    #[serde(default)]
    pub corr_xi_label_margin_within_sample: Option<f64>,
}

/// Pearson correlation of two equally long series; None with fewer than 2 points or no spread.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    assert_eq!(x.len(), y.len(), "two series of one length");
    let n = x.len() as f64;
    if x.len() < 2 {
        return None;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// What xi follows, per layer, over `traces` (complete inputs); `sizes` are the modalities'
/// token counts N_i; `margins[l][s]`, where given, each token's class evidence in layer `l` of
/// sample `s` (in the trace's token order).
pub fn layer_drivers(
    traces: &[SampleTrace],
    names: &[String],
    sizes: &[usize],
    margins: Option<&[Vec<Vec<f32>>]>,
) -> Vec<LayerDrivers> {
    let n_layers = traces.first().map_or(0, |t| t.layers.len());
    (0..n_layers)
        .map(|l| {
            let (margin_all, margin_within) = match margins {
                Some(m) => margin_correlations(traces, &m[l], l),
                None => (None, None),
            };
            let tokens: Vec<&TokenTrace> =
                traces.iter().flat_map(|t| &t.layers[l].tokens).collect();
            let xi: Vec<f64> = tokens.iter().map(|t| f64::from(t.xi)).collect();
            let attention: Vec<f64> = tokens.iter().map(|t| f64::from(t.xi_e)).collect();
            let position: Vec<f64> = tokens
                .iter()
                .map(|t| {
                    let n = sizes[t.origin.modality].saturating_sub(1).max(1);
                    t.origin.position as f64 / n as f64
                })
                .collect();
            let groups: Vec<Vec<f64>> = (0..names.len())
                .map(|m| {
                    tokens
                        .iter()
                        .filter(|t| t.origin.modality == m)
                        .map(|t| f64::from(t.xi))
                        .collect()
                })
                .collect();
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            let grand = mean(&xi);
            let total: f64 = xi.iter().map(|x| (x - grand).powi(2)).sum();
            let between: f64 = groups
                .iter()
                .map(|g| g.len() as f64 * (mean(g) - grand).powi(2))
                .sum();
            LayerDrivers {
                layer: l,
                mean_xi_by_modality: names
                    .iter()
                    .zip(&groups)
                    .filter(|(_, g)| !g.is_empty())
                    .map(|(name, g)| (name.clone(), mean(g)))
                    .collect(),
                corr_xi_attention: pearson(&xi, &attention),
                corr_xi_position: pearson(&xi, &position),
                modality_share_of_variance: (total > 0.0).then(|| between / total),
                corr_xi_label_margin: margin_all,
                corr_xi_label_margin_within_sample: margin_within,
            }
        })
        .collect()
}

/// Pearson correlation of xi with `margins[s][j]` over every token of layer `l`, and inside
/// each sample averaged over the samples where it exists.
fn margin_correlations(
    traces: &[SampleTrace],
    margins: &[Vec<f32>],
    l: usize,
) -> (Option<f64>, Option<f64>) {
    let mut all = (Vec::new(), Vec::new());
    let mut within = Vec::new();
    for (trace, m) in traces.iter().zip(margins) {
        let xi: Vec<f64> = trace.layers[l]
            .tokens
            .iter()
            .map(|t| f64::from(t.xi))
            .collect();
        let m: Vec<f64> = m.iter().map(|&v| f64::from(v)).collect();
        within.extend(pearson(&xi, &m));
        all.0.extend(xi);
        all.1.extend(m);
    }
    let mean_within =
        (!within.is_empty()).then(|| within.iter().sum::<f64>() / within.len() as f64);
    (pearson(&all.0, &all.1), mean_within)
}

/// Per refinement layer, per sample, per token of `output`: the margin of the label's logit over
/// the best other class when the task head reads that token's r alone.
///
/// # Shapes
/// - each layer's r: `[B, N, d]`; output `[L][B][N]`
fn label_margins(model: &Model, output: &ModelOutput, labels: &[usize]) -> Margins {
    output
        .layers
        .iter()
        .map(|layer| {
            let [b, n, d] = layer.r.dims();
            let logits = model.head.forward(layer.r.clone().reshape([b * n, 1, d])); // [B N, C]
            let c = logits.dims()[1];
            let logits: Vec<f32> = logits
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32 logits");
            (0..b)
                .map(|s| {
                    (0..n)
                        .map(|j| {
                            let row = &logits[(s * n + j) * c..(s * n + j + 1) * c];
                            let own = row[labels[s]];
                            let best_other = row
                                .iter()
                                .enumerate()
                                .filter(|(k, _)| *k != labels[s])
                                .map(|(_, v)| *v)
                                .fold(f32::NEG_INFINITY, f32::max);
                            own - best_other
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// The grades under an absence setting other than complete inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbsenceGrades {
    /// The setting, in words ("kappa 0.7, absence seed 0").
    pub setting: String,
    /// One entry per refinement layer.
    pub layers: Vec<LayerRanking>,
}

/// The ranking report of one model on one sample set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankingReport {
    /// Samples measured.
    pub samples: usize,
    /// The ranking the split ran with ([`crate::readings::SplitRanking`]'s name).
    #[serde(default = "learned")]
    pub ranking: String,
    /// One entry per refinement layer (complete inputs).
    pub layers: Vec<LayerRanking>,
    /// The same grades under the run's own absence setting, where one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under_absence: Option<AbsenceGrades>,
    /// One entry per modality, dropped from every sample in turn.
    pub dropped: Vec<DroppedModality>,
    /// What the learned score xi follows, per layer (complete inputs).
    #[serde(default)]
    pub drivers: Vec<LayerDrivers>,
}

fn learned() -> String {
    "learned".into()
}

/// The Mann-Whitney count of `scores` for the `positive` class: (positive-over-negative pairs,
/// ties counted half; all pairs), or None without both classes.
fn pair_wins(scores: &[f32], positive: &[bool]) -> Option<(f64, f64)> {
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
    Some((u, n_pos as f64 * n_neg as f64))
}

/// Area under the ROC curve of `scores` for the `positive` class (Mann-Whitney U, ties counted
/// half); None without both classes.
pub fn auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    pair_wins(scores, positive).map(|(u, pairs)| u / pairs)
}

/// The AUC over pairs inside each group only: `groups` of (scores, positive), their
/// Mann-Whitney counts summed; None where no group has both classes.
pub fn auc_within_groups(groups: &[(Vec<f32>, Vec<bool>)]) -> Option<f64> {
    let (u, pairs) = groups
        .iter()
        .filter_map(|(s, p)| pair_wins(s, p))
        .fold((0.0, 0.0), |(u, n), (du, dn)| (u + du, n + dn));
    (pairs > 0.0).then(|| u / pairs)
}

/// One token entering a layer, as the grades see it.
struct Graded<'a> {
    token: &'a TokenTrace,
    kind: TokenKind,
    /// The token's modality shows another class than the label.
    conflicting: bool,
}

/// The tokens of layer `l` of one sample with their kinds.
fn graded<'a>(trace: &'a SampleTrace, truth: &SampleTruth, l: usize) -> Vec<Graded<'a>> {
    trace.layers[l]
        .tokens
        .iter()
        .map(|token| {
            let (m, p) = (token.origin.modality, token.origin.position);
            Graded {
                token,
                kind: truth.kind(&trace.available, m, p),
                conflicting: truth.conflicting(m),
            }
        })
        .collect()
}

fn rate(kept: usize, n: usize) -> f64 {
    if n == 0 { 0.0 } else { kept as f64 / n as f64 }
}

/// The conflict grade of layer `l`: per sample, the present modalities' tokens, agreeing
/// (positive) against conflicting.
fn conflict_grade(traces: &[SampleTrace], truth: &[SampleTruth], l: usize) -> ConflictGrade {
    let mut groups = Vec::with_capacity(traces.len());
    let mut counts = [[0usize; 2]; 2]; // [agreeing, conflicting] x [tokens, kept]
    for (trace, t) in traces.iter().zip(truth) {
        let tokens: Vec<Graded> = graded(trace, t, l)
            .into_iter()
            .filter(|g| g.kind != TokenKind::Placeholder)
            .collect();
        for g in &tokens {
            let c = &mut counts[usize::from(g.conflicting)];
            c[0] += 1;
            c[1] += usize::from(g.token.kept);
        }
        groups.push((
            tokens.iter().map(|g| g.token.split_score()).collect(),
            tokens.iter().map(|g| !g.conflicting).collect(),
        ));
    }
    ConflictGrade {
        auc: auc_within_groups(&groups),
        kept_rate_agreeing: rate(counts[0][1], counts[0][0]),
        kept_rate_conflicting: rate(counts[1][1], counts[1][0]),
        agreeing_tokens: counts[0][0],
        conflicting_tokens: counts[1][0],
    }
}

/// Per-layer grades of `traces`, whose samples' truth is `truth`; `modalities` names the
/// modalities in token order.
pub fn layer_rankings(
    traces: &[SampleTrace],
    truth: &[SampleTruth],
    modalities: &[String],
) -> Vec<LayerRanking> {
    let n_layers = traces.first().map_or(0, |t| t.layers.len());
    (0..n_layers)
        .map(|l| {
            let tokens: Vec<Graded> = traces
                .iter()
                .zip(truth)
                .flat_map(|(trace, t)| graded(trace, t, l))
                .collect();
            let evidence: Vec<&Graded> = tokens
                .iter()
                .filter(|g| g.kind != TokenKind::Placeholder)
                .collect();
            let signal: Vec<bool> = evidence.iter().map(|g| g.kind.is_signal()).collect();
            let pooled = |score: fn(&TokenTrace) -> f32| {
                let scores: Vec<f32> = evidence.iter().map(|g| score(g.token)).collect();
                auc(&scores, &signal)
            };
            let by_modality: Vec<ModalityGrade> = modalities
                .iter()
                .enumerate()
                .map(|(m, name)| {
                    let own: Vec<&&Graded> = evidence
                        .iter()
                        .filter(|g| g.token.origin.modality == m)
                        .collect();
                    let scores: Vec<f32> = own.iter().map(|g| g.token.split_score()).collect();
                    let is_signal: Vec<bool> = own.iter().map(|g| g.kind.is_signal()).collect();
                    let n_signal = is_signal.iter().filter(|&&s| s).count();
                    ModalityGrade {
                        modality: name.clone(),
                        auc: auc(&scores, &is_signal),
                        signal_tokens: n_signal,
                        noise_tokens: own.len() - n_signal,
                    }
                })
                .collect();
            let graded_aucs: Vec<f64> = by_modality.iter().filter_map(|g| g.auc).collect();
            // (tokens, kept) of the tokens whose kind `of` accepts.
            let count = |of: fn(TokenKind) -> bool| {
                let tokens = tokens.iter().filter(|g| of(g.kind));
                tokens.fold((0usize, 0usize), |(n, k), g| {
                    (n + 1, k + usize::from(g.token.kept))
                })
            };
            let (n_signal, kept_signal) = count(TokenKind::is_signal);
            let (n_noise, kept_noise) = count(|k| k == TokenKind::Noise);
            let (n_placeholder, kept_placeholder) = count(|k| k == TokenKind::Placeholder);
            LayerRanking {
                layer: l,
                auc: pooled(TokenTrace::split_score),
                auc_f: pooled(|t| t.xi_f),
                auc_e: pooled(|t| t.xi_e),
                auc_modality_mean: (!graded_aucs.is_empty())
                    .then(|| graded_aucs.iter().sum::<f64>() / graded_aucs.len() as f64),
                by_modality,
                conflict: conflict_grade(traces, truth, l),
                kept_rate_signal: rate(kept_signal, n_signal),
                kept_rate_noise: rate(kept_noise, n_noise),
                kept_rate_placeholder: (n_placeholder > 0)
                    .then(|| rate(kept_placeholder, n_placeholder)),
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
            rate(held, slots)
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
    traces_and_margins(model, split, mask, device, false).0
}

/// [`traces_under`], and with `margins` (classification only) each token's class evidence
/// per layer ([`label_margins`]), as `[L][sample][token]`.
fn traces_and_margins(
    model: &Model,
    split: &DataSplit,
    mask: &AbsenceMask,
    device: &Device,
    margins: bool,
) -> (Vec<SampleTrace>, Option<Margins>) {
    let labels = match (&split.targets, margins) {
        (Targets::Classes { labels, .. }, true) => Some(labels),
        _ => None,
    };
    let indices: Vec<usize> = (0..split.len()).collect();
    let mut traces = Vec::with_capacity(split.len());
    let mut per_layer: Option<Margins> = None;
    for chunk in indices.chunks(BATCH) {
        let batch = Batch::from_split(split, chunk, mask, device);
        let (output, chunk_traces) = model.trace(&batch);
        if let Some(labels) = labels {
            let chunk_labels: Vec<usize> = chunk.iter().map(|&i| labels[i]).collect();
            let margins = label_margins(model, &output, &chunk_labels);
            let all = per_layer.get_or_insert_with(|| vec![Vec::new(); margins.len()]);
            for (layer, m) in all.iter_mut().zip(margins) {
                layer.extend(m);
            }
        }
        traces.extend(chunk_traces);
    }
    (traces, per_layer)
}

/// The split's ground truth, or an error naming it.
fn truth_of(split: &DataSplit) -> Result<&[SampleTruth], MgrError> {
    split.validate()?;
    split.truth.as_deref().ok_or_else(|| {
        MgrError::data(
            &split.name,
            "has no per-token ground truth to grade the ranking against (only the synthetic data has one)",
        )
    })
}

/// The grades ([`layer_rankings`]) and what xi follows ([`layer_drivers`], with each token's
/// class evidence) of `model` on `split`, which must carry its ground truth, with every
/// modality present: what the page shows beside its picture.
pub fn complete_grades(
    model: &Model,
    split: &DataSplit,
    device: &Device,
) -> Result<(Vec<LayerRanking>, Vec<LayerDrivers>), MgrError> {
    let truth = truth_of(split)?;
    let (traces, drivers) = complete_pass(model, split, device);
    let names: Vec<String> = split.modalities.iter().map(|m| m.name.clone()).collect();
    Ok((layer_rankings(&traces, truth, &names), drivers))
}

/// What xi follows ([`layer_drivers`]) for `model` on `split` with every modality present:
/// needs no ground truth, so it reads real data too (class evidence where the targets are
/// classes). The model is switched to validation mode.
pub fn drivers(model: &Model, split: &DataSplit, device: &Device) -> Vec<LayerDrivers> {
    complete_pass(&model.valid(), split, device).1
}

/// The traces of `split` with every modality present, and what xi follows in them (each
/// token's class evidence included).
fn complete_pass(
    model: &Model,
    split: &DataSplit,
    device: &Device,
) -> (Vec<SampleTrace>, Vec<LayerDrivers>) {
    let names: Vec<String> = split.modalities.iter().map(|m| m.name.clone()).collect();
    let complete = AbsenceMask::complete(&names, split.len());
    let (traces, margins) = traces_and_margins(model, split, &complete, device, true);
    let sizes: Vec<usize> = split.modalities.iter().map(|m| m.n_tokens).collect();
    let drivers = layer_drivers(&traces, &names, &sizes, margins.as_deref());
    (traces, drivers)
}

/// The ranking report of `model` on `split`, which must carry its ground truth
/// ([`DataSplit::truth`]: the synthetic data's): graded on complete inputs, and under `absence`
/// (a description and a mask over `split`) where given. The model is switched to validation
/// mode.
pub fn ranking_report(
    model: &Model,
    split: &DataSplit,
    absence: Option<(&str, &AbsenceMask)>,
    device: &Device,
) -> Result<RankingReport, MgrError> {
    let truth = truth_of(split)?;
    let model = model.valid();
    let names: Vec<String> = split.modalities.iter().map(|m| m.name.clone()).collect();
    let complete = AbsenceMask::complete(&names, split.len());
    let (layers, drivers) = complete_grades(&model, split, device)?;
    let under_absence = absence.map(|(setting, mask)| AbsenceGrades {
        setting: setting.to_string(),
        layers: layer_rankings(&traces_under(&model, split, mask, device), truth, &names),
    });
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
                    mean_xi_placeholder_present: mean_xi_of(&traces, m),
                }
            })
            .collect()
    };
    Ok(RankingReport {
        samples: split.len(),
        ranking: model.config.refinement.ranking.name().to_string(),
        layers,
        under_absence,
        dropped,
        drivers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{LayerTrace, TokenOrigin};

    #[test]
    fn auc_counts_pairs_and_half_ties() {
        // positives 0.9, 0.5; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.5=0.5, 0.5>0.1) = 3.5 / 4
        let auc = auc(&[0.9, 0.5, 0.5, 0.1], &[true, true, false, false]).unwrap();
        assert!((auc - 0.875).abs() < 1e-12, "{auc}");
        assert_eq!(super::auc(&[0.1, 0.2], &[true, false]), Some(0.0));
        assert_eq!(super::auc(&[0.3, 0.2], &[true, false]), Some(1.0));
        assert_eq!(super::auc(&[0.3, 0.2], &[true, true]), None);
    }

    /// Pairs across groups do not count: each group alone is perfect, pooled it would not be.
    #[test]
    fn the_auc_within_groups_counts_only_pairs_inside_a_group() {
        let groups = vec![
            (vec![0.9, 0.8], vec![true, false]),
            (vec![0.2, 0.1, 0.15], vec![true, false, false]),
            (vec![0.5], vec![true]),
        ];
        assert_eq!(auc_within_groups(&groups), Some(1.0));
        let pooled = auc(
            &[0.9, 0.8, 0.2, 0.1, 0.15],
            &[true, false, true, false, false],
        );
        assert!(pooled.unwrap() < 1.0);
        assert_eq!(auc_within_groups(&groups[2..]), None);
    }

    fn token(modality: usize, position: usize, xi: f32, kept: bool) -> TokenTrace {
        TokenTrace {
            origin: TokenOrigin { modality, position },
            xi_f: xi,
            xi_e: xi,
            xi,
            order: None,
            rank: 0,
            kept,
        }
    }

    fn trace(tokens: Vec<TokenTrace>, available: Vec<bool>) -> SampleTrace {
        SampleTrace {
            modalities: vec!["a".into(), "b".into()],
            available,
            output: vec![1.0],
            predicted_class: Some(0),
            layers: vec![LayerTrace {
                layer: 0,
                tokens,
                edges: Vec::new(),
            }],
        }
    }

    fn truth(label: usize, shown: [usize; 2], noise: [Vec<bool>; 2]) -> SampleTruth {
        SampleTruth {
            label,
            shown: shown.to_vec(),
            noise: noise.to_vec(),
        }
    }

    /// Two samples, modality a of 2 tokens and b of 2 tokens, every number counted by hand.
    /// - sample 0 (label 1, a shows 1, b shows 4): a0 signal 0.8 kept, a1 noise -0.2, b0 signal
    ///   0.1, b1 noise 0.9 kept;
    /// - sample 1 (label 2, both show 2): a0 noise 0.5 kept, a1 signal 0.6 kept, b0 signal -0.5,
    ///   b1 noise -0.4.
    fn two_samples() -> (Vec<SampleTrace>, Vec<SampleTruth>) {
        let both = vec![true, true];
        let traces = vec![
            trace(
                vec![
                    token(0, 0, 0.8, true),
                    token(0, 1, -0.2, false),
                    token(1, 0, 0.1, false),
                    token(1, 1, 0.9, true),
                ],
                both.clone(),
            ),
            trace(
                vec![
                    token(0, 0, 0.5, true),
                    token(0, 1, 0.6, true),
                    token(1, 0, -0.5, false),
                    token(1, 1, -0.4, false),
                ],
                both,
            ),
        ];
        let truth = vec![
            truth(1, [1, 4], [vec![false, true], vec![false, true]]),
            truth(2, [2, 2], [vec![true, false], vec![false, true]]),
        ];
        (traces, truth)
    }

    #[test]
    fn per_modality_and_pooled_aucs_and_kept_rates_by_hand() {
        let (traces, truth) = two_samples();
        let names = vec!["a".to_string(), "b".to_string()];
        let r = &layer_rankings(&traces, &truth, &names)[0];
        assert_eq!((r.signal_tokens, r.noise_tokens), (4, 4));
        // a: signal {0.8, 0.6} vs noise {-0.2, 0.5}: 4 of 4 pairs won.
        // b: signal {0.1, -0.5} vs noise {0.9, -0.4}: 0.1 > -0.4 only: 1 of 4.
        let by: Vec<Option<f64>> = r.by_modality.iter().map(|g| g.auc).collect();
        assert_eq!(by, [Some(1.0), Some(0.25)]);
        assert_eq!(r.auc_modality_mean, Some(0.625));
        // pooled: signal {0.8, 0.6, 0.1, -0.5} vs noise {-0.2, 0.5, 0.9, -0.4}:
        // 0.8 beats 3, 0.6 beats 3, 0.1 beats 2, -0.5 beats 0: 8 of 16.
        assert_eq!(r.auc, Some(0.5));
        // kept: signal a0 (s0), a1 (s1) of 4; noise b1 (s0), a0 (s1) of 4.
        assert_eq!((r.kept_rate_signal, r.kept_rate_noise), (0.5, 0.5));
        assert_eq!(r.kept_rate_placeholder, None);
    }

    #[test]
    fn the_conflict_grade_compares_modalities_of_one_sample() {
        let (traces, truth) = two_samples();
        let names = vec!["a".to_string(), "b".to_string()];
        let c = &layer_rankings(&traces, &truth, &names)[0].conflict;
        // Only sample 0 conflicts (b shows 4): a {0.8, -0.2} against b {0.1, 0.9}:
        // 0.8 beats 0.1 only: 1 of 4 pairs. Sample 1 agrees everywhere: no pairs.
        assert_eq!(c.auc, Some(0.25));
        assert_eq!((c.agreeing_tokens, c.conflicting_tokens), (6, 2));
        // kept: agreeing a0 (s0), a0 and a1 (s1) = 3 of 6; conflicting b1 (s0) = 1 of 2.
        assert_eq!((c.kept_rate_agreeing, c.kept_rate_conflicting), (0.5, 0.5));
    }

    /// An absent modality's tokens are placeholders: out of every AUC, with a kept rate of
    /// their own.
    #[test]
    fn placeholders_are_graded_apart() {
        let (mut traces, truth) = two_samples();
        traces[0].available = vec![true, false];
        let names = vec!["a".to_string(), "b".to_string()];
        let r = &layer_rankings(&traces, &truth, &names)[0];
        assert_eq!((r.signal_tokens, r.noise_tokens), (3, 3));
        assert_eq!(r.kept_rate_placeholder, Some(0.5));
        // b now holds sample 1's tokens alone: signal {-0.5} vs noise {-0.4}.
        assert_eq!(r.by_modality[1].auc, Some(0.0));
        assert_eq!(r.conflict.auc, None);
    }

    /// The split's own score is graded where it is not xi: an order that reverses xi reverses
    /// the AUC.
    #[test]
    fn a_reference_ranking_is_graded_on_its_own_order() {
        let (mut traces, truth) = two_samples();
        for t in traces
            .iter_mut()
            .flat_map(|t| t.layers[0].tokens.iter_mut())
        {
            t.order = Some(-t.xi);
        }
        let names = vec!["a".to_string(), "b".to_string()];
        let r = &layer_rankings(&traces, &truth, &names)[0];
        let by: Vec<Option<f64>> = r.by_modality.iter().map(|g| g.auc).collect();
        assert_eq!(by, [Some(0.0), Some(0.75)]);
        assert_eq!(r.conflict.auc, Some(0.75));
        assert_eq!(r.auc_f, Some(0.5), "xi_f is graded as it is");
    }

    #[test]
    fn pearson_by_hand() {
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]), Some(1.0));
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // x = -1, 0, 1; y = 1, -2, 1: covariance 0.
        assert_eq!(pearson(&[-1.0, 0.0, 1.0], &[1.0, -2.0, 1.0]), Some(0.0));
        assert_eq!(pearson(&[1.0, 1.0], &[0.0, 2.0]), None);
    }

    /// Modality a's tokens score 0.8, -0.2, 0.5, 0.6 (mean 0.425), b's 0.1, 0.9, -0.5, -0.4
    /// (mean 0.025): eta squared = between / total sum of squares.
    #[test]
    fn the_drivers_name_each_modalitys_mean_and_its_share_of_the_variance() {
        let (traces, _) = two_samples();
        let names = vec!["a".to_string(), "b".to_string()];
        // Class evidence: sample 0's margins rise with xi, sample 1's fall.
        let margins = vec![vec![vec![4.0, 0.0, 1.0, 5.0], vec![-0.5, -0.6, 0.5, 0.4]]];
        let d = &layer_drivers(&traces, &names, &[2, 2], Some(&margins))[0];
        assert!((d.mean_xi_by_modality[0].1 - 0.425).abs() < 1e-6);
        assert!((d.mean_xi_by_modality[1].1 - 0.025).abs() < 1e-6);
        let xi = [0.8, -0.2, 0.1, 0.9, 0.5, 0.6, -0.5, -0.4];
        let grand: f64 = xi.iter().sum::<f64>() / 8.0;
        let total: f64 = xi.iter().map(|x| (x - grand) * (x - grand)).sum();
        let between =
            4.0 * (0.425 - grand) * (0.425 - grand) + 4.0 * (0.025 - grand) * (0.025 - grand);
        assert!((d.modality_share_of_variance.unwrap() - between / total).abs() < 1e-6);
        // xi_e = xi in these traces: perfectly correlated.
        assert!((d.corr_xi_attention.unwrap() - 1.0).abs() < 1e-6);
        let within = d.corr_xi_label_margin_within_sample.unwrap();
        let want = (pearson(&[0.8, -0.2, 0.1, 0.9], &[4.0, 0.0, 1.0, 5.0]).unwrap()
            + pearson(&[0.5, 0.6, -0.5, -0.4], &[-0.5, -0.6, 0.5, 0.4]).unwrap())
            / 2.0;
        assert!(
            (within - want).abs() < 1e-6 && want < 1.0,
            "{within} vs {want}"
        );
        assert!(
            (pearson(&[0.5, 0.6, -0.5, -0.4], &[-0.5, -0.6, 0.5, 0.4]).unwrap() + 1.0).abs() < 1e-9
        );
        assert_eq!(mean_xi_of(&traces, 0).len(), 1);
        assert!((mean_xi_of(&traces, 0)[0].0 - 0.425).abs() < 1e-6);
    }

    #[test]
    fn kept_share_counts_a_modalitys_kept_slots() {
        let (traces, _) = two_samples();
        // 4 kept slots: s0 a0, b1; s1 a0, a1.
        assert_eq!(kept_share(&traces, 0), vec![0.75]);
        assert_eq!(kept_share(&traces, 1), vec![0.25]);
    }

    /// Data without ground truth still gets its drivers: one per refinement layer, class
    /// evidence included.
    #[test]
    fn drivers_need_no_ground_truth() {
        let device = Device::flex();
        let cfg = crate::ModelConfig::new(
            vec![
                crate::ModalitySpec::new("v".into(), 4, 3),
                crate::ModalitySpec::new("a".into(), 6, 2),
            ],
            3,
        )
        .with_d_model(8)
        .with_n_heads(2);
        let split = DataSplit::random_normal("r", cfg.modalities.clone(), 12, 3, 5);
        assert!(split.truth.is_none());
        let model = cfg.init(&device).unwrap();
        let d = drivers(&model, &split, &device);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|l| l.corr_xi_label_margin.is_some()), "{d:?}");
        assert_eq!(d[0].mean_xi_by_modality.len(), 2);
        assert!(ranking_report(&model, &split, None, &device).is_err());
    }
}
