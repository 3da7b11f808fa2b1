//! The mixed-context prompt P of Eq. 5.
//!
//! Dimension key: see the crate root (`B`, `M`, `N`, `d`).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::kernels::{self, Execution};

/// Configuration of one refinement layer's prompt generator.
#[derive(Config, Debug)]
pub struct MixedContextPromptConfig {
    /// Number of modalities M (one learnable p^i each).
    pub n_modalities: usize,
    /// Hidden size d.
    pub d_model: usize,
    /// Mix in the pooled context f_Phi(h_e); false gives the `mgr-no-mixed` ablation, whose
    /// prompt is the sum of the pattern prompts only.
    #[config(default = true)]
    pub mixed_context: bool,
    /// Standard deviation of p^i at initialisation.
    #[config(default = 0.02)]
    pub init_std: f64,
}

/// p^i (one per modality) and f_Mix of Eq. 5.
#[derive(Module, Debug)]
pub struct MixedContextPrompt {
    /// p^i, the learnable modality prompts indicating absence: [M, d].
    pub modality_prompts: Param<Tensor<2>>,
    /// f_Mix: Linear(2d -> d), mixing the absence status with the pooled context.
    pub mix: Linear,
    /// Whether f_Phi's pooled context is mixed in (false: `mgr-no-mixed`).
    pub mixed_context: bool,
    /// How the operations run (set by [`crate::Model::set_execution`]; not configuration).
    #[module(skip)]
    pub execution: Execution,
}

impl MixedContextPromptConfig {
    /// Builds the prompt generator on `device`.
    pub fn init(&self, device: &Device) -> MixedContextPrompt {
        MixedContextPrompt {
            modality_prompts: Initializer::Normal {
                mean: 0.0,
                std: self.init_std,
            }
            .init([self.n_modalities, self.d_model], device),
            mix: LinearConfig::new(2 * self.d_model, self.d_model).init(device),
            mixed_context: self.mixed_context,
            execution: Execution::default(),
        }
    }
}

impl MixedContextPrompt {
    /// Eq. 5: P = f_Mix([sum_{i in M} p^i || f_Phi(h_e)]), f_Phi = mean pooling over tokens.
    /// One P per sample; the sum runs over that sample's available modalities.
    ///
    /// # Shapes
    /// - tokens: `[B, N, d]`; available: `[B, M]` (1.0 present, 0.0 absent)
    /// - output: `[B, d]`
    pub fn forward(&self, tokens: Tensor<3>, available: Tensor<2>) -> Tensor<2> {
        let status = self.status(available); // [B, d]
        if !self.mixed_context {
            return status;
        }
        let context = kernels::mean_over_tokens(tokens, self.execution); // [B, d]
        let mixed = Tensor::cat(vec![status, context], 1); // [B, 2d]
        kernels::linear_vectors(&self.mix, mixed, self.execution) // [B, d]
    }

    /// The absence status of Eq. 5, sum_{i in M} p^i over each sample's available modalities.
    ///
    /// # Shapes
    /// - available: `[B, M]` (1.0 present, 0.0 absent)
    /// - output: `[B, d]`
    pub fn status(&self, available: Tensor<2>) -> Tensor<2> {
        available.matmul(self.modality_prompts.val()) // [B, d]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn prompt_sums_available_modality_prompts() {
        let device = Device::flex();
        let prompt = MixedContextPromptConfig::new(3, 4)
            .with_mixed_context(false)
            .init(&device);
        let available = Tensor::<2>::from_data(TensorData::from([[1.0f32, 0.0, 1.0]]), &device);
        let tokens = Tensor::<3>::zeros([1, 5, 4], &device);
        let p = prompt.modality_prompts.val();
        let expected = p.clone().narrow(0, 0, 1) + p.narrow(0, 2, 1);
        prompt
            .forward(tokens, available)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Default::default());
    }

    #[test]
    fn mixed_prompt_depends_on_the_tokens() {
        let device = Device::flex();
        let prompt = MixedContextPromptConfig::new(2, 4).init(&device);
        let available = Tensor::<2>::ones([1, 2], &device);
        let a = prompt.forward(Tensor::zeros([1, 3, 4], &device), available.clone());
        let b = prompt.forward(Tensor::ones([1, 3, 4], &device), available);
        assert_eq!(a.dims(), [1, 4]);
        assert!((a - b).abs().max().into_scalar::<f32>() > 1e-4);
    }
}
