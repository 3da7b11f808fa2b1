//! The model configuration: one enum-driven config for MGR, its ablations and the methods the
//! paper compares with (Tables 1-8).

use burn::config::Config;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::MgrError;
pub use crate::readings::{Gate, GateScope, PromptInsertion, RefinementReadings, ScoreGate};

/// One input modality: its name and its token grid.
#[derive(Config, Debug, PartialEq)]
pub struct ModalitySpec {
    /// Human-readable name ("vision", "audio", "text"); used in traces, CSVs and `--drop`.
    pub name: String,
    /// Tokens per sample, N_i (image patches, spectrogram frames, words).
    pub n_tokens: usize,
    /// Raw features per token, D_i (pixels per patch, bins per frame, vocabulary size).
    pub token_dim: usize,
}

/// The methods compared in the paper, and MGR's ablations (Tables 1, 2, 7, 8).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// ViLT-style multimodal transformer, mean pooling, head (Kim et al. 2021).
    Baseline,
    /// The baseline with a wider head (one hidden layer, [`ModelConfig::head_hidden`]) sized
    /// so that on a frozen backbone it trains as many parameters as MGR (within 10%): the
    /// capacity-matched control that separates MGR's mechanism from its parameter count.
    BaselineWide,
    /// Missing-aware prompts chosen by the absence pattern (Lee et al., CVPR 2023).
    Maps,
    /// Modality-specific prompts summed over the available modalities (Jang et al., ICASSP 2024).
    Msps,
    /// The full MGR framework.
    Mgr,
    /// MGR without the mixed context: the prompt is the sum of the pattern prompts only.
    MgrNoMixed,
    /// MGR without the diversity loss (lambda_div = 0).
    MgrNoDiv,
    /// MGR without the unimodal features h_u (alpha_u = 0, no unimodal encoders).
    MgrNoHu,
}

impl Method {
    /// Every method, in the order of the paper's tables.
    pub const ALL: [Method; 8] = [
        Method::Baseline,
        Method::BaselineWide,
        Method::Maps,
        Method::Msps,
        Method::Mgr,
        Method::MgrNoMixed,
        Method::MgrNoDiv,
        Method::MgrNoHu,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Baseline => "baseline",
            Method::BaselineWide => "baseline-wide",
            Method::Maps => "maps",
            Method::Msps => "msps",
            Method::Mgr => "mgr",
            Method::MgrNoMixed => "mgr-no-mixed",
            Method::MgrNoDiv => "mgr-no-div",
            Method::MgrNoHu => "mgr-no-hu",
        }
    }

    /// Whether the method runs MGR's refinement layers (Eqs. 5-12).
    pub fn is_mgr(self) -> bool {
        matches!(
            self,
            Method::Mgr | Method::MgrNoMixed | Method::MgrNoDiv | Method::MgrNoHu
        )
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = MgrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| MgrError::UnknownName {
                kind: "method".into(),
                name: s.into(),
                expected: Method::ALL.map(Method::name).join(", "),
            })
    }
}

/// The prompts the multimodal encoder's layers take (Eq. 2), by method: the one place a
/// method's encoder prompts are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderPrompts {
    /// No prompts (the baseline, MGR and its ablations, or `prompt_depth` 0).
    None,
    /// MAPs: one learned prompt per absence pattern, picked by each sample's pattern.
    PerPattern,
    /// MSPs: one learned prompt per modality, summed over each sample's available modalities.
    PerModality,
}

/// The downstream task: what f_task predicts and which loss L_task is (Eq. 13).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Cross-entropy over `n_outputs` classes.
    Classification,
    /// Mean absolute error on one real value (CMU-MOSI / MOSEI sentiment).
    Regression,
}

/// The whole model: modalities, sizes, method and every hyperparameter of Eqs. 1-13.
///
/// Serde-derived rather than Burn's `#[derive(Config)]`, whose generated serde cannot flatten:
/// the readings of the refinement ([`RefinementReadings`]) are one value here and flat keys in
/// `config.json` and `model.json`. [`ModelConfig::new`] holds the defaults of the other fields.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ModelConfig {
    /// The input modalities, in the order of the token sequence (Eq. 2's concatenation).
    pub modalities: Vec<ModalitySpec>,
    /// Classes for classification, 1 for regression.
    pub n_outputs: usize,
    /// Classification (cross-entropy) or regression (L1). Default classification.
    pub task: Task,
    /// Which method this model is. Default MGR.
    pub method: Method,
    /// Hidden size d. Default 64, as the PyTorch peer and the AV-MNIST runs.
    pub d_model: usize,
    /// Attention heads n_h; must divide d. Default 4.
    pub n_heads: usize,
    /// Layers of the multimodal transformer (Eq. 2). Default 2.
    pub n_layers: usize,
    /// Feed-forward width as a multiple of d. Default 4, as ViLT.
    pub ff_mult: usize,
    /// Layers of each unimodal transformer (Eq. 3). Default 1: the paper says they "share a
    /// similar architecture", one layer keeps them cheap.
    pub unimodal_layers: usize,
    /// Refinement layers L_T (Eqs. 5-12 repeated). Default 2.
    pub refine_layers: usize,
    /// The readings of Eqs. 5-12 (rho, alpha_f, the prompt insertion, the gate, the residuals,
    /// the input norm): one value, flat keys in the files.
    #[serde(flatten)]
    pub refinement: RefinementReadings,
    /// alpha_u, weight of the unimodal features (Eq. 3). Default 0.5.
    pub alpha_u: f64,
    /// lambda_div, weight of the diversity loss (Eq. 13). Default 0.1.
    pub lambda_div: f64,
    /// Eq. 4's gradient reaches only h_u (h detached): L_div then shapes the unimodal
    /// branch and cannot pull the shared encoder away from the class information both carry
    /// (issue 11's lead 4). Training only: the forward pass is the same either way. Default
    /// false (no effect beyond seed noise, docs/RESULTS.md).
    pub div_detach_shared: bool,
    /// epsilon inside the square root of Eq. 4, so a constant batch does not divide by zero.
    /// Default 1e-9.
    pub dcor_eps: f64,
    /// Prompt tokens of the MAPs-input insertion type and of the MAPs / MSPs baselines.
    /// Default 4.
    pub prompt_len: usize,
    /// Encoder layers that receive MAPs / MSPs prompts at their input. Default 2: MAPs uses the
    /// first few.
    pub prompt_depth: usize,
    /// Weight of the MSPs orthogonality loss between modality prompts. Default 0.1.
    pub lambda_orth: f64,
    /// Standard deviation of the learnable embeddings and prompts at initialisation. Default
    /// 0.02.
    pub init_std: f64,
}

impl Config for ModelConfig {}

impl fmt::Display for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&burn::config::config_to_json(self))
    }
}

/// `with_FIELD(value)` builders, one per field that has a default.
macro_rules! builders {
    ($($with:ident => $field:ident: $ty:ty),* $(,)?) => {
        impl ModelConfig {
            $(
                #[doc = concat!("This config with `", stringify!($field), "`.")]
                pub fn $with(mut self, $field: $ty) -> Self {
                    self.$field = $field;
                    self
                }
            )*
        }
    };
}

builders! {
    with_task => task: Task,
    with_method => method: Method,
    with_d_model => d_model: usize,
    with_n_heads => n_heads: usize,
    with_n_layers => n_layers: usize,
    with_ff_mult => ff_mult: usize,
    with_unimodal_layers => unimodal_layers: usize,
    with_refine_layers => refine_layers: usize,
    with_refinement => refinement: RefinementReadings,
    with_alpha_u => alpha_u: f64,
    with_lambda_div => lambda_div: f64,
    with_div_detach_shared => div_detach_shared: bool,
    with_dcor_eps => dcor_eps: f64,
    with_prompt_len => prompt_len: usize,
    with_prompt_depth => prompt_depth: usize,
    with_lambda_orth => lambda_orth: f64,
    with_init_std => init_std: f64,
}

/// Eq. 10's |idx_u| = K = ceil(rho * n), at least 1 and at most n; computed in f64 with a small
/// tolerance so that e.g. rho = 0.3, n = 10 gives 3, not 4.
pub fn kept_count(rho: f64, n: usize) -> usize {
    ((rho * n as f64 - 1e-9).ceil() as usize).clamp(1, n.max(1))
}

impl ModelConfig {
    /// A config for `modalities` and `n_outputs` with every other field at its default (the
    /// field docs say which and why).
    pub fn new(modalities: Vec<ModalitySpec>, n_outputs: usize) -> Self {
        Self {
            modalities,
            n_outputs,
            task: Task::Classification,
            method: Method::Mgr,
            d_model: 64,
            n_heads: 4,
            n_layers: 2,
            ff_mult: 4,
            unimodal_layers: 1,
            refine_layers: 2,
            refinement: RefinementReadings::default(),
            alpha_u: 0.5,
            lambda_div: 0.1,
            div_detach_shared: false,
            dcor_eps: 1e-9,
            prompt_len: 4,
            prompt_depth: 2,
            lambda_orth: 0.1,
            init_std: 0.02,
        }
    }

    /// This config with rho (Eq. 10) set, the other readings kept.
    pub fn with_rho(self, rho: f64) -> Self {
        let refinement = self.refinement.with_rho(rho);
        self.with_refinement(refinement)
    }

    /// rho, the share of tokens a refinement layer keeps, lies in (0, 1]; every reader of a rho
    /// (config, `--set`, the page's URL and slider) checks it here.
    pub fn rho_is_valid(rho: f64) -> bool {
        RefinementReadings::rho_is_valid(rho)
    }

    /// Total tokens N = sum N_i before refinement.
    pub fn n_tokens(&self) -> usize {
        self.modalities.iter().map(|m| m.n_tokens).sum()
    }

    /// Tokens kept by a refinement layer that receives `n` tokens: K = ceil(rho * n), >= 1.
    ///
    /// Computed in f64 with a small tolerance so that e.g. rho = 0.3, n = 10 gives 3, not 4.
    pub fn kept_tokens(&self, n: usize) -> usize {
        kept_count(self.refinement.rho, n)
    }

    /// Token counts entering each refinement layer, then the count leaving the last.
    pub fn tokens_per_layer(&self) -> Vec<usize> {
        let mut counts = vec![self.n_tokens()];
        for _ in 0..self.refine_layers_effective() {
            let n = *counts.last().expect("counts starts non-empty");
            counts.push(self.kept_tokens(n));
        }
        counts
    }

    /// Refinement layers this method actually runs (0 for the non-MGR methods).
    pub fn refine_layers_effective(&self) -> usize {
        if self.method.is_mgr() {
            self.refine_layers
        } else {
            0
        }
    }

    /// Whether the unimodal encoders of Eq. 3 exist.
    pub fn uses_unimodal(&self) -> bool {
        self.method.is_mgr() && self.method != Method::MgrNoHu && self.alpha_u != 0.0
    }

    /// lambda_div as this method uses it (0 for the `mgr-no-div` ablation).
    pub fn lambda_div_effective(&self) -> f64 {
        if self.uses_unimodal() && self.method != Method::MgrNoDiv {
            self.lambda_div
        } else {
            0.0
        }
    }

    /// Eq. 13's weights as this method uses them.
    pub fn loss_weights(&self) -> crate::loss::LossWeights {
        crate::loss::LossWeights {
            div: self.lambda_div_effective(),
            orth: self.lambda_orth,
        }
    }

    /// Whether the prompt mixes in the pooled context (false for `mgr-no-mixed`).
    pub fn mixed_context(&self) -> bool {
        self.method != Method::MgrNoMixed
    }

    /// The prompts this method's encoder takes (none where `prompt_depth` is 0).
    pub fn encoder_prompts(&self) -> EncoderPrompts {
        match self.method {
            _ if self.prompt_depth == 0 => EncoderPrompts::None,
            Method::Maps => EncoderPrompts::PerPattern,
            Method::Msps => EncoderPrompts::PerModality,
            _ => EncoderPrompts::None,
        }
    }

    /// Number of absence patterns, 2^M - 1 (all-missing never happens).
    pub fn n_patterns(&self) -> usize {
        (1usize << self.modalities.len()) - 1
    }

    /// Checks every field; `ModelConfig::init` calls it.
    pub fn validate(&self) -> Result<(), MgrError> {
        self.validate_inputs()?;
        self.validate_sizes()?;
        self.refinement.validate()?;
        self.validate_weights()?;
        self.validate_method()
    }

    /// The modalities and the outputs.
    fn validate_inputs(&self) -> Result<(), MgrError> {
        if self.modalities.is_empty() {
            return Err(MgrError::config(
                "modalities",
                "at least one modality is needed",
            ));
        }
        if self.modalities.len() > 8 {
            return Err(MgrError::config(
                "modalities",
                "at most 8 modalities are supported",
            ));
        }
        for (i, m) in self.modalities.iter().enumerate() {
            if m.n_tokens == 0 || m.token_dim == 0 {
                return Err(MgrError::config(
                    "modalities",
                    format!(
                        "modality {i} `{}` has {} tokens of size {}",
                        m.name, m.n_tokens, m.token_dim
                    ),
                ));
            }
        }
        if self.n_outputs == 0 {
            return Err(MgrError::config("n_outputs", "must be at least 1"));
        }
        if self.task == Task::Regression && self.n_outputs != 1 {
            return Err(MgrError::config(
                "n_outputs",
                "regression predicts exactly 1 value",
            ));
        }
        Ok(())
    }

    /// The transformer's sizes.
    fn validate_sizes(&self) -> Result<(), MgrError> {
        if self.d_model == 0 || self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return Err(MgrError::config(
                "n_heads",
                format!(
                    "d_model {} must be a positive multiple of n_heads {}",
                    self.d_model, self.n_heads
                ),
            ));
        }
        if self.ff_mult == 0 {
            return Err(MgrError::config("ff_mult", "must be at least 1"));
        }
        Ok(())
    }

    /// The weights and scales of Eqs. 3, 4 and 13 and of the initialisation.
    fn validate_weights(&self) -> Result<(), MgrError> {
        if !(0.0..=1.0).contains(&self.alpha_u) {
            return Err(MgrError::config(
                "alpha_u",
                format!("{} is outside [0, 1]", self.alpha_u),
            ));
        }
        for (field, value) in [
            ("lambda_div", self.lambda_div),
            ("lambda_orth", self.lambda_orth),
            ("dcor_eps", self.dcor_eps),
            ("init_std", self.init_std),
        ] {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(MgrError::config(
                    field,
                    format!("{value} must be finite and >= 0"),
                ));
            }
        }
        Ok(())
    }

    /// What the method needs: refinement layers for MGR, prompted layers for MAPs and MSPs.
    fn validate_method(&self) -> Result<(), MgrError> {
        if self.method.is_mgr() && self.refine_layers == 0 {
            return Err(MgrError::config(
                "refine_layers",
                "MGR needs at least one refinement layer",
            ));
        }
        if self.prompt_len == 0 {
            return Err(MgrError::config("prompt_len", "must be at least 1"));
        }
        if matches!(self.method, Method::Maps | Method::Msps) && self.prompt_depth > self.n_layers {
            return Err(MgrError::config(
                "prompt_depth",
                format!(
                    "{} exceeds the {} encoder layers",
                    self.prompt_depth, self.n_layers
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rho: f64) -> ModelConfig {
        ModelConfig::new(
            vec![
                ModalitySpec::new("a".into(), 7, 3),
                ModalitySpec::new("b".into(), 4, 2),
            ],
            3,
        )
        .with_rho(rho)
    }

    #[test]
    fn a_config_that_still_names_the_kernels_loads_without_them() {
        // Until the execution policy moved to the training config, `fused_kernels` was a field
        // of the model config: files written then carry it (null, true or false).
        let mut json = serde_json::to_value(cfg(0.5)).unwrap();
        assert!(json.get("fused_kernels").is_none());
        json["fused_kernels"] = false.into();
        let old: ModelConfig = serde_json::from_value(json).expect("an older config loads");
        assert_eq!(old.refinement, cfg(0.5).refinement);
        assert!(
            serde_json::to_value(&old)
                .unwrap()
                .get("fused_kernels")
                .is_none()
        );
    }

    #[test]
    fn the_readings_are_flat_keys_of_the_model_config_and_round_trip() {
        let c = cfg(0.3).with_refinement(
            RefinementReadings::default()
                .with_rho(0.3)
                .with_gate(None)
                .with_refine_residual(false),
        );
        let json = serde_json::to_value(&c).unwrap();
        assert!(json.get("refinement").is_none(), "{json}");
        assert_eq!(json["rho"], 0.3);
        assert_eq!(json["score_gating"], false);
        assert_eq!(json["refine_residual"], false);
        assert_eq!(json["d_model"], 64);
        let back: ModelConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back.refinement, c.refinement);
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
    }

    #[test]
    fn only_maps_and_msps_prompt_the_encoder_and_only_with_prompted_layers() {
        for method in Method::ALL {
            let expected = match method {
                Method::Maps => EncoderPrompts::PerPattern,
                Method::Msps => EncoderPrompts::PerModality,
                _ => EncoderPrompts::None,
            };
            let c = cfg(0.5).with_method(method);
            assert_eq!(c.encoder_prompts(), expected, "{method}");
            assert_eq!(
                c.with_prompt_depth(0).encoder_prompts(),
                EncoderPrompts::None,
                "{method} with prompt_depth 0"
            );
        }
    }

    #[test]
    fn kept_tokens_is_ceil_of_rho_n_and_at_least_one() {
        assert_eq!(cfg(0.5).kept_tokens(11), 6);
        assert_eq!(cfg(0.3).kept_tokens(10), 3);
        assert_eq!(cfg(0.01).kept_tokens(11), 1);
        assert_eq!(cfg(1.0).kept_tokens(11), 11);
        assert_eq!(cfg(0.5).tokens_per_layer(), vec![11, 6, 3]);
    }

    #[test]
    fn method_names_round_trip_and_unknown_is_named() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
        }
        let err = "mgrr".parse::<Method>().unwrap_err().to_string();
        assert!(err.contains("mgrr") && err.contains("baseline"), "{err}");
    }

    #[test]
    fn validate_rejects_out_of_domain_values() {
        assert!(cfg(0.0).validate().is_err());
        assert!(cfg(1.5).validate().is_err());
        assert!(cfg(0.5).validate().is_ok());
        assert!(cfg(0.5).with_n_heads(5).validate().is_err());
        let alpha_f = RefinementReadings::default().with_alpha_f(1.2);
        assert!(cfg(0.5).with_refinement(alpha_f).validate().is_err());
        assert!(cfg(0.5).with_alpha_u(-0.1).validate().is_err());
        assert!(
            cfg(0.5).with_prompt_depth(9).validate().is_ok(),
            "MGR has no encoder prompts"
        );
        let err = cfg(0.5)
            .with_method(Method::Maps)
            .with_prompt_depth(9)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("prompt_depth"), "{err}");
    }

    #[test]
    fn ablations_switch_off_their_component() {
        let base = cfg(0.5);
        assert!(base.uses_unimodal() && base.lambda_div_effective() > 0.0 && base.mixed_context());
        let no_hu = cfg(0.5).with_method(Method::MgrNoHu);
        assert!(!no_hu.uses_unimodal() && no_hu.lambda_div_effective() == 0.0);
        let no_div = cfg(0.5).with_method(Method::MgrNoDiv);
        assert!(no_div.uses_unimodal() && no_div.lambda_div_effective() == 0.0);
        assert!(!cfg(0.5).with_method(Method::MgrNoMixed).mixed_context());
        assert_eq!(
            cfg(0.5).with_method(Method::Maps).refine_layers_effective(),
            0
        );
    }
}
