//! Training on a pretrained backbone, frozen or fine-tuned: the paper's setting (DESIGN.md,
//! "Two training settings"). The backbone, the stand-in for ViLT, is Eq. 1's tokenizers
//! (projection and position embedding) and Eq. 2's multimodal encoder. Frozen, its parameters
//! carry no gradient (Burn's `no_grad`: the autodiff graph does not track them, so there is no
//! backward through their weights and the optimiser keeps no state for them); each method
//! trains only what it adds: the baseline its head, `baseline-wide` its wider head, MAPs and
//! MSPs their prompts and head, MGR its unimodal encoders, refinement layers and head.
//!
//! Eq. 1's availability embeddings E_avail and E_miss are trained by every method in both
//! settings: a backbone pretrained on complete samples never saw an absent modality, so its
//! E_miss is untrained, and every method must learn what to put in a missing modality's place
//! (MAPs' ViLT gets a fixed dummy input instead; here one rule holds for all methods).

use burn::module::Module;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::MgrError;
use crate::model::Model;
use crate::tokenizer::ModalityTokenizer;

/// Which parameters a run leaves as they were loaded.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Freeze {
    /// Every parameter trains (from scratch, or fine-tuning a loaded backbone).
    #[default]
    None,
    /// The backbone (tokenizers' projections and position embeddings, the multimodal encoder)
    /// gets no gradient.
    Backbone,
}

impl Freeze {
    /// Both settings.
    pub const ALL: [Freeze; 2] = [Freeze::None, Freeze::Backbone];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Freeze::None => "none",
            Freeze::Backbone => "backbone",
        }
    }
}

impl fmt::Display for Freeze {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Freeze {
    type Err = MgrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Freeze::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| MgrError::UnknownName {
                kind: "freeze".into(),
                name: s.into(),
                expected: Freeze::ALL.map(Freeze::name).join(", "),
            })
    }
}

/// How many scalar parameters a run trains and how many it leaves frozen.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamCounts {
    /// Parameters the optimiser updates.
    pub trainable: usize,
    /// Parameters that keep their loaded values.
    pub frozen: usize,
}

impl Model {
    /// This model with the parameters `freeze` names excluded from training, persistently
    /// (they stay excluded after a fork to another device and a checkpoint load). Call it on
    /// the training (autodiff) model, after loading the backbone's weights.
    pub fn freeze(mut self, freeze: Freeze) -> Self {
        match freeze {
            Freeze::None => self,
            Freeze::Backbone => {
                self.tokenizers = self
                    .tokenizers
                    .into_iter()
                    .map(|t| ModalityTokenizer {
                        projection: t.projection.no_grad(),
                        position: t.position.set_require_grad(false),
                        ..t
                    })
                    .collect();
                self.encoder = self.encoder.no_grad();
                self
            }
        }
    }

    /// Scalar parameters of the backbone: the tokenizers' projections and position embeddings
    /// and the multimodal encoder.
    pub fn backbone_params(&self) -> usize {
        let tokenizers: usize = self
            .tokenizers
            .iter()
            .map(|t| t.projection.num_params() + t.position.lazy_shape().num_elements())
            .sum();
        tokenizers + self.encoder.num_params()
    }

    /// Trainable and frozen parameter counts under `freeze`.
    pub fn param_counts(&self, freeze: Freeze) -> ParamCounts {
        let total = self.num_params();
        let frozen = match freeze {
            Freeze::None => 0,
            Freeze::Backbone => self.backbone_params(),
        };
        ParamCounts {
            trainable: total - frozen,
            frozen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::absence::AbsenceMask;
    use crate::batch::Batch;
    use crate::config::{Method, ModalitySpec, ModelConfig};
    use crate::data::DataSplit;
    use crate::train::{TrainConfig, init_model, train_step};
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::{Device, Tensor};

    fn cfg(method: Method) -> ModelConfig {
        ModelConfig::new(
            vec![
                ModalitySpec::new("a".into(), 4, 3),
                ModalitySpec::new("b".into(), 5, 2),
            ],
            3,
        )
        .with_method(method)
        .with_d_model(8)
        .with_n_heads(2)
    }

    fn batch(config: &ModelConfig, device: &Device) -> Batch {
        let b = 6;
        let split = DataSplit::random_normal("random", config.modalities.clone(), b, 3, 5);
        let mask = AbsenceMask {
            modalities: vec!["a".into(), "b".into()],
            rows: vec![
                vec![true, true],
                vec![true, false],
                vec![false, true],
                vec![true, true],
                vec![true, false],
                vec![true, true],
            ],
        };
        Batch::from_split(&split, &(0..b).collect::<Vec<_>>(), &mask, device)
    }

    /// Every parameter's values, in module order, with whether it requires a gradient.
    struct Values(Vec<(bool, Vec<f32>)>);

    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            let grad = t.is_require_grad();
            self.0.push((
                grad,
                t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap(),
            ));
        }
    }

    fn values(model: &impl Module) -> Vec<(bool, Vec<f32>)> {
        let mut v = Values(Vec::new());
        model.visit(&mut v);
        v.0
    }

    /// Frozen: three AdamW steps leave every backbone parameter bit for bit as loaded and
    /// move the head, E_miss and MGR's own modules; the counts match what autodiff tracks.
    #[test]
    fn a_frozen_backbone_does_not_move_and_the_rest_trains() {
        let device = Device::flex().autodiff();
        for method in [Method::Baseline, Method::Mgr, Method::Maps] {
            let config = cfg(method);
            let model = init_model(&config, 3, &device)
                .unwrap()
                .freeze(Freeze::Backbone);
            let counts = model.param_counts(Freeze::Backbone);
            let tracked: usize = {
                let all = values(&model);
                all.iter().filter(|(g, _)| *g).map(|(_, v)| v.len()).sum()
            };
            assert_eq!(tracked, counts.trainable, "{method}");
            assert_eq!(counts.trainable + counts.frozen, model.num_params());
            let encoder_before = values(&model.encoder);
            let projection_before = values(&model.tokenizers[0].projection);
            let position_before = values(&model.tokenizers[1].position);
            let head_before = values(&model.head);
            let miss_before = values(&model.tokenizers[1].e_miss);
            let mut optimizer = TrainConfig::new().optimizer();
            let batch = batch(&config, &device);
            let mut model = model;
            for _ in 0..3 {
                model = train_step(model, &mut optimizer, 1e-2, &batch).0;
            }
            let unchanged = |a: Vec<(bool, Vec<f32>)>, b: Vec<(bool, Vec<f32>)>| {
                a.iter().zip(&b).all(|(x, y)| {
                    x.1.iter()
                        .zip(&y.1)
                        .all(|(p, q)| p.to_bits() == q.to_bits())
                })
            };
            assert!(
                unchanged(values(&model.encoder), encoder_before),
                "{method}"
            );
            assert!(
                unchanged(values(&model.tokenizers[0].projection), projection_before),
                "{method}"
            );
            assert!(
                unchanged(values(&model.tokenizers[1].position), position_before),
                "{method}"
            );
            assert!(!unchanged(values(&model.head), head_before), "{method}");
            assert!(
                !unchanged(values(&model.tokenizers[1].e_miss), miss_before),
                "{method}: E_miss trains with a frozen backbone"
            );
            // Still frozen after the steps: nothing re-enabled the gradient.
            assert!(values(&model.encoder).iter().all(|(g, _)| !g), "{method}");
        }
    }

    /// Fine-tuning (`none`) moves the encoder too.
    #[test]
    fn without_a_freeze_the_encoder_trains() {
        let device = Device::flex().autodiff();
        let config = cfg(Method::Baseline);
        let model = init_model(&config, 3, &device)
            .unwrap()
            .freeze(Freeze::None);
        assert_eq!(model.param_counts(Freeze::None).frozen, 0);
        let before = values(&model.encoder);
        let mut optimizer = TrainConfig::new().optimizer();
        let model = train_step(model, &mut optimizer, 1e-2, &batch(&config, &device)).0;
        assert_ne!(values(&model.encoder), before);
    }

    /// On a frozen backbone MGR trains more than the baseline, and `baseline-wide` within 10%
    /// of MGR (its purpose); their backbones are the same size.
    #[test]
    fn baseline_wide_matches_mgrs_trainable_count() {
        let device = Device::flex();
        for (d, heads) in [(8, 2), (64, 4), (16, 4)] {
            let count = |m: Method| {
                let model = cfg(m)
                    .with_d_model(d)
                    .with_n_heads(heads)
                    .init(&device)
                    .unwrap();
                (
                    model.param_counts(Freeze::Backbone),
                    model.backbone_params(),
                )
            };
            let (base, base_backbone) = count(Method::Baseline);
            let (mgr, mgr_backbone) = count(Method::Mgr);
            let (wide, wide_backbone) = count(Method::BaselineWide);
            assert_eq!(base_backbone, mgr_backbone);
            assert_eq!(wide_backbone, mgr_backbone);
            assert!(mgr.trainable > 2 * base.trainable, "{mgr:?} {base:?}");
            let ratio = wide.trainable as f64 / mgr.trainable as f64;
            assert!((0.9..=1.1).contains(&ratio), "d {d}: {wide:?} vs {mgr:?}");
        }
    }

    #[test]
    fn freeze_names_round_trip() {
        for f in Freeze::ALL {
            assert_eq!(f.name().parse::<Freeze>().unwrap(), f);
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{f}\""));
        }
        let err = "encoder".parse::<Freeze>().unwrap_err().to_string();
        assert!(err.contains("backbone"), "{err}");
    }
}
