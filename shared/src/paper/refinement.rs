//! One refinement layer (Eqs. 5-12): prompt, attention, ranking, split, redistribution.
//!
//! Dimension key: see the crate root (`B`, `M`, `N`, `K`, `d`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Tensor};

use crate::attention::{ContextAttention, ContextAttentionConfig};
use crate::kernels::{self, Execution};
use crate::prompt::{MixedContextPrompt, MixedContextPromptConfig};
use crate::ranking::{Ranking, RankingConfig, top_rho_split};
use crate::readings::{GateScope, RefinementReadings, SplitRanking};
use crate::redistribution::{Redistribution, RedistributionConfig};

/// Configuration of one refinement layer.
#[derive(Config, Debug)]
pub struct RefinementLayerConfig {
    /// Number of modalities M.
    pub n_modalities: usize,
    /// Hidden size d.
    pub d_model: usize,
    /// Heads of the refinement attention.
    pub n_heads: usize,
    /// The readings of Eqs. 5-12 (rho, alpha_f, prompt insertion, gate, residuals, input norm),
    /// the trained defaults unless set.
    #[config(default = "RefinementReadings::default()")]
    pub readings: RefinementReadings,
    /// Mix the pooled context into P (false: `mgr-no-mixed`).
    #[config(default = true)]
    pub mixed_context: bool,
    /// Prompt tokens of the MAPs-input insertion (the model config's `prompt_len`).
    #[config(default = 4)]
    pub prompt_len: usize,
    /// Standard deviation of the modality prompts at initialisation.
    #[config(default = 0.02)]
    pub init_std: f64,
}

/// Eqs. 5-12 as one module.
#[derive(Module, Debug)]
pub struct RefinementLayer {
    /// Pre-LN on the incoming tokens (`refine_input_norm`).
    pub norm: Option<LayerNorm>,
    /// Eq. 5.
    pub prompt: MixedContextPrompt,
    /// Eqs. 6-8.
    pub attention: ContextAttention,
    /// Eq. 9.
    pub ranking: Ranking,
    /// Eqs. 11-12.
    pub redistribution: Redistribution,
    /// The readings this layer runs with: rho of Eq. 10, the gate and the residuals (the
    /// insertion, alpha_f and the input norm are built into the modules above).
    #[module(skip)]
    pub readings: RefinementReadings,
    /// How the operations run (set by [`crate::Model::set_execution`]; not configuration).
    #[module(skip)]
    pub execution: Execution,
}

impl RefinementLayerConfig {
    /// Builds the layer on `device`.
    pub fn init(&self, device: &Device) -> RefinementLayer {
        let readings = self.readings;
        RefinementLayer {
            norm: readings
                .refine_input_norm
                .then(|| LayerNormConfig::new(self.d_model).init(device)),
            prompt: MixedContextPromptConfig::new(self.n_modalities, self.d_model)
                .with_mixed_context(self.mixed_context)
                .with_init_std(self.init_std)
                .init(device),
            attention: ContextAttentionConfig::new(self.d_model, self.n_heads)
                .with_insertion(readings.prompt_insertion)
                .with_prompt_len(self.prompt_len)
                .init(device),
            ranking: RankingConfig::new(self.d_model, readings.alpha_f).init(device),
            redistribution: RedistributionConfig::new(self.d_model).init(device),
            readings,
            execution: Execution::default(),
        }
    }
}

/// Everything one refinement layer computed: the next tokens and what the trace shows.
#[derive(Clone, Debug)]
pub struct RefinementOutput {
    /// The K kept tokens, in rank order, refined by Eq. 12 (and gated by xi). [B, K, d]
    pub tokens: Tensor<3>,
    /// r, the prompt-conditioned tokens of Eqs. 7-8 that f_Psi ranks (Eq. 9): what a probe
    /// of the ranking reads. [B, N, d]
    pub r: Tensor<3>,
    /// xi_f of Eq. 9. [B, N]
    pub xi_f: Tensor<2>,
    /// xi_e of Eq. 9. [B, N]
    pub xi_e: Tensor<2>,
    /// xi of Eq. 9. [B, N]
    pub xi: Tensor<2>,
    /// What the split ranked by where that is not xi (a reference [`SplitRanking`]); None under
    /// the learned ranking. [B, N]
    pub order: Option<Tensor<2>>,
    /// Rank of each token (0 = most reliable). [B, N]
    pub rank: Tensor<2>,
    /// 1.0 kept, 0.0 biased (Eq. 10). [B, N]
    pub kept: Tensor<2>,
    /// The split's selection: `select[b, r, i] = 1` iff token i has rank r < K, so `select @ x`
    /// carries any per-token value on to the next layer's order. [B, K, N]
    pub select: Tensor<3>,
    /// Redistribution weights A of Eq. 11: row = biased sender, column = kept receiver. [B, N, N]
    pub adjacency: Tensor<3>,
}

impl RefinementLayer {
    /// K = ceil(rho N), at least 1 (Eq. 10: |idx_u| = rho |xi|).
    pub fn kept_tokens(&self, n: usize) -> usize {
        crate::config::kept_count(self.readings.rho, n)
    }

    /// Eqs. 5-12 on the current tokens (h_e for the first layer, the previous z after).
    ///
    /// The incoming tokens x are a residual stream, as in the encoder's pre-LN blocks: the
    /// attention (Eqs. 6-8) reads LN(x) when `norm` is set, and
    /// - r = x + Eq. 7 (`attention_residual`; else r = Eq. 7), so the ranking xi_f = f_Psi(r)
    ///   sees each token's own content and not only what it attends to;
    /// - u = Eq. 12 on r; z = r + u (`refine_residual`; else z = u);
    /// - the gate g(xi), where there is one, scales the whole token, z = g (r + u)
    ///   (`GateScope::Token`, TopK pooling's gate), or only the update, z = r + g u
    ///   (`GateScope::Update`); without the residual both are z = g u.
    ///
    /// The gate is the only path by which f_Psi and xi_e learn (the split is detached). A
    /// LayerNorm is invariant to a per-token scale, so the gate of a layer must reach the head
    /// through a path the next layer's LayerNorm does not cut: the residual stream.
    ///
    /// The split keeps the top-K of [`RefinementLayer::split_scores`]: xi itself under the
    /// paper's ranking, a reference ranking's scores otherwise (`keys`, from the model).
    ///
    /// # Shapes
    /// - tokens: `[B, N, d]`; available: `[B, M]` (1.0 present); keys: `[B, N]`
    /// - output: tokens `[B, K, d]`, scores `[B, N]`, adjacency `[B, N, N]`
    pub fn forward(
        &self,
        tokens: Tensor<3>,
        available: Tensor<2>,
        keys: Option<Tensor<2>>,
    ) -> RefinementOutput {
        let [b, n, d] = tokens.dims();
        let k = self.kept_tokens(n);
        let normed = match &self.norm {
            Some(norm) => kernels::layer_norm(norm, tokens.clone(), self.execution), // [B, N, d]
            None => tokens.clone(),
        };
        let prompt = self.prompt.forward(normed.clone(), available); // [B, d]  Eq. 5
        let attended = self.attention.forward(normed, prompt); // r [B, N, d], e [B, N, N]  Eqs. 6-8
        let r = if self.readings.attention_residual {
            tokens + attended.r // [B, N, d]
        } else {
            attended.r
        };
        let scores = self.ranking.forward(r.clone(), attended.e.clone()); // [B, N]  Eq. 9
        let order = self.split_scores(scores.xi.clone(), keys); // [B, N]
        let split = top_rho_split(order.clone(), k, self.execution); // [B, K, N] select  Eq. 10
        let order = (self.readings.ranking != SplitRanking::Learned).then_some(order);
        // The gate before Eq. 12: its element-wise steps on [B, N] and its reshape are then
        // recorded before the redistribution's products, and under Burn's fusion the product
        // of Eq. 12 takes the residual and the gate's product as its epilogue (recorded after
        // them, they ended its fused block and the product by g ran as a kernel of its own).
        let gate = self.readings.gate.map(|gate| {
            let g = gate.value.apply(scores.xi.clone()).reshape([b, n, 1]); // [B, N, 1]
            (g, gate.scope)
        });
        let adjacency = Redistribution::adjacency(attended.e, split.kept.clone()); // [B, N, N]  Eq. 11
        let update = self.redistribution.forward(r.clone(), adjacency.clone()); // [B, N, d]  Eq. 12
        let enhanced = r.clone();
        let residual = self.readings.refine_residual;
        let z = match gate {
            Some((g, GateScope::Update)) if residual => r + update * g,
            Some((g, GateScope::Token)) if residual => (r + update) * g,
            Some((g, _)) => update * g,
            None if residual => r + update,
            None => update,
        }; // [B, N, d]
        let kept_tokens = split.select.clone().matmul(z); // [B, K, d]
        assert_eq!(kept_tokens.dims(), [b, k, d]);
        RefinementOutput {
            tokens: kept_tokens,
            r: enhanced,
            xi_f: scores.xi_f,
            xi_e: scores.xi_e,
            xi: scores.xi,
            order,
            rank: split.rank,
            kept: split.kept,
            select: split.select,
            adjacency,
        }
    }

    /// What the split (Eq. 10) ranks by under this layer's [`SplitRanking`]:
    /// - `Learned`: xi (Eq. 9); `Inverted`: -xi, so the bottom-K are kept;
    /// - `Random`: `keys`, uniform scores the model drew for this pass;
    /// - the oracles: `keys` (1.0 for the tokens the truth keeps first, 0.0 for the rest) times
    ///   4 plus xi: xi lies in [-1, 1], so every token of the first group ranks above every token
    ///   of the second, and inside a group the learned order decides.
    ///
    /// # Panics
    /// Where a mode that needs `keys` gets none: the model always passes them (and the trainer
    /// refuses an oracle on data without ground truth before it builds a batch).
    ///
    /// # Shapes
    /// - xi, keys: `[B, N]`; output `[B, N]`
    pub fn split_scores(&self, xi: Tensor<2>, keys: Option<Tensor<2>>) -> Tensor<2> {
        let ranking = self.readings.ranking;
        let keys = || {
            keys.unwrap_or_else(|| panic!("the `{}` ranking needs per-token keys", ranking.name()))
        };
        match ranking {
            SplitRanking::Learned => xi,
            SplitRanking::Inverted => xi.neg(),
            SplitRanking::Random => keys(),
            SplitRanking::OracleNoise
            | SplitRanking::OracleConflict
            | SplitRanking::OracleMajority => keys().mul_scalar(4.0) + xi,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn odd_token_counts_and_k_of_one() {
        let device = Device::flex();
        for (n, rho, k) in [(7, 0.5, 4), (5, 0.01, 1), (3, 1.0, 3)] {
            let layer = RefinementLayerConfig::new(2, 8, 2)
                .with_readings(RefinementReadings::default().with_rho(rho))
                .init(&device);
            let x = Tensor::<3>::random([3, n, 8], Distribution::Normal(0.0, 1.0), &device);
            let available = Tensor::<2>::ones([3, 2], &device);
            let out = layer.forward(x, available, None);
            assert_eq!(out.tokens.dims(), [3, k, 8]);
            assert_eq!(out.select.dims(), [3, k, n]);
            assert_eq!(out.adjacency.dims(), [3, n, n]);
            let kept: f32 = out.kept.sum().into_scalar();
            assert_eq!(kept as usize, 3 * k);
        }
    }

    fn kept_of(layer: &RefinementLayer, x: &Tensor<3>, keys: Option<Tensor<2>>) -> Vec<f32> {
        let available = Tensor::<2>::ones([x.dims()[0], 2], &x.device());
        let out = layer.forward(x.clone(), available, keys);
        out.kept.into_data().try_to_vec::<f32>().unwrap()
    }

    fn layer_with(ranking: SplitRanking, device: &Device) -> RefinementLayer {
        RefinementLayerConfig::new(2, 8, 2)
            .with_readings(RefinementReadings::default().with_ranking(ranking))
            .init(device)
    }

    /// rho 0.5 on an even N: the inverted split keeps exactly the tokens the learned one drops.
    #[test]
    fn inverted_keeps_the_complement_of_learned() {
        let device = Device::flex();
        let x = Tensor::<3>::random([4, 10, 8], Distribution::Normal(0.0, 1.0), &device);
        let learned = layer_with(SplitRanking::Learned, &device);
        let mut inverted = learned.clone();
        inverted.readings.ranking = SplitRanking::Inverted;
        let a = kept_of(&learned, &x, None);
        let b = kept_of(&inverted, &x, None);
        assert_eq!(a.iter().sum::<f32>(), 20.0);
        for (i, (ka, kb)) in a.iter().zip(&b).enumerate() {
            assert_eq!(ka + kb, 1.0, "token {i} kept by both or by neither");
        }
    }

    /// An oracle keeps exactly its first group where K allows (here 3 of 6 tokens marked, K = 3),
    /// and where the group is larger than K (5 marked) it keeps only marked tokens, ranked first.
    #[test]
    fn an_oracle_keeps_its_truth_where_rho_allows_and_ranks_it_first_where_not() {
        let device = Device::flex();
        let x = Tensor::<3>::random([2, 6, 8], Distribution::Normal(0.0, 1.0), &device);
        let oracle = layer_with(SplitRanking::OracleNoise, &device);
        let marks = vec![
            0.0f32, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0,
        ];
        let keys = Tensor::<2>::from_data(TensorData::new(marks.clone(), [2, 6]), &device);
        let kept = kept_of(&oracle, &x, Some(keys.clone()));
        assert_eq!(kept[..6], marks[..6]);
        for (k, m) in kept[6..].iter().zip(&marks[6..]) {
            assert!(*k <= *m, "sample 1 kept an unmarked token: {kept:?}");
        }
        assert_eq!(kept[6..].iter().sum::<f32>(), 3.0);
        let available = Tensor::<2>::ones([2, 2], &device);
        let rank = oracle.forward(x, available, Some(keys)).rank;
        let rank = rank.into_data().try_to_vec::<f32>().unwrap();
        for (r, m) in rank[6..].iter().zip(&marks[6..]) {
            assert_eq!(
                *r < 5.0,
                *m == 1.0,
                "the 5 marked tokens take ranks 0-4: {rank:?}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "`random` ranking needs per-token keys")]
    fn a_ranking_without_its_keys_is_refused() {
        let device = Device::flex();
        let x = Tensor::<3>::random([1, 4, 8], Distribution::Normal(0.0, 1.0), &device);
        kept_of(&layer_with(SplitRanking::Random, &device), &x, None);
    }
}
