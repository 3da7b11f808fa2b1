//! The task head f_task: mean pooling, LayerNorm, linear.
//!
//! Dimension key: see the crate root (`B`, `N`, `d`, `C`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

/// Configuration of the head.
#[derive(Config, Debug)]
pub struct TaskHeadConfig {
    /// Hidden size d.
    pub d_model: usize,
    /// Outputs C (classes, or 1 for regression).
    pub n_outputs: usize,
}

/// f_task: LayerNorm then Linear(d -> C) on the mean of the final tokens.
#[derive(Module, Debug)]
pub struct TaskHead {
    /// Normalises the pooled representation (pre-LN encoders leave it unnormalised).
    pub norm: LayerNorm,
    /// The classifier / regressor.
    pub linear: Linear,
}

impl TaskHeadConfig {
    /// Builds the head on `device`.
    pub fn init(&self, device: &Device) -> TaskHead {
        TaskHead {
            norm: LayerNormConfig::new(self.d_model).init(device),
            linear: LinearConfig::new(self.d_model, self.n_outputs).init(device),
        }
    }
}

impl TaskHead {
    /// Y' = f_task(z): mean-pool the tokens, normalise, project.
    ///
    /// # Shapes
    /// - tokens: `[B, N, d]`
    /// - output: `[B, C]`
    pub fn forward(&self, tokens: Tensor<3>) -> Tensor<2> {
        let [b, _, d] = tokens.dims();
        let pooled = tokens.mean_dim(1).reshape([b, d]); // [B, d]
        self.linear.forward(self.norm.forward(pooled)) // [B, C]
    }
}
