//! Unimodal generalization enhancement (Eq. 3): one small transformer per modality.
//!
//! Dimension key: see the crate root (`B`, `N_i`, `d`).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Bool, Device, Tensor};

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
    /// h_u^i, the unimodal features of modality `i`, from its content f_theta^i(X^i).
    ///
    /// # Shapes
    /// - content: `[B, N_i, d]`
    /// - output: `[B, N_i, d]`
    pub fn unimodal_features(&self, i: usize, content: Tensor<3>) -> Tensor<3> {
        self.encoders[i].forward(content)
    }

    /// Eq. 3: h_e^i = h^i + alpha_u h_u^i where modality i is available, h^i where absent
    /// (masked per sample, not branched, so one batch mixes both cases).
    ///
    /// # Shapes
    /// - h, h_u: `[B, N_i, d]`; available: `[B]`
    /// - output: `[B, N_i, d]`
    pub fn enhance(&self, h: Tensor<3>, h_u: Tensor<3>, available: Tensor<1, Bool>) -> Tensor<3> {
        let [b, n, d] = h.dims();
        let absent: Tensor<3, Bool> = available.bool_not().reshape([b, 1, 1]).expand([b, n, d]);
        h + h_u.mask_fill(absent, 0.0).mul_scalar(self.alpha_u) // [B, N_i, d]
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
        let h = Tensor::<3>::random([2, 3, 4], Distribution::Normal(0.0, 1.0), &device);
        let h_u = Tensor::<3>::ones([2, 3, 4], &device);
        let available = Tensor::<1, Bool>::from_data(TensorData::from([true, false]), &device);
        let out = uni.enhance(h.clone(), h_u, available);
        let delta = (out - h).into_data().try_to_vec::<f32>().unwrap();
        assert!(delta[..12].iter().all(|v| (v - 0.25).abs() < 1e-6));
        assert!(delta[12..].iter().all(|v| v.abs() < 1e-6));
    }
}
