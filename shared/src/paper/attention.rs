//! Prompt insertion (Eq. 6) and the prompt-conditioned attention giving r and e (Eqs. 7-8).
//!
//! Dimension key: see the crate root (`B`, `N`, `d`, `H`, `d_h`, `L`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::config::PromptInsertion;
use crate::kernels::{self, Execution, HeadLayout};

/// Configuration of the refinement attention.
#[derive(Config, Debug)]
pub struct ContextAttentionConfig {
    /// Hidden size d.
    pub d_model: usize,
    /// Heads n_h; must divide d.
    pub n_heads: usize,
    /// How the prompt P enters (Eq. 6 and the alternatives of Tables 5-6).
    #[config(default = "PromptInsertion::Token")]
    pub insertion: PromptInsertion,
    /// Prompt tokens of the MAPs-input insertion (P is expanded to this many).
    #[config(default = 4)]
    pub prompt_len: usize,
}

/// W^Q, W^K, W^V, W^O of Eq. 7, plus the prompt maps of the MAPs insertion types.
#[derive(Module, Debug)]
pub struct ContextAttention {
    /// W^Q (all heads): d -> d.
    pub query: Linear,
    /// W^K (all heads): d -> d.
    pub key: Linear,
    /// W^V (all heads): d -> d.
    pub value: Linear,
    /// W^O: d -> d.
    pub output: Linear,
    /// MAPs-input: P -> L prompt tokens (d -> L d); MAPs-attention: P -> one key and one value
    /// (d -> 2d). None for the token and summation types.
    pub prompt_map: Option<Linear>,
    /// Heads n_h.
    pub n_heads: usize,
    /// Prompt tokens of the MAPs-input insertion.
    pub prompt_len: usize,
    /// The insertion type (stored by name so the module stays a plain record).
    #[module(skip)]
    pub insertion: PromptInsertion,
    /// How the operations run (set by [`crate::Model::set_execution`]; not configuration).
    #[module(skip)]
    pub execution: Execution,
    /// How Q, K and V are laid out (set by [`crate::Model::with_head_layout`]; not
    /// configuration).
    #[module(skip)]
    pub head_layout: HeadLayout,
}

impl ContextAttentionConfig {
    /// Builds the attention on `device`.
    pub fn init(&self, device: &Device) -> ContextAttention {
        let d = self.d_model;
        let linear = || LinearConfig::new(d, d).init(device);
        let prompt_map = match self.insertion {
            PromptInsertion::Token | PromptInsertion::Summation => None,
            PromptInsertion::MapsInput => {
                Some(LinearConfig::new(d, self.prompt_len * d).init(device))
            }
            PromptInsertion::MapsAttention => Some(LinearConfig::new(d, 2 * d).init(device)),
        };
        ContextAttention {
            query: linear(),
            key: linear(),
            value: linear(),
            output: linear(),
            prompt_map,
            n_heads: self.n_heads,
            prompt_len: self.prompt_len,
            insertion: self.insertion,
            execution: Execution::default(),
            head_layout: HeadLayout::default(),
        }
    }
}

/// What the attention gives the ranking and the redistribution.
pub struct AttentionOutput {
    /// r of Eq. 7, the conditionally enhanced tokens. [B, N, d]
    pub r: Tensor<3>,
    /// e of Eq. 8: head-averaged attention restricted to token keys; row i = query i. [B, N, N]
    pub e: Tensor<3>,
}

impl ContextAttention {
    /// Eqs. 6-8. The prompt P is inserted as configured (Eq. 6: h_p = [h_e; P]); queries come
    /// from the N tokens, keys and values from h_p, so a_i is [N, N + 1];
    /// r = [a_1 h_p W_1^V | ... ] W^O (Eq. 7) and e = mean_i a_i over the token columns (Eq. 8).
    ///
    /// The insertion types: `Token` appends P as one key/value row; `Summation` adds P to every
    /// token (queries, keys and values all see it, no extra row); `MapsInput` appends L rows
    /// made from P through W^K, W^V; `MapsAttention` appends one key and one value made from P
    /// directly, bypassing W^K, W^V. In every case e keeps only the N token columns, so rows of
    /// e sum to less than 1 by the attention paid to the prompt.
    ///
    /// # Shapes
    /// - tokens: `[B, N, d]`; prompt: `[B, d]`
    /// - output: r `[B, N, d]`, e `[B, N, N]`
    pub fn forward(&self, tokens: Tensor<3>, prompt: Tensor<2>) -> AttentionOutput {
        let [b, n, d] = tokens.dims();
        let prompt_row = prompt.clone().reshape([b, 1, d]); // [B, 1, d]
        // Heads side by side in the feature axis, in the projections' layout (`HeadLayout`; by
        // default feature-major `[B, d, T]` on a GPU, each head a view the products read without
        // a copy, and token-major `[B, T, d]` on flex, as its fused attention reads them). The
        // same values.
        let layout = self.head_layout.resolved(&tokens.device(), self.execution);
        let project = |linear: &Linear, x: Tensor<3>| layout.project(linear, x, self.execution);
        // The queries first: recorded after the keys' and values' products, the queries'
        // product ran without its bias addition, which Burn's fusion left as a kernel of its
        // own (its fusion trace, docs/RESULTS.md); first, it takes it as its epilogue.
        let queries_from = match self.insertion {
            PromptInsertion::Summation => tokens.clone() + prompt_row.clone(), // [B, N, d]
            _ => tokens.clone(),
        };
        let q = project(&self.query, queries_from.clone()); // [B, d, N] or [B, N, d]
        // What the keys and values are projected from, and the prompt's own key and value where
        // they bypass W^K, W^V.
        let (keys_from, prompt_key_value) = match self.insertion {
            PromptInsertion::Token => (Tensor::cat(vec![tokens, prompt_row], 1), None), // [B, N+1, d]
            PromptInsertion::Summation => (queries_from, None),                         // [B, N, d]
            PromptInsertion::MapsInput => {
                let map = self
                    .prompt_map
                    .as_ref()
                    .expect("maps-input has a prompt map");
                let prompts = kernels::linear_vectors(map, prompt, self.execution).reshape([
                    b,
                    self.prompt_len,
                    d,
                ]); // [B, L, d]
                (Tensor::cat(vec![tokens, prompts], 1), None) // [B, N+L, d]
            }
            PromptInsertion::MapsAttention => {
                let map = self
                    .prompt_map
                    .as_ref()
                    .expect("maps-attention has a prompt map");
                let kv = kernels::linear_vectors(map, prompt, self.execution); // [B, 2d]
                let key_prompt = kv.clone().narrow(1, 0, d); // [B, d]
                let value_prompt = kv.narrow(1, d, d); // [B, d]
                (tokens, Some((key_prompt, value_prompt))) // [B, N, d]
            }
        };
        let mut keys = project(&self.key, keys_from.clone()); // N' keys: [B, d, N'] or [B, N', d]
        let mut values = project(&self.value, keys_from); // [B, d, N'] or [B, N', d]
        if let Some((key_prompt, value_prompt)) = prompt_key_value {
            // One more key and value, N' = N + 1, in the projections' layout.
            let axis = layout.token_axis();
            keys = Tensor::cat(vec![keys, key_prompt.unsqueeze_dim(axis)], axis);
            values = Tensor::cat(vec![values, value_prompt.unsqueeze_dim(axis)], axis);
        }
        // Rows of a are over the keys.
        let a = layout.weights(q, keys, self.n_heads, self.execution); // [B, H, N, N']
        // e before r: the caller adds the residual to r, and under Burn's fusion the output
        // product takes that addition as its epilogue only if no other op is recorded between.
        // The mean over heads before the token columns are taken (the same numbers: each
        // column's mean is its own): under Burn's fusion fewer kernels (with the softmax as
        // one fused reduction, lavapipe batch 64: 986 per training step against 992 for the
        // slice first, 166 per inference batch either way; docs/RESULTS.md).
        let e = a.clone().mean_dim(1).narrow(3, 0, n).reshape([b, n, n]); // [B, N, N]
        let context = layout.context(a, values, self.execution); // [B, N, d]
        let r = kernels::linear_rows(&self.output, context, self.execution); // [B, N, d]
        AttentionOutput { r, e }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn every_insertion_type_gives_r_and_e_of_the_right_shape_and_mass() {
        let device = Device::flex();
        for insertion in PromptInsertion::ALL {
            let attn = ContextAttentionConfig::new(8, 2)
                .with_insertion(insertion)
                .with_prompt_len(3)
                .init(&device);
            let tokens = Tensor::<3>::random([2, 5, 8], Distribution::Normal(0.0, 1.0), &device);
            let prompt = Tensor::<2>::random([2, 8], Distribution::Normal(0.0, 1.0), &device);
            let out = attn.forward(tokens, prompt);
            assert_eq!(out.r.dims(), [2, 5, 8], "{insertion:?}");
            assert_eq!(out.e.dims(), [2, 5, 5], "{insertion:?}");
            let row_sums = out.e.sum_dim(2).into_data().try_to_vec::<f32>().unwrap();
            for s in row_sums {
                if insertion == PromptInsertion::Summation {
                    assert!((s - 1.0).abs() < 1e-5, "{insertion:?}: {s}");
                } else {
                    assert!(
                        s < 1.0 && s > 0.0,
                        "{insertion:?}: the prompt takes some mass, {s}"
                    );
                }
            }
        }
    }
}
