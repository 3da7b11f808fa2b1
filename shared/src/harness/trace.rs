//! The trace of one forward pass: what the demo draws and what `mgr trace` prints.
//!
//! It is read off the tensors [`crate::Model::forward`] computes anyway (no second code path):
//! per refinement layer and sample, every token's origin, its scores xi_f, xi_e, xi (Eq. 9),
//! its rank and kept/biased status (Eq. 10), and the redistribution weights A (Eq. 11).

use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::config::Task;
use crate::model::{Model, ModelOutput};
use crate::refinement::RefinementOutput;

/// Where a token came from: the modality and its position among that modality's tokens.
/// A kept token keeps its origin through the layers (it absorbs the biased tokens' messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenOrigin {
    /// Index into the model's modalities.
    pub modality: usize,
    /// Position in that modality's token sequence (patch, frame, word).
    pub position: usize,
}

/// One token in one refinement layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenTrace {
    /// Where the token came from.
    pub origin: TokenOrigin,
    /// Feature-level score tanh(f_Psi(r)) (Eq. 9).
    pub xi_f: f32,
    /// Correlation-level score tanh(column sum of e) (Eq. 9).
    pub xi_e: f32,
    /// Combined score (Eq. 9); higher = less likely biased.
    pub xi: f32,
    /// The score the split ranked by where the layer's ranking is not the learned one
    /// ([`crate::readings::SplitRanking`]): random draws, -xi, or an oracle's 4 x mark + xi.
    /// Absent (and not written) under the learned ranking, whose split ranks by xi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f32>,
    /// Rank by xi, 0 = highest, ties to the lower index (Eq. 10).
    pub rank: usize,
    /// Kept (idx_u) or biased (idx_b).
    pub kept: bool,
}

/// A redistribution edge: biased token `from` sends information to kept token `to` (Eq. 12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    /// Index of the biased token in this layer's `tokens`.
    pub from: usize,
    /// Index of the kept token in this layer's `tokens`.
    pub to: usize,
    /// A_{from,to} = e_{from,to} (Eq. 11).
    pub weight: f32,
}

/// One refinement layer of one sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerTrace {
    /// Layer index, 0-based.
    pub layer: usize,
    /// The tokens entering the layer, in their order there.
    pub tokens: Vec<TokenTrace>,
    /// Every biased -> kept edge with a non-zero weight.
    pub edges: Vec<Edge>,
}

/// The trace of one sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleTrace {
    /// Modality names.
    pub modalities: Vec<String>,
    /// Which modalities were present.
    pub available: Vec<bool>,
    /// Class probabilities (classification) or the predicted value (regression).
    pub output: Vec<f32>,
    /// The predicted class (classification only).
    pub predicted_class: Option<usize>,
    /// One entry per refinement layer (empty for methods without refinement).
    pub layers: Vec<LayerTrace>,
}

impl Model {
    /// Runs the forward pass and reads the trace of every sample of `batch` off it. The pass is
    /// [`Model::forward_shard`]: everything but L_div (Eq. 4), which no trace shows (the
    /// output's `l_div` is 0), so the page's inference computes no pairwise distances.
    pub fn trace(&self, batch: &Batch) -> (ModelOutput, Vec<SampleTrace>) {
        let output = self.forward_shard(batch);
        let traces = read_traces(self, batch, &output);
        (output, traces)
    }
}

fn host<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
}

/// Converts the tensors of `output` into one [`SampleTrace`] per sample.
pub fn read_traces(model: &Model, batch: &Batch, output: &ModelOutput) -> Vec<SampleTrace> {
    let cfg = &model.config;
    let b = batch.len();
    let c = cfg.n_outputs;
    let out = host(model.probabilities(output.output.clone()));
    let first: Vec<TokenOrigin> = cfg
        .modalities
        .iter()
        .enumerate()
        .flat_map(|(m, s)| {
            (0..s.n_tokens).map(move |p| TokenOrigin {
                modality: m,
                position: p,
            })
        })
        .collect();
    let mut origins: Vec<Vec<TokenOrigin>> = vec![first; b];
    let mut layers: Vec<Vec<LayerTrace>> = vec![Vec::new(); b];
    for (l, layer) in output.layers.iter().enumerate() {
        let scores = LayerScores::of(layer);
        for s in 0..b {
            let trace = scores.sample(l, s, &origins[s]);
            origins[s] = kept_in_rank_order(&trace.tokens);
            layers[s].push(trace);
        }
    }
    layers
        .into_iter()
        .enumerate()
        .map(|(s, layers)| {
            let row = out[s * c..(s + 1) * c].to_vec();
            let predicted_class =
                (cfg.task == Task::Classification).then(|| crate::metrics::argmax(&row));
            SampleTrace {
                modalities: cfg.modalities.iter().map(|m| m.name.clone()).collect(),
                available: batch.available_host[s].clone(),
                output: row,
                predicted_class,
                layers,
            }
        })
        .collect()
}

/// One refinement layer's scores, split and weights for the whole batch, on the host.
struct LayerScores {
    /// Tokens entering the layer, N.
    n: usize,
    xi_f: Vec<f32>,
    xi_e: Vec<f32>,
    xi: Vec<f32>,
    order: Option<Vec<f32>>,
    rank: Vec<f32>,
    kept: Vec<f32>,
    /// Eq. 11's A, `[B, N, N]` row-major.
    adjacency: Vec<f32>,
}

impl LayerScores {
    fn of(layer: &RefinementOutput) -> Self {
        Self {
            n: layer.xi.dims()[1],
            xi_f: host(layer.xi_f.clone()),
            xi_e: host(layer.xi_e.clone()),
            xi: host(layer.xi.clone()),
            order: layer.order.clone().map(host),
            rank: host(layer.rank.clone()),
            kept: host(layer.kept.clone()),
            adjacency: host(layer.adjacency.clone()),
        }
    }

    /// Sample `s`'s trace of layer `l`, whose tokens came from `origins` (in sequence order):
    /// its tokens and the redistribution edges from each biased token to each kept one.
    fn sample(&self, l: usize, s: usize, origins: &[TokenOrigin]) -> LayerTrace {
        let n = self.n;
        let at = |j: usize| s * n + j;
        let tokens: Vec<TokenTrace> = (0..n)
            .map(|j| TokenTrace {
                origin: origins[j],
                xi_f: self.xi_f[at(j)],
                xi_e: self.xi_e[at(j)],
                xi: self.xi[at(j)],
                order: self.order.as_ref().map(|o| o[at(j)]),
                rank: self.rank[at(j)] as usize,
                kept: self.kept[at(j)] > 0.5,
            })
            .collect();
        let mut edges = Vec::new();
        for from in (0..n).filter(|&j| !tokens[j].kept) {
            for to in (0..n).filter(|&i| tokens[i].kept) {
                let weight = self.adjacency[s * n * n + from * n + to];
                if weight > 0.0 {
                    edges.push(Edge { from, to, weight });
                }
            }
        }
        LayerTrace {
            layer: l,
            tokens,
            edges,
        }
    }
}

impl TokenTrace {
    /// The score the split ranked this token by: `order` where the ranking is a reference one,
    /// xi under the learned ranking.
    pub fn split_score(&self) -> f32 {
        self.order.unwrap_or(self.xi)
    }
}

/// The origins of the tokens a layer keeps, in rank order: the sequence the next layer sees.
fn kept_in_rank_order(tokens: &[TokenTrace]) -> Vec<TokenOrigin> {
    let mut next: Vec<(usize, TokenOrigin)> = tokens
        .iter()
        .filter(|t| t.kept)
        .map(|t| (t.rank, t.origin))
        .collect();
    next.sort_by_key(|(r, _)| *r);
    next.into_iter().map(|(_, o)| o).collect()
}
