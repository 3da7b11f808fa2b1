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
use crate::readings::{GateScope, RefinementReadings};
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
    /// xi_f of Eq. 9. [B, N]
    pub xi_f: Tensor<2>,
    /// xi_e of Eq. 9. [B, N]
    pub xi_e: Tensor<2>,
    /// xi of Eq. 9. [B, N]
    pub xi: Tensor<2>,
    /// Rank of each token (0 = most reliable). [B, N]
    pub rank: Tensor<2>,
    /// 1.0 kept, 0.0 biased (Eq. 10). [B, N]
    pub kept: Tensor<2>,
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
    /// # Shapes
    /// - tokens: `[B, N, d]`; available: `[B, M]` (1.0 present)
    /// - output: tokens `[B, K, d]`, scores `[B, N]`, adjacency `[B, N, N]`
    pub fn forward(&self, tokens: Tensor<3>, available: Tensor<2>) -> RefinementOutput {
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
        let split = top_rho_split(scores.xi.clone(), k, self.execution); // [B, K, N] select  Eq. 10
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
            xi_f: scores.xi_f,
            xi_e: scores.xi_e,
            xi: scores.xi,
            rank: split.rank,
            kept: split.kept,
            adjacency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn odd_token_counts_and_k_of_one() {
        let device = Device::flex();
        for (n, rho, k) in [(7, 0.5, 4), (5, 0.01, 1), (3, 1.0, 3)] {
            let layer = RefinementLayerConfig::new(2, 8, 2)
                .with_readings(RefinementReadings::default().with_rho(rho))
                .init(&device);
            let x = Tensor::<3>::random([3, n, 8], Distribution::Normal(0.0, 1.0), &device);
            let available = Tensor::<2>::ones([3, 2], &device);
            let out = layer.forward(x, available);
            assert_eq!(out.tokens.dims(), [3, k, 8]);
            assert_eq!(out.adjacency.dims(), [3, n, n]);
            let kept: f32 = out.kept.sum().into_scalar();
            assert_eq!(kept as usize, 3 * k);
        }
    }
}
