//! Unimodal generalization enhancement (Eq. 3): one small transformer per modality.
//!
//! Dimension key: see the crate root (`B`, `N_i`, `d`).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::batch::PresentRows;

use crate::encoder::{Encoder, EncoderConfig};

/// Configuration of the unimodal encoders.
#[derive(Config, Debug)]
pub struct UnimodalEnhancementConfig {
    /// Number of modalities, one encoder each.
    pub n_modalities: usize,
    /// The encoders' shape ("a similar architecture as Eq. 2").
    pub encoder: EncoderConfig,
    /// alpha_u, the weight of h_u (Eq. 3).
    #[config(default = 0.5)]
    pub alpha_u: f64,
}

/// The unimodal transformers and the alpha_u mix of Eq. 3.
#[derive(Module, Debug)]
pub struct UnimodalEnhancement {
    /// One encoder per modality, reading only that modality's content tokens.
    pub encoders: Vec<Encoder>,
    /// alpha_u of Eq. 3.
    pub alpha_u: f64,
}

impl UnimodalEnhancementConfig {
    /// Builds one encoder per modality on `device`.
    pub fn init(&self, device: &Device) -> UnimodalEnhancement {
        UnimodalEnhancement {
            encoders: (0..self.n_modalities)
                .map(|_| self.encoder.init(device))
                .collect(),
            alpha_u: self.alpha_u,
        }
    }
}

impl UnimodalEnhancement {
    /// h_u^i, the unimodal features of modality `i`, from its content f_theta^i(X^i) (of the
    /// samples that hold it: each sample is encoded on its own, so which ones come does not
    /// change a row).
    ///
    /// # Shapes
    /// - content: `[P or B, N_i, d]` ([`PresentRows::computed`])
    /// - output: `[P or B, N_i, d]`
    pub fn unimodal_features(&self, i: usize, content: Tensor<3>) -> Tensor<3> {
        self.encoders[i].forward(content)
    }

    /// Eq. 3: h_e^i = h^i + alpha_u h_u^i where modality i is available, h^i where absent.
    /// `h_u` holds the rows [`PresentRows::computed`] gives (`None` when no sample holds the
    /// modality): the present samples' alone, or every sample's with the absent ones masked
    /// out here, so one batch mixes both cases and no absent modality's feature reaches h_e.
    ///
    /// # Shapes
    /// - h: `[B, N_i, d]`; h_u: `[P or B, N_i, d]`
    /// - output: `[B, N_i, d]`
    pub fn enhance(
        &self,
        h: Tensor<3>,
        h_u: Option<Tensor<3>>,
        present: &PresentRows,
    ) -> Tensor<3> {
        let Some(h_u) = h_u else {
            return h;
        };
        present.add_to(h, h_u.mul_scalar(self.alpha_u)) // [B, N_i, d]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn enhancement_adds_alpha_u_h_u_only_where_available() {
        let device = Device::flex();
        let uni = UnimodalEnhancementConfig::new(1, EncoderConfig::new(4, 2, 1))
            .with_alpha_u(0.25)
            .init(&device);
        let h = Tensor::<3>::random([3, 3, 4], Distribution::Normal(0.0, 1.0), &device);
        // Samples 0 and 2 hold the modality: h_u's rows are theirs, 1 and 2 apart.
        let h_u = Tensor::<3>::from_data(
            TensorData::new([vec![1.0f32; 12], vec![2.0; 12]].concat(), [2, 3, 4]),
            &device,
        );
        let present = PresentRows::of(&[vec![true], vec![false], vec![true]], 0);
        let out = uni.enhance(h.clone(), Some(h_u), &present);
        let delta = (out - h.clone()).into_data().try_to_vec::<f32>().unwrap();
        for (r, want) in [(0, 0.25), (1, 0.0), (2, 0.5)] {
            let got = &delta[r * 12..(r + 1) * 12];
            assert!(
                got.iter().all(|v| (v - want).abs() < 1e-6),
                "sample {r}: {got:?}"
            );
        }
        let none = PresentRows::of(&[vec![false], vec![false], vec![false]], 0);
        let unchanged = uni.enhance(h.clone(), None, &none);
        unchanged.into_data().assert_eq(&h.into_data(), true);
    }
}
