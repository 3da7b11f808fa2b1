//! Modality tokenizers with availability and absence embeddings (Eq. 1).
//!
//! Dimension key: see the crate root (`B`, `N_i`, `D_i`, `d`).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Bool, Device, Tensor};

use crate::kernels;

/// Configuration of one modality's tokenizer.
#[derive(Config, Debug)]
pub struct ModalityTokenizerConfig {
    /// Tokens of this modality, N_i.
    pub n_tokens: usize,
    /// Raw features per token, D_i.
    pub token_dim: usize,
    /// Hidden size d.
    pub d_model: usize,
    /// Standard deviation of the learnable embeddings at initialisation (ViLT's 0.02).
    #[config(default = 0.02)]
    pub init_std: f64,
    /// The projection as one product over all tokens on flex ([`crate::kernels::linear_rows`]).
    #[config(default = true)]
    pub fused_kernels: bool,
}

/// f_theta^i with its learnable `E_avail^i` and `E_miss^i` (Eq. 1).
#[derive(Module, Debug)]
pub struct ModalityTokenizer {
    /// Per-token linear projection D_i -> d.
    pub projection: Linear,
    /// Learned position embedding, part of f_theta^i: [N_i, d].
    pub position: Param<Tensor<2>>,
    /// E_avail^i: marks the tokens of an available modality, [N_i, d].
    pub e_avail: Param<Tensor<2>>,
    /// E_miss^i: replaces every token of an absent modality, [N_i, d].
    pub e_miss: Param<Tensor<2>>,
    /// The projection as one product over all tokens on flex.
    #[module(skip)]
    pub fused_kernels: bool,
}

impl ModalityTokenizerConfig {
    /// Builds the tokenizer on `device`.
    pub fn init(&self, device: &Device) -> ModalityTokenizer {
        let normal = Initializer::Normal {
            mean: 0.0,
            std: self.init_std,
        };
        let shape = [self.n_tokens, self.d_model];
        ModalityTokenizer {
            projection: LinearConfig::new(self.token_dim, self.d_model).init(device),
            position: normal.init(shape, device),
            e_avail: normal.init(shape, device),
            e_miss: normal.init(shape, device),
            fused_kernels: self.fused_kernels,
        }
    }
}

/// What the tokenizer gives: the tokens x^i of Eq. 1 and the content f_theta^i(X^i) that the
/// unimodal encoder of Eq. 3 reads.
pub struct Tokens {
    /// x^i of Eq. 1: `f(X) + E_avail` where available, `E_miss` where absent. [B, N_i, d]
    pub tokens: Tensor<3>,
    /// f_theta^i(X^i) (projection + position), zero input where absent. [B, N_i, d]
    pub content: Tensor<3>,
}

impl ModalityTokenizer {
    /// Eq. 1: x^i = f_theta^i(X^i) + E_avail^i if modality i is available, else E_miss^i.
    ///
    /// The absent modality's raw values are replaced by zeros before anything reads them, so
    /// they cannot influence the output (not even a NaN can leak through a `0 * x`).
    ///
    /// # Shapes
    /// - input: `[B, N_i, D_i]`
    /// - available: `[B]`, true where modality i is present
    /// - output: tokens and content, each `[B, N_i, d]`
    pub fn forward(&self, input: Tensor<3>, available: Tensor<1, Bool>) -> Tokens {
        let [b, n, raw] = input.dims();
        let absent = available.bool_not();
        let absent_raw: Tensor<3, Bool> = absent.clone().reshape([b, 1, 1]).expand([b, n, raw]);
        let input = input.mask_fill(absent_raw, 0.0); // [B, N_i, D_i]
        let content = kernels::linear_rows(&self.projection, input, self.fused_kernels)
            + self.position.val().unsqueeze_dim(0); // [B, N_i, d]
        let d = content.dims()[2];
        let present_tokens = content.clone() + self.e_avail.val().unsqueeze_dim(0); // [B, N_i, d]
        let missing_tokens: Tensor<3> = self.e_miss.val().unsqueeze_dim::<3>(0).expand([b, n, d]); // [B, N_i, d]
        let absent_tokens: Tensor<3, Bool> = absent.reshape([b, 1, 1]).expand([b, n, d]);
        Tokens {
            tokens: present_tokens.mask_where(absent_tokens, missing_tokens),
            content,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn absent_samples_get_e_miss_and_present_ones_ignore_it() {
        let device = Device::flex();
        let tok = ModalityTokenizerConfig::new(3, 5, 4).init(&device);
        let x = Tensor::<3>::random([2, 3, 5], Distribution::Normal(0.0, 1.0), &device);
        let available = Tensor::<1, Bool>::from_data(TensorData::from([true, false]), &device);
        let out = tok.forward(x.clone(), available);
        assert_eq!(out.tokens.dims(), [2, 3, 4]);
        let absent = out.tokens.clone().narrow(0, 1, 1).reshape([3, 4]);
        absent
            .into_data()
            .assert_approx_eq::<f32>(&tok.e_miss.val().into_data(), Default::default());
        let present = out.tokens.narrow(0, 0, 1).reshape([3, 4]);
        let expected = tok.projection.forward(x.narrow(0, 0, 1)).reshape([3, 4])
            + tok.position.val()
            + tok.e_avail.val();
        present
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Default::default());
    }
}
