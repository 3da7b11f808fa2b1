//! Inference for the page: the exported model, a synthetic sample, a mask, rho and L_T in; the
//! trace out. Plain Rust, so the native tests compute exactly what the page shows.

use burn::tensor::Device;
use mgr::absence::SplitKind;
use mgr::batch::Batch;
use mgr::data::{DataSplit, Targets};
use mgr::synthetic::{SyntheticConfig, SyntheticSample};
use mgr::trace::SampleTrace;
use mgr::{Model, ModelConfig};
use serde::Deserialize;

use crate::state::Limits;

/// `model.json` as `mgr export-web` writes it.
#[derive(Clone, Debug, Deserialize)]
pub struct WebMeta {
    /// Must be "mgr-web-model/1".
    pub format: String,
    /// The model's configuration.
    pub model: ModelConfig,
    /// The synthetic dataset it was trained on (the page draws samples from it).
    pub synthetic: SyntheticConfig,
    /// kappa it was trained at.
    #[serde(default)]
    pub kappa: f64,
}

/// Test samples over which the page reports the ranking's AUC (samples 0..64).
pub const AUC_SAMPLES: usize = 64;

/// The (rho, L_T) a ranking AUC was computed under, and the AUC per layer.
type AucCache = Option<((Option<u64>, Option<usize>), Vec<Option<f64>>)>;

/// A loaded model, ready to run.
pub struct Engine {
    /// The model on the CPU backend.
    pub model: Model,
    /// Its metadata.
    pub meta: WebMeta,
    device: Device,
    /// The last ranking AUCs computed, keyed by the (rho, L_T) they were computed under.
    auc_cache: std::cell::RefCell<AucCache>,
}

/// One inference: the trace under the chosen mask and, for comparison, with everything present.
pub struct Inference {
    /// Under the chosen mask.
    pub trace: SampleTrace,
    /// With every modality present.
    pub complete: SampleTrace,
}

impl Engine {
    /// Loads `model.json` and `model.bpk` contents; errors say which file and what is wrong.
    pub fn load(meta_json: &str, weights: Vec<u8>) -> Result<Engine, String> {
        let meta: WebMeta = serde_json::from_str(meta_json)
            .map_err(|e| format!("model.json is not an exported MGR model: {e}"))?;
        if meta.format != "mgr-web-model/1" {
            return Err(format!(
                "model.json has format `{}`, expected mgr-web-model/1",
                meta.format
            ));
        }
        let expected: Vec<String> = mgr::synthetic::modalities()
            .into_iter()
            .map(|m| m.name)
            .collect();
        let got: Vec<String> = meta
            .model
            .modalities
            .iter()
            .map(|m| m.name.clone())
            .collect();
        if got != expected || meta.model.modalities != mgr::synthetic::modalities() {
            return Err(format!(
                "model.json: the page draws the synthetic modalities {expected:?}, this model has {got:?}"
            ));
        }
        let device = Device::flex();
        let model = mgr::persist::from_burnpack(&meta.model, weights, &device, "model.bpk")
            .map_err(|e| e.to_string())?;
        Ok(Engine {
            model,
            meta,
            device,
            auc_cache: std::cell::RefCell::new(None),
        })
    }

    /// Modalities and layers the page may offer.
    pub fn limits(&self) -> Limits {
        Limits {
            modalities: self
                .meta
                .model
                .modalities
                .iter()
                .map(|m| m.name.clone())
                .collect(),
            refine_layers: self.meta.model.refine_layers_effective(),
        }
    }

    /// Test sample `index` of the model's synthetic dataset.
    pub fn sample(&self, index: usize) -> SyntheticSample {
        self.meta.synthetic.sample(SplitKind::Test, index)
    }

    /// The model with the page's rho and L_T applied.
    fn adjusted(&self, rho: Option<f64>, lt: Option<usize>) -> Model {
        let mut model = self.model.clone();
        if let Some(rho) = rho {
            model.refinement.iter_mut().for_each(|l| l.rho = rho);
        }
        if let Some(lt) = lt {
            model.refinement.truncate(lt.max(1));
        }
        model
    }

    /// Per refinement layer, the AUC of xi separating signal from the ground-truth noise tokens
    /// over test samples `0..AUC_SAMPLES` with every modality present, under `rho` and `lt`
    /// ([`mgr::ranking_quality`], as `mgr eval` reports it). Cached for the last (rho, lt).
    pub fn ranking_auc(&self, rho: Option<f64>, lt: Option<usize>) -> Vec<Option<f64>> {
        let key = (rho.map(f64::to_bits), lt);
        if let Some((cached_key, aucs)) = self.auc_cache.borrow().as_ref()
            && *cached_key == key
        {
            return aucs.clone();
        }
        let model = self.adjusted(rho, lt);
        let split = self.meta.synthetic.first(SplitKind::Test, AUC_SAMPLES);
        let rows: Vec<usize> = (0..split.len()).collect();
        let available = vec![vec![true; split.modalities.len()]; split.len()];
        let batch = Batch::from_features(&split, &rows, available, &self.device);
        let (_, traces) = model.trace(&batch);
        let noise = self
            .meta
            .synthetic
            .noise_truth(SplitKind::Test, split.len());
        let aucs: Vec<Option<f64>> = mgr::ranking_quality::layer_rankings(&traces, &noise)
            .into_iter()
            .map(|l| l.auc)
            .collect();
        *self.auc_cache.borrow_mut() = Some((key, aucs.clone()));
        aucs
    }

    /// Runs the model on `sample` with `available`, `rho` and `lt` refinement layers.
    pub fn infer(
        &self,
        sample: &SyntheticSample,
        available: &[bool],
        rho: Option<f64>,
        lt: Option<usize>,
    ) -> Inference {
        let model = self.adjusted(rho, lt);
        let split = DataSplit {
            name: "page".into(),
            modalities: self.meta.model.modalities.clone(),
            features: sample.features(),
            targets: Targets::Classes {
                labels: vec![sample.label],
                n_classes: self.meta.model.n_outputs,
            },
        };
        let all = vec![true; available.len()];
        let batch =
            Batch::from_features(&split, &[0, 0], vec![available.to_vec(), all], &self.device);
        let (_, mut traces) = model.trace(&batch);
        let complete = traces.pop().expect("two traces");
        let trace = traces.pop().expect("two traces");
        Inference { trace, complete }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mgr::fuzz::mutate_bytes as mutate;

    /// The model the page ships, loaded as the page loads it.
    pub(crate) fn shipped() -> Engine {
        Engine::load(
            include_str!("../assets/model/model.json"),
            include_bytes!("../assets/model/model.bpk").to_vec(),
        )
        .expect("the shipped model loads")
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// A damaged `model.json` or `model.bpk` (bytes overwritten, deleted, inserted; digits
        /// in the JSON changed, which can ask for a far larger model): an error or a model,
        /// never a panic or an allocation the weights cannot back.
        #[test]
        fn a_damaged_model_file_is_refused_or_loaded_without_a_panic(
            edits in proptest::collection::vec(
                (proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>(), 0u8..3), 1..6),
            digit_at in proptest::prelude::any::<usize>(),
            digit in b'0'..=b'9',
        ) {
            let json = include_bytes!("../assets/model/model.json").to_vec();
            let weights = include_bytes!("../assets/model/model.bpk").to_vec();
            let mut json_digit = json.clone();
            let digits: Vec<usize> = (0..json.len()).filter(|&i| json[i].is_ascii_digit()).collect();
            let at = digits[digit_at % digits.len()];
            json_digit.insert(at, digit);
            for (meta, bpk) in [
                (mutate(json.clone(), &edits), weights.clone()),
                (json_digit, weights.clone()),
                (json, mutate(weights, &edits)),
            ] {
                let _ = Engine::load(&String::from_utf8_lossy(&meta), bpk);
            }
        }
    }

    /// The page's AUC line: one value per refinement layer in use, each a probability, the
    /// same from the cache, and layer 0's equal to the AUC of the traces' own scores.
    #[test]
    fn ranking_auc_per_layer_matches_the_traces_it_summarises() {
        let engine = shipped();
        let aucs = engine.ranking_auc(None, None);
        assert_eq!(aucs.len(), engine.limits().refine_layers);
        assert!(
            aucs.iter()
                .all(|a| a.is_some_and(|v| (0.0..=1.0).contains(&v))),
            "{aucs:?}"
        );
        assert_eq!(engine.ranking_auc(None, None), aucs);
        assert_eq!(engine.ranking_auc(None, Some(1)).len(), 1);
        // Layer 0 does not depend on rho (the split of layer 0 is made after its scores).
        assert_eq!(engine.ranking_auc(Some(0.3), None)[0], aucs[0]);

        let (mut scores, mut signal) = (Vec::new(), Vec::new());
        for i in 0..AUC_SAMPLES {
            let sample = engine.sample(i);
            let trace = engine.infer(&sample, &[true, true, true], None, None).trace;
            for t in &trace.layers[0].tokens {
                scores.push(t.xi);
                signal.push(!sample.noise_tokens[t.origin.modality][t.origin.position]);
            }
        }
        let want = mgr::ranking_quality::auc(&scores, &signal).unwrap();
        assert!((aucs[0].unwrap() - want).abs() < 1e-3, "{aucs:?} vs {want}");
    }
}
