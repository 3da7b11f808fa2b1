//! The task head f_task: mean pooling, LayerNorm, (an optional hidden layer,) linear.
//!
//! Dimension key: see the crate root (`B`, `N`, `d`, `C`); `H` the hidden width.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

use crate::kernels::{self, Execution};

/// Configuration of the head.
#[derive(Config, Debug)]
pub struct TaskHeadConfig {
    /// Hidden size d.
    pub d_model: usize,
    /// Outputs C (classes, or 1 for regression).
    pub n_outputs: usize,
    /// Width H of a hidden layer (Linear + GELU) before the output layer; 0: none, the
    /// paper's linear head. Only `baseline-wide` has one ([`crate::ModelConfig::head_hidden`]).
    #[config(default = 0)]
    pub hidden: usize,
}

/// f_task: LayerNorm, then Linear(d -> C) (or Linear(d -> H), GELU, Linear(H -> C)) on the mean
/// of the final tokens.
#[derive(Module, Debug)]
pub struct TaskHead {
    /// Normalises the pooled representation (pre-LN encoders leave it unnormalised).
    pub norm: LayerNorm,
    /// The hidden layer of a wide head, d -> H.
    pub hidden: Option<Linear>,
    /// The classifier / regressor.
    pub linear: Linear,
    /// How the operations run (set by [`crate::Model::set_execution`]; not configuration).
    #[module(skip)]
    pub execution: Execution,
}

impl TaskHeadConfig {
    /// Builds the head on `device`.
    pub fn init(&self, device: &Device) -> TaskHead {
        let into_output = if self.hidden > 0 {
            self.hidden
        } else {
            self.d_model
        };
        TaskHead {
            norm: LayerNormConfig::new(self.d_model).init(device),
            hidden: (self.hidden > 0)
                .then(|| LinearConfig::new(self.d_model, self.hidden).init(device)),
            linear: LinearConfig::new(into_output, self.n_outputs).init(device),
            execution: Execution::default(),
        }
    }
}

impl TaskHead {
    /// Y' = f_task(z): mean-pool the tokens, normalise, (widen,) project.
    ///
    /// # Shapes
    /// - tokens: `[B, N, d]`
    /// - output: `[B, C]`
    pub fn forward(&self, tokens: Tensor<3>) -> Tensor<2> {
        let [b, _, d] = tokens.dims();
        let exec = self.execution;
        let pooled =
            kernels::layer_norm_vectors(&self.norm, tokens.mean_dim(1).reshape([b, d]), exec); // [B, d]
        let into_output = match &self.hidden {
            Some(hidden) => gelu(kernels::linear_vectors(hidden, pooled, exec)), // [B, H]
            None => pooled,                                                      // [B, d]
        };
        kernels::linear_vectors(&self.linear, into_output, exec) // [B, C]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// The wide head is LayerNorm, Linear, GELU, Linear: checked against the same steps
    /// written out with the head's own weights.
    #[test]
    fn a_wide_head_is_norm_hidden_gelu_linear() {
        let device = Device::flex();
        let head = TaskHeadConfig::new(4, 3).with_hidden(5).init(&device);
        let hidden = head.hidden.as_ref().expect("a hidden layer");
        assert_eq!(hidden.weight.dims(), [4, 5]);
        assert_eq!(head.linear.weight.dims(), [5, 3]);
        let tokens = Tensor::<3>::from_data(
            TensorData::new(
                vec![0.5f32, -1.0, 2.0, 0.25, 1.5, 0.0, -0.5, 1.0],
                [1, 2, 4],
            ),
            &device,
        );
        let out = head.forward(tokens.clone());
        let pooled = head.norm.forward(tokens.mean_dim(1).reshape([1, 4]));
        let expected = head.linear.forward(gelu(hidden.forward(pooled.clone())));
        out.to_data()
            .assert_approx_eq::<f32>(&expected.to_data(), Default::default());
        // Without the hidden layer's GELU it is another function.
        let linear_only = head.linear.forward(hidden.forward(pooled));
        assert_ne!(out.to_data(), linear_only.to_data());
        let plain = TaskHeadConfig::new(4, 3).init(&device);
        assert!(plain.hidden.is_none());
        assert_eq!(plain.linear.weight.dims(), [4, 3]);
    }
}
