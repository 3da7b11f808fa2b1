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

/// A loaded model, ready to run.
pub struct Engine {
    /// The model on the CPU backend.
    pub model: Model,
    /// Its metadata.
    pub meta: WebMeta,
    device: Device,
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

    /// Runs the model on `sample` with `available`, `rho` and `lt` refinement layers.
    pub fn infer(
        &self,
        sample: &SyntheticSample,
        available: &[bool],
        rho: Option<f64>,
        lt: Option<usize>,
    ) -> Inference {
        let mut model = self.model.clone();
        if let Some(rho) = rho {
            model.refinement.iter_mut().for_each(|l| l.rho = rho);
        }
        if let Some(lt) = lt {
            model.refinement.truncate(lt.max(1));
        }
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
