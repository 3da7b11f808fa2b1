//! The multimodal transformer of Eq. 2 (a pre-LN ViLT-style encoder), also used as the
//! unimodal transformers of Eq. 3, with optional per-layer input prompts (MAPs, MSPs).
//!
//! Dimension key: see the crate root (`B`, `N`, `d`, `L`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::activation::ActivationConfig;
use burn::nn::attention::MultiHeadAttention;
use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderLayer};
use burn::tensor::{Device, Tensor};

use crate::kernels::{self, Execution, HeadLayout};

/// Configuration of a transformer encoder stack.
#[derive(Config, Debug)]
pub struct EncoderConfig {
    /// Hidden size d.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Stacked layers.
    pub n_layers: usize,
    /// Feed-forward width as a multiple of d (ViLT: 4).
    #[config(default = 4)]
    pub ff_mult: usize,
}

/// A stack of pre-LN transformer layers (GELU, no dropout), as ViLT and the PyTorch peer.
#[derive(Module, Debug)]
pub struct Encoder {
    /// The layers, applied in order.
    pub layers: Vec<TransformerEncoderLayer>,
    /// How the operations run (set by [`crate::Model::set_execution`]; not configuration).
    #[module(skip)]
    pub execution: Execution,
    /// How the attention's Q, K and V are laid out (set by [`crate::Model::with_head_layout`];
    /// not configuration).
    #[module(skip)]
    pub head_layout: HeadLayout,
}

impl EncoderConfig {
    /// Builds the encoder on `device`.
    pub fn init(&self, device: &Device) -> Encoder {
        let layer = TransformerEncoderConfig::new(
            self.d_model,
            self.ff_mult * self.d_model,
            self.n_heads,
            1,
        )
        .with_dropout(0.0)
        .with_norm_first(true)
        .with_activation(ActivationConfig::Gelu);
        Encoder {
            layers: (0..self.n_layers)
                .map(|_| TransformerEncoderLayer::new(&layer, device))
                .collect(),
            execution: Execution::default(),
            head_layout: HeadLayout::default(),
        }
    }
}

impl Encoder {
    /// Eq. 2: h = Transformer(x).
    ///
    /// # Shapes
    /// - x: `[B, N, d]`
    /// - output: `[B, N, d]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.layers
            .iter()
            .fold(x, |x, layer| self.layer_forward(layer, x))
    }

    /// Eq. 2 with input-level prompts: before layer `l < prompts.len()`, `prompts[l]` is
    /// prepended to the sequence, and removed again after the layer (MAPs / MSPs: each layer's
    /// prompts replace the previous layer's).
    ///
    /// # Shapes
    /// - x: `[B, N, d]`; prompts: each `[B, L, d]`
    /// - output: `[B, N, d]`
    pub fn forward_with_prompts(&self, x: Tensor<3>, prompts: &[Tensor<3>]) -> Tensor<3> {
        let mut x = x;
        for (l, layer) in self.layers.iter().enumerate() {
            x = match prompts.get(l) {
                Some(prompt) => {
                    let n = x.dims()[1];
                    let len = prompt.dims()[1];
                    let with_prompt = Tensor::cat(vec![prompt.clone(), x], 1); // [B, L + N, d]
                    self.layer_forward(layer, with_prompt).narrow(1, len, n) // [B, N, d]
                }
                None => self.layer_forward(layer, x),
            };
        }
        x
    }
}

impl Encoder {
    /// One pre-LN layer: x + MHA(LN_2(x)), then + FFN(LN_1(.)), the attention's softmax and the
    /// FFN's GELU through [`kernels`]; under [`Execution::BurnOps`], Burn's
    /// `TransformerEncoderLayer::forward` itself (the same sub-layers in the same order; no
    /// masks, dropout 0).
    ///
    /// # Shapes
    /// - x, output: `[B, N, d]`
    fn layer_forward(&self, layer: &TransformerEncoderLayer, x: Tensor<3>) -> Tensor<3> {
        if !self.execution.kernels() || layer.mha.quiet_softmax {
            return layer.forward(x, None, None);
        }
        assert!(layer.norm_first, "the encoder is built pre-LN");
        let attended = self_attention(
            &layer.mha,
            self.head_layout,
            kernels::layer_norm(&layer.norm_2, x.clone(), Execution::Kernels),
        ); // [B, N, d]
        let x = x + layer.dropout.forward(attended);
        let ff = &layer.pwff;
        let hidden = kernels::gelu(
            kernels::linear_rows(
                &ff.linear_inner,
                kernels::layer_norm(&layer.norm_1, x.clone(), Execution::Kernels),
                Execution::Kernels,
            ),
            Execution::Kernels,
        ); // [B, N, ff d]
        let out = kernels::linear_rows(
            &ff.linear_outer,
            ff.dropout.forward(hidden),
            Execution::Kernels,
        ); // [B, N, d]
        x + layer.dropout.forward(out)
    }
}

/// Burn's `MultiHeadAttention::forward` for self-attention without masks, through
/// [`kernels::self_attention_context`] (Q, K, V feature-major on a GPU except where Burn's
/// attention op runs, token-major on flex).
///
/// # Shapes
/// - x, output: `[B, N, d]`
fn self_attention(mha: &MultiHeadAttention, layout: HeadLayout, x: Tensor<3>) -> Tensor<3> {
    let projections = [&mha.query, &mha.key, &mha.value];
    // EncoderConfig::init builds no attention dropout; a layer with one keeps it on its weights.
    let dropout = |weights: Tensor<4>| mha.dropout.forward(weights);
    let weights: Option<&dyn Fn(Tensor<4>) -> Tensor<4>> =
        (mha.dropout.prob != 0.0).then_some(&dropout);
    let context = kernels::self_attention_context(
        projections,
        x,
        mha.n_heads,
        weights,
        layout,
        Execution::Kernels,
    ); // [B, N, d]
    kernels::linear_rows(&mha.output, context, Execution::Kernels) // [B, N, d]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn shapes_hold_for_odd_sizes_and_prompts_change_the_output() {
        let device = Device::flex();
        let enc = EncoderConfig::new(8, 2, 2).init(&device);
        let x = Tensor::<3>::random([3, 7, 8], Distribution::Normal(0.0, 1.0), &device);
        let plain = enc.forward(x.clone());
        assert_eq!(plain.dims(), [3, 7, 8]);
        let prompt = Tensor::<3>::random([3, 2, 8], Distribution::Normal(0.0, 1.0), &device);
        let prompted = enc.forward_with_prompts(x.clone(), &[prompt]);
        assert_eq!(prompted.dims(), [3, 7, 8]);
        let diff: f32 = (plain.clone() - prompted).abs().max().into_scalar();
        assert!(diff > 1e-4, "a prompt must change the output");
        let same: f32 = (plain - enc.forward_with_prompts(x, &[]))
            .abs()
            .max()
            .into_scalar();
        assert!(same < 1e-6);
    }
}
