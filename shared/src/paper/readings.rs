//! The readings of the paper: the choices Eqs. 5-12 leave open, as one value.
//!
//! The paper fixes the equations of a refinement layer but not, among others, the weight of
//! its two rankings (alpha_f), whether its outputs are residual, or how the top-k split, which
//! has no gradient, lets the ranking learn. Each open choice is one field of
//! [`RefinementReadings`]; its default is the reading the evidence in `docs/RESULTS.md`
//! supports, defined here once and used as it is by the model config, the refinement layer and
//! the benchmarks.
//!
//! In a `config.json` or `model.json` the readings are flat keys of the model config
//! (`rho`, `alpha_f`, `prompt_insertion`, `score_gating`, `score_gate`, `gate_scope`,
//! `refine_residual`, `attention_residual`, `refine_input_norm`), as they were before this
//! type existed, so `--set rho=0.3` and every earlier file still work.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

use crate::error::MgrError;

/// How the mixed-context prompt P enters the refinement attention (Eq. 6 and Tables 5-6).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum PromptInsertion {
    /// Eq. 6: P appended as one extra key/value token, h_p = [h_e; P] (the paper's default).
    Token,
    /// P added to every token before the attention, h_p = h_e + P.
    Summation,
    /// MAPs input-level prompts: P expanded to `maps_prompt_len` tokens appended to the input,
    /// projected by the same W_K, W_V as the tokens.
    MapsInput,
    /// MAPs attention-level prompts: P mapped to one key and one value that bypass W_K, W_V and
    /// are prepended to the keys and values directly.
    MapsAttention,
}

impl PromptInsertion {
    /// Every insertion type.
    pub const ALL: [PromptInsertion; 4] = [
        PromptInsertion::Token,
        PromptInsertion::Summation,
        PromptInsertion::MapsInput,
        PromptInsertion::MapsAttention,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            PromptInsertion::Token => "token",
            PromptInsertion::Summation => "summation",
            PromptInsertion::MapsInput => "maps-input",
            PromptInsertion::MapsAttention => "maps-attention",
        }
    }
}

impl FromStr for PromptInsertion {
    type Err = MgrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PromptInsertion::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| MgrError::UnknownName {
                kind: "prompt insertion".into(),
                name: s.into(),
                expected: PromptInsertion::ALL.map(PromptInsertion::name).join(", "),
            })
    }
}

/// Which order the top-rho split (Eq. 10) keeps tokens by. The paper's is `Learned`; the others
/// are references that grade it: what a ranking is worth is the accuracy it buys over `Random`
/// and how far it is from an oracle. Every mode leaves the gate and everything after the split
/// as they are (the gate still reads the learned xi), so only *which* tokens go on changes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SplitRanking {
    /// Eqs. 9-10: the top-K of xi.
    #[default]
    Learned,
    /// Scores drawn uniformly per forward pass, per sample and layer, from the run's seed:
    /// reproducible, and a ranking with no skill at all.
    Random,
    /// The learned order reversed: the bottom-K of xi.
    Inverted,
    /// The synthetic data's truth: the signal tokens of present modalities first (noise tokens
    /// and placeholders after), each group in the learned order. Needs data with that truth.
    OracleNoise,
    /// The synthetic data's truth in the paper's sense of bias: the tokens of present modalities
    /// that show the label first (those of a modality showing another digit, and placeholders,
    /// after), each group in the learned order. Needs data with that truth.
    OracleConflict,
    /// The same without the label: the tokens of the present modalities that show what most
    /// present modalities show first (a modality outvoted by the others, and placeholders,
    /// after; with no majority, every present modality first). What a ranking that could see
    /// which modality disagrees with the others would do. Needs data with that truth.
    OracleMajority,
}

impl SplitRanking {
    /// Every mode.
    pub const ALL: [SplitRanking; 6] = [
        SplitRanking::Learned,
        SplitRanking::Random,
        SplitRanking::Inverted,
        SplitRanking::OracleNoise,
        SplitRanking::OracleConflict,
        SplitRanking::OracleMajority,
    ];

    /// The name used on the command line, in files and in the page's URL.
    pub fn name(self) -> &'static str {
        match self {
            SplitRanking::Learned => "learned",
            SplitRanking::Random => "random",
            SplitRanking::Inverted => "inverted",
            SplitRanking::OracleNoise => "oracle-noise",
            SplitRanking::OracleConflict => "oracle-conflict",
            SplitRanking::OracleMajority => "oracle-majority",
        }
    }

    /// Whether the mode reads the data's per-token ground truth ([`crate::truth`]).
    pub fn needs_truth(self) -> bool {
        matches!(
            self,
            SplitRanking::OracleNoise | SplitRanking::OracleConflict | SplitRanking::OracleMajority
        )
    }
}

impl FromStr for SplitRanking {
    type Err = MgrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SplitRanking::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| MgrError::UnknownName {
                kind: "ranking".into(),
                name: s.into(),
                expected: SplitRanking::ALL.map(SplitRanking::name).join(", "),
            })
    }
}

/// The value of the score gate g(xi) that scales a kept token's refinement (Eq. 12's output),
/// the path by which the ranking (Eq. 9) learns: the top-k split has no gradient.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreGate {
    /// g = xi in (-1, 1), as TopK pooling (Gao & Ji 2019); a negative score flips the token.
    Signed,
    /// g = (1 + xi) / 2 in (0, 1): the same order as xi, never flips a token's sign.
    #[default]
    Unit,
}

impl ScoreGate {
    /// g(xi), element-wise.
    ///
    /// # Shapes
    /// - xi: `[B, N]`; output `[B, N]`
    pub fn apply(self, xi: burn::tensor::Tensor<2>) -> burn::tensor::Tensor<2> {
        match self {
            ScoreGate::Signed => xi,
            ScoreGate::Unit => xi.add_scalar(1.0).mul_scalar(0.5),
        }
    }
}

/// What the score gate of a refinement layer scales.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GateScope {
    /// The whole kept token, z = g (r + u): TopK pooling's gate; the ranking learns which
    /// tokens' content helps the prediction.
    #[default]
    Token,
    /// Only Eq. 12's update, z = r + g u: the ranking learns where redistribution helps.
    Update,
}

/// The score gate of a refinement layer: g(xi) scales each kept token's refinement, the path
/// by which the ranking (Eq. 9) learns, since the top-k split (Eq. 10) has no gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Gate {
    /// g as a function of xi.
    pub value: ScoreGate,
    /// What g scales. Without `refine_residual` both scopes give z = g u.
    pub scope: GateScope,
}

/// The readings of Eqs. 5-12 a refinement layer runs with (module docs; `docs/RESULTS.md`
/// has the evidence behind each default).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(from = "ReadingKeys", into = "ReadingKeys")]
pub struct RefinementReadings {
    /// Kept fraction rho per refinement layer (Eq. 10); K = ceil(rho * N), at least 1.
    pub rho: f64,
    /// alpha_f, weight of the feature-level ranking against the correlation-level one (Eq. 9).
    /// The paper does not give it. 1: measured here, the attention a token receives (xi_e)
    /// ranks the synthetic data's noise tokens *above* its signal tokens (AUC 0.25-0.39 in
    /// layer 0 over four trained models), and alpha_f = 0.5 pulled xi below chance; xi_e is
    /// still computed and traced.
    pub alpha_f: f64,
    /// How P enters the refinement attention (Eq. 6, Tables 5-6).
    pub prompt_insertion: PromptInsertion,
    /// The score gate (TopK / SAG graph pooling's: top-k has no gradient, so without a gate
    /// the ranking projector f_Psi never learns); None: no gate, f_Psi and xi_e do not train.
    pub gate: Option<Gate>,
    /// z = r + Eq. 12 instead of z = Eq. 12: the encoder's tokens flow on while the ranking is
    /// still poor, and the gate scales only what the next layer's LayerNorm cannot cancel (the
    /// paper calls r an enhancement of h_e; it does not say).
    pub refine_residual: bool,
    /// r = h + Eq. 7 (the attention as a residual sub-layer, as the encoder's) instead of
    /// r = Eq. 7: the paper calls r the "enhanced" h_e, and only with the token's own content
    /// in r can f_Psi (Eq. 9) rank a token by what it is rather than by what it attends to.
    pub attention_residual: bool,
    /// LayerNorm on the tokens entering each refinement layer (pre-LN; the paper is silent, and
    /// without it training is unstable: the encoder output is not normalised and the previous
    /// layer's tokens are scaled by their scores).
    pub refine_input_norm: bool,
    /// Which order the split keeps tokens by ([`SplitRanking`]): the learned xi (the paper), or
    /// a reference ranking that grades it.
    pub ranking: SplitRanking,
}

impl Default for RefinementReadings {
    fn default() -> Self {
        Self {
            rho: 0.5,
            alpha_f: 1.0,
            prompt_insertion: PromptInsertion::Token,
            gate: Some(Gate::default()),
            refine_residual: true,
            attention_residual: true,
            refine_input_norm: true,
            ranking: SplitRanking::Learned,
        }
    }
}

impl RefinementReadings {
    /// These readings with `rho`.
    pub fn with_rho(self, rho: f64) -> Self {
        Self { rho, ..self }
    }

    /// These readings with `alpha_f`.
    pub fn with_alpha_f(self, alpha_f: f64) -> Self {
        Self { alpha_f, ..self }
    }

    /// These readings with `prompt_insertion`.
    pub fn with_prompt_insertion(self, prompt_insertion: PromptInsertion) -> Self {
        Self {
            prompt_insertion,
            ..self
        }
    }

    /// These readings with `gate` (None: no score gate).
    pub fn with_gate(self, gate: Option<Gate>) -> Self {
        Self { gate, ..self }
    }

    /// These readings with `refine_residual`.
    pub fn with_refine_residual(self, refine_residual: bool) -> Self {
        Self {
            refine_residual,
            ..self
        }
    }

    /// These readings with `attention_residual`.
    pub fn with_attention_residual(self, attention_residual: bool) -> Self {
        Self {
            attention_residual,
            ..self
        }
    }

    /// These readings with `refine_input_norm`.
    pub fn with_refine_input_norm(self, refine_input_norm: bool) -> Self {
        Self {
            refine_input_norm,
            ..self
        }
    }

    /// These readings with the split's `ranking`.
    pub fn with_ranking(self, ranking: SplitRanking) -> Self {
        Self { ranking, ..self }
    }

    /// rho, the share of tokens a refinement layer keeps, lies in (0, 1]; every reader of a rho
    /// (config, `--set`, the page's URL and slider) checks it here.
    pub fn rho_is_valid(rho: f64) -> bool {
        rho > 0.0 && rho <= 1.0
    }

    /// Checks every field's domain, naming the config key.
    pub fn validate(&self) -> Result<(), MgrError> {
        if !Self::rho_is_valid(self.rho) {
            return Err(MgrError::config(
                "rho",
                format!("{} is outside (0, 1]", self.rho),
            ));
        }
        if !(0.0..=1.0).contains(&self.alpha_f) {
            return Err(MgrError::config(
                "alpha_f",
                format!("{} is outside [0, 1]", self.alpha_f),
            ));
        }
        Ok(())
    }
}

/// The readings as the config files spell them: flat keys, the gate as three of them. Every
/// key is required (a config missing one is refused, naming it), as before the readings were
/// one value; only the gate's two settings are ignored when `score_gating` is false.
#[derive(Serialize, Deserialize)]
struct ReadingKeys {
    rho: f64,
    alpha_f: f64,
    prompt_insertion: PromptInsertion,
    score_gating: bool,
    score_gate: ScoreGate,
    gate_scope: GateScope,
    refine_residual: bool,
    attention_residual: bool,
    refine_input_norm: bool,
    /// Added after the other keys; an earlier file without it ran the learned split.
    #[serde(default)]
    ranking: SplitRanking,
}

impl From<ReadingKeys> for RefinementReadings {
    fn from(k: ReadingKeys) -> Self {
        Self {
            rho: k.rho,
            alpha_f: k.alpha_f,
            prompt_insertion: k.prompt_insertion,
            gate: k.score_gating.then_some(Gate {
                value: k.score_gate,
                scope: k.gate_scope,
            }),
            refine_residual: k.refine_residual,
            attention_residual: k.attention_residual,
            refine_input_norm: k.refine_input_norm,
            ranking: k.ranking,
        }
    }
}

impl From<RefinementReadings> for ReadingKeys {
    fn from(r: RefinementReadings) -> Self {
        let gate = r.gate.unwrap_or_default();
        Self {
            rho: r.rho,
            alpha_f: r.alpha_f,
            prompt_insertion: r.prompt_insertion,
            score_gating: r.gate.is_some(),
            score_gate: gate.value,
            gate_scope: gate.scope,
            refine_residual: r.refine_residual,
            attention_residual: r.attention_residual,
            refine_input_norm: r.refine_input_norm,
            ranking: r.ranking,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readings_are_the_flat_keys_of_earlier_files() {
        let json = serde_json::to_value(RefinementReadings::default()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "alpha_f",
                "attention_residual",
                "gate_scope",
                "prompt_insertion",
                "ranking",
                "refine_input_norm",
                "refine_residual",
                "rho",
                "score_gate",
                "score_gating"
            ]
        );
        assert_eq!(json["alpha_f"], 1.0);
        assert_eq!(json["score_gate"], "unit");
        assert_eq!(json["ranking"], "learned");
        let earlier = r#"{"rho": 0.3, "alpha_f": 0.5, "prompt_insertion": "summation",
            "score_gating": true, "score_gate": "signed", "gate_scope": "update",
            "refine_residual": false, "attention_residual": true, "refine_input_norm": false}"#;
        let r: RefinementReadings = serde_json::from_str(earlier).unwrap();
        assert_eq!(
            r,
            RefinementReadings {
                rho: 0.3,
                alpha_f: 0.5,
                prompt_insertion: PromptInsertion::Summation,
                gate: Some(Gate {
                    value: ScoreGate::Signed,
                    scope: GateScope::Update
                }),
                refine_residual: false,
                attention_residual: true,
                refine_input_norm: false,
                ranking: SplitRanking::Learned,
            }
        );
        let back: RefinementReadings =
            serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn without_score_gating_there_is_no_gate_and_a_missing_key_is_named() {
        let mut json = serde_json::to_value(RefinementReadings::default()).unwrap();
        json["score_gating"] = false.into();
        json["score_gate"] = "signed".into();
        let r: RefinementReadings = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(r.gate, None);
        json.as_object_mut().unwrap().remove("refine_residual");
        let err = serde_json::from_value::<RefinementReadings>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("refine_residual"), "{err}");
    }

    #[test]
    fn every_ranking_name_reads_back_and_an_unknown_one_lists_them() {
        for mode in SplitRanking::ALL {
            assert_eq!(mode.name().parse::<SplitRanking>().unwrap(), mode);
            let json = serde_json::to_value(RefinementReadings::default().with_ranking(mode));
            assert_eq!(json.unwrap()["ranking"], mode.name());
        }
        let err = "oracle".parse::<SplitRanking>().unwrap_err().to_string();
        assert!(
            err.contains("oracle-noise") && err.contains("random"),
            "{err}"
        );
        assert!(SplitRanking::OracleConflict.needs_truth() && !SplitRanking::Random.needs_truth());
    }

    #[test]
    fn validate_names_the_key_out_of_its_domain() {
        assert!(RefinementReadings::default().validate().is_ok());
        for (r, key) in [
            (RefinementReadings::default().with_rho(0.0), "rho"),
            (RefinementReadings::default().with_rho(1.5), "rho"),
            (RefinementReadings::default().with_alpha_f(1.2), "alpha_f"),
        ] {
            let err = r.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
