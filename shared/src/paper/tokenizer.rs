//! Modality tokenizers with availability and absence embeddings (Eq. 1).
//!
//! Dimension key: see the crate root (`B`, `N_i`, `D_i`, `d`).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::batch::PresentRows;

use crate::kernels::{self, Execution};

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
    /// How the operations run (set by [`crate::Model::set_execution`]; not configuration).
    #[module(skip)]
    pub execution: Execution,
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
            execution: Execution::default(),
        }
    }
}

/// What the tokenizer gives: the tokens x^i of Eq. 1 and the content f_theta^i(X^i) of the
/// samples that hold the modality, which the unimodal encoder of Eq. 3 reads.
pub struct Tokens {
    /// x^i of Eq. 1: `f(X) + E_avail` where available, `E_miss` where absent. [B, N_i, d]
    pub tokens: Tensor<3>,
    /// f_theta^i(X^i) (projection + position) in the rows [`PresentRows::computed`] gives: the
    /// present samples' (gathered layout) or every sample's, absent ones from zeroed input
    /// (masked layout); `None` when no sample holds the modality. [P or B, N_i, d]
    pub content: Option<Tensor<3>>,
}

impl ModalityTokenizer {
    /// Eq. 1: x^i = f_theta^i(X^i) + E_avail^i if modality i is available, else E_miss^i.
    ///
    /// An absent modality's raw values are never read, so they cannot influence the output
    /// (not even a NaN): the projection runs on the present samples only (gathered layout), or
    /// on every sample with the absent ones' input zeroed (masked layout, [`PresentRows`]).
    ///
    /// # Shapes
    /// - input: `[B, N_i, D_i]`
    /// - output: tokens `[B, N_i, d]`, content `[P or B, N_i, d]`
    pub fn forward(&self, input: Tensor<3>, present: &PresentRows) -> Tokens {
        let [b, n, _] = input.dims();
        let d = self.e_miss.val().dims()[1];
        let missing = self.e_miss.val().unsqueeze_dim::<3>(0); // [1, N_i, d]
        if present.is_empty() {
            return Tokens {
                tokens: missing.expand([b, n, d]), // [B, N_i, d]
                content: None,
            };
        }
        // The rows are shaped before the product so that, under Burn's fusion, the product
        // takes both additions as its epilogue (a view op recorded after it ends the block).
        let position = self.position.val().unsqueeze_dim::<3>(0); // [1, N_i, d]
        let available = self.e_avail.val().unsqueeze_dim::<3>(0); // [1, N_i, d]
        let input = present.computed(input); // [P or B, N_i, D_i]
        let content = kernels::linear_rows(&self.projection, input, self.execution) + position; // [P or B, N_i, d]
        let present_tokens = content.clone() + available; // [P or B, N_i, d]
        Tokens {
            tokens: present.spread(present_tokens, missing), // [B, N_i, d]
            content: Some(content),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    fn row(t: &Tensor<3>, r: usize) -> TensorData {
        let [_, n, d] = t.dims();
        t.clone().narrow(0, r, 1).reshape([n, d]).into_data()
    }

    #[test]
    fn absent_samples_get_e_miss_and_present_ones_ignore_it() {
        let device = Device::flex();
        let tok = ModalityTokenizerConfig::new(3, 5, 4).init(&device);
        // Samples 0 and 2 hold the modality; sample 1's raw values are NaN and must not leak.
        let x = Tensor::<3>::random([3, 3, 5], Distribution::Normal(0.0, 1.0), &device);
        let x = x.slice_assign(
            [1..2, 0..3, 0..5],
            Tensor::<3>::full([1, 3, 5], f32::NAN, &device),
        );
        let present = PresentRows::of(&[vec![true], vec![false], vec![true]], 0);
        let out = tok.forward(x.clone(), &present);
        assert_eq!(out.tokens.dims(), [3, 3, 4]);
        row(&out.tokens, 1)
            .assert_approx_eq::<f32>(&tok.e_miss.val().into_data(), Default::default());
        let content = out.content.expect("two samples hold the modality");
        assert_eq!(
            content.dims(),
            [2, 3, 4],
            "content of the present samples only"
        );
        for (k, r) in [(0, 0), (1, 2)] {
            let projected = tok
                .projection
                .forward(x.clone().narrow(0, r, 1))
                .reshape([3, 4])
                + tok.position.val();
            row(&content, k)
                .assert_approx_eq::<f32>(&projected.clone().into_data(), Default::default());
            let expected = projected + tok.e_avail.val();
            row(&out.tokens, r).assert_approx_eq::<f32>(&expected.into_data(), Default::default());
        }
    }

    #[test]
    fn a_batch_without_the_modality_is_all_e_miss_and_has_no_content() {
        let device = Device::flex();
        let tok = ModalityTokenizerConfig::new(3, 5, 4).init(&device);
        let x = Tensor::<3>::full([2, 3, 5], f32::NAN, &device);
        let out = tok.forward(x, &PresentRows::of(&[vec![false], vec![false]], 0));
        assert!(out.content.is_none());
        for r in 0..2 {
            row(&out.tokens, r)
                .assert_approx_eq::<f32>(&tok.e_miss.val().into_data(), Default::default());
        }
    }
}
