//! Inference for the page: the exported model, a sample (synthetic or AV-MNIST), a mask, rho and
//! L_T in; the trace out. Plain Rust, so the native tests compute exactly what the page shows.

use burn::tensor::Device;
use mgr::Model;
use mgr::SplitRanking;
use mgr::absence::SplitKind;
use mgr::batch::Batch;
use mgr::data::{DataSplit, Targets};
use mgr::ranking_quality::{LayerDrivers, LayerRanking};
use mgr::trace::SampleTrace;

use crate::sample::{AvSamples, PageSample};
use crate::state::{Data, Limits, MAX_SAMPLE, ViewState};

/// `model.json` as `mgr export-web` writes it (the schema is the model crate's).
pub use mgr::persist::WebModelFile as WebMeta;

/// What the page checks in a `model.json` beyond its schema.
pub trait PageMeta: Sized {
    /// Parses and checks `model.json`: the format, and the dataset with the modalities the page
    /// can draw for it.
    fn parse(meta_json: &str) -> Result<Self, String>;
    /// Which of the page's datasets the model draws.
    fn data(&self) -> Result<Data, String>;
}

impl PageMeta for WebMeta {
    fn parse(meta_json: &str) -> Result<WebMeta, String> {
        let meta: WebMeta = serde_json::from_str(meta_json)
            .map_err(|e| format!("model.json is not an exported MGR model: {e}"))?;
        if meta.format != mgr::persist::WEB_MODEL_FORMAT {
            return Err(format!(
                "model.json has format `{}`, expected {}",
                meta.format,
                mgr::persist::WEB_MODEL_FORMAT
            ));
        }
        let data = meta.data()?;
        let expected = match data {
            Data::Synthetic => mgr::synthetic::modalities(),
            Data::Avmnist => mgr::avmnist_tokens::modalities(),
        };
        if meta.model.modalities != expected {
            let names = |m: &[mgr::ModalitySpec]| -> Vec<String> {
                m.iter()
                    .map(|s| format!("{} {}x{}", s.name, s.n_tokens, s.token_dim))
                    .collect()
            };
            return Err(format!(
                "model.json: the page draws the {} modalities {:?}, this model has {:?}",
                data.name(),
                names(&expected),
                names(&meta.model.modalities)
            ));
        }
        if data == Data::Synthetic && meta.synthetic.is_none() {
            return Err("model.json: a synthetic model needs its `synthetic` settings".into());
        }
        if data == Data::Avmnist && meta.samples_file.is_none() {
            return Err("model.json: an AV-MNIST model needs its `samples_file`".into());
        }
        Ok(meta)
    }

    fn data(&self) -> Result<Data, String> {
        Data::from_name(&self.dataset).ok_or_else(|| {
            format!(
                "model.json: the page draws synthetic or AV-MNIST models, this one was trained on `{}`",
                self.dataset
            )
        })
    }
}

/// Test samples over which the page reports the ranking's AUC (samples 0..64).
pub const AUC_SAMPLES: usize = 64;

/// The split's grades per layer and what xi follows per layer.
pub type Grades = (Vec<LayerRanking>, Vec<LayerDrivers>);

/// The (rho, L_T, ranking) the grades were computed under, and the grades.
type GradeCache = Option<(SettingsKey, Grades)>;

/// The sample (its features, label and index) and the settings a trace with every modality
/// present was computed under.
type CompleteKey = (Vec<Vec<f32>>, usize, usize, SettingsKey);

/// [`Settings`] as a cache key (rho by its bits).
type SettingsKey = (Option<u64>, Option<usize>, SplitRanking);

/// What the view changes of the shipped model: rho, L_T and the split's ranking.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Settings {
    /// Kept fraction rho (None: the model's).
    pub rho: Option<f64>,
    /// Refinement layers run (None: the model's).
    pub lt: Option<usize>,
    /// The order the split keeps tokens by (the learned one unless set).
    pub ranking: SplitRanking,
}

impl Settings {
    /// The settings of a view.
    pub fn of(state: &ViewState) -> Settings {
        Settings {
            rho: state.rho,
            lt: state.lt,
            ranking: state.ranking,
        }
    }

    fn key(self) -> SettingsKey {
        (self.rho.map(f64::to_bits), self.lt, self.ranking)
    }
}

/// A loaded model, ready to run.
pub struct Engine {
    /// The model on the CPU backend.
    pub model: Model,
    /// Its metadata.
    pub meta: WebMeta,
    /// Which dataset it draws.
    pub data: Data,
    /// AV-MNIST: the shipped test samples.
    pub samples: Option<AvSamples>,
    device: Device,
    /// The last ranking grades computed, keyed by the settings they were computed under.
    grade_cache: std::cell::RefCell<GradeCache>,
    /// The last trace with every modality present, so that dropping modalities of the same
    /// sample runs the model on one sample, not two.
    complete_cache: std::cell::RefCell<Option<(CompleteKey, SampleTrace)>>,
}

/// One inference: the trace under the chosen mask and, for comparison, with everything present.
pub struct Inference {
    /// Under the chosen mask.
    pub trace: SampleTrace,
    /// With every modality present.
    pub complete: SampleTrace,
}

impl Engine {
    /// Loads `model.json`, `model.bpk` and (AV-MNIST) the samples file's contents; errors say
    /// which file and what is wrong.
    pub fn load(
        meta_json: &str,
        weights: Vec<u8>,
        samples: Option<Vec<u8>>,
    ) -> Result<Engine, String> {
        let meta = WebMeta::parse(meta_json)?;
        let data = meta.data()?;
        let samples = match (data, samples) {
            (Data::Synthetic, _) => None,
            (Data::Avmnist, Some(bytes)) => {
                let file = meta
                    .samples_file
                    .as_deref()
                    .unwrap_or("samples.safetensors");
                let parsed = AvSamples::parse(&bytes, &meta.model.modalities, file)?;
                if parsed.samples.is_empty() {
                    return Err(format!("{file}: no samples"));
                }
                Some(parsed)
            }
            (Data::Avmnist, None) => {
                return Err("an AV-MNIST model comes with its samples file".into());
            }
        };
        let device = Device::flex();
        let model = mgr::persist::from_burnpack(&meta.model, weights, &device, "model.bpk")
            .map_err(|e| e.to_string())?;
        Ok(Engine {
            model,
            meta,
            data,
            samples,
            device,
            grade_cache: std::cell::RefCell::new(None),
            complete_cache: std::cell::RefCell::new(None),
        })
    }

    /// Modalities, layers and samples the page may offer.
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
            samples: self
                .samples
                .as_ref()
                .map_or(MAX_SAMPLE + 1, |s| s.samples.len()),
            truth: self.data == Data::Synthetic && self.meta.synthetic.is_some(),
        }
    }

    /// Test sample `index` (any index for synthetic data; the shipped ones for AV-MNIST,
    /// counted round).
    pub fn sample(&self, index: usize) -> PageSample {
        match (&self.samples, &self.meta.synthetic) {
            (Some(av), _) => PageSample::Avmnist(av.samples[index % av.samples.len()].clone()),
            (None, Some(config)) => PageSample::Synthetic(config.sample(SplitKind::Test, index)),
            (None, None) => unreachable!("WebMeta::parse demands one of the two"),
        }
    }

    /// Test samples `indices` ([`Engine::sample`]) as one split, for batch runs of the model.
    pub fn sample_split(&self, indices: &[usize]) -> DataSplit {
        let samples: Vec<PageSample> = indices.iter().map(|&i| self.sample(i)).collect();
        let modalities = self.meta.model.modalities.clone();
        let features = (0..modalities.len())
            .map(|m| {
                samples
                    .iter()
                    .flat_map(|s| s.features().swap_remove(m))
                    .collect()
            })
            .collect();
        DataSplit {
            name: "page".into(),
            modalities,
            features,
            targets: Targets::Classes {
                labels: samples.iter().map(PageSample::label).collect(),
                n_classes: self.meta.model.n_outputs,
            },
            truth: None,
        }
    }

    /// How many of the test samples the page's checks run on: every shipped one (AV-MNIST), or
    /// the ones its ranking AUC is measured on (synthetic, `0..AUC_SAMPLES`).
    pub fn checked_samples(&self) -> usize {
        self.samples
            .as_ref()
            .map_or(AUC_SAMPLES, |s| s.samples.len())
    }

    /// [`mgr::persist::compare_outputs`] of two versions of this model (e.g. f32 weights and
    /// their half-precision rounding) on the [`Engine::checked_samples`] under every absence
    /// pattern.
    pub fn compare_models(&self, model: &Model, other: &Model) -> mgr::persist::PrecisionCheck {
        let indices: Vec<usize> = (0..self.checked_samples()).collect();
        let split = self.sample_split(&indices);
        mgr::persist::compare_outputs(model, other, &split, &indices, &self.device)
    }

    /// The name of class `c` (a synthetic class word, or the digit).
    pub fn class_name(&self, c: usize) -> String {
        match self.data {
            Data::Synthetic => mgr::synthetic::VOCABULARY
                .get(c)
                .map_or_else(|| c.to_string(), |w| w.to_string()),
            Data::Avmnist => c.to_string(),
        }
    }

    /// The model with the page's rho and L_T applied.
    fn adjusted(&self, settings: Settings) -> Model {
        let mut model = self.model.clone();
        if let Some(rho) = settings.rho {
            model.set_rho(rho);
        }
        if let Some(lt) = settings.lt {
            model.keep_refinement_layers(lt);
        }
        model.set_ranking(settings.ranking);
        model
    }

    /// Per refinement layer, the AUC of the split's score separating signal from the
    /// ground-truth noise tokens, pooled over the modalities ([`Engine::ranking_grades`]).
    pub fn ranking_auc(&self, rho: Option<f64>, lt: Option<usize>) -> Option<Vec<Option<f64>>> {
        let settings = Settings {
            rho,
            lt,
            ..Settings::default()
        };
        let (grades, _) = self.ranking_grades(settings)?;
        Some(grades.into_iter().map(|l| l.auc).collect())
    }

    /// Per refinement layer, the ranking's grades against the ground truth over test samples
    /// `0..AUC_SAMPLES` with every modality present, under `settings`, and what the learned xi
    /// follows there ([`mgr::ranking_quality::complete_grades`], as `mgr eval` reports them):
    /// the noise AUC inside each modality and pooled, the conflict AUC, the kept rates; xi's
    /// mean per modality, its correlations with attention, position and class evidence. Cached
    /// for the last settings. None for data without ground truth (AV-MNIST).
    pub fn ranking_grades(&self, settings: Settings) -> Option<Grades> {
        let config = self
            .meta
            .synthetic
            .as_ref()
            .filter(|_| self.data == Data::Synthetic)?;
        let key = settings.key();
        if let Some((cached_key, grades)) = self.grade_cache.borrow().as_ref()
            && *cached_key == key
        {
            return Some(grades.clone());
        }
        let model = self.adjusted(settings);
        let split = config.first(SplitKind::Test, AUC_SAMPLES);
        let grades = mgr::ranking_quality::complete_grades(&model, &split, &self.device).ok()?;
        *self.grade_cache.borrow_mut() = Some((key, grades.clone()));
        Some(grades)
    }

    /// Runs the model on `sample` with `available`, `rho` and `lt` refinement layers and the
    /// learned ranking ([`Engine::infer_with`]).
    pub fn infer(
        &self,
        sample: &PageSample,
        available: &[bool],
        rho: Option<f64>,
        lt: Option<usize>,
    ) -> Inference {
        let settings = Settings {
            rho,
            lt,
            ..Settings::default()
        };
        self.infer_with(sample, 0, available, settings)
    }

    /// Runs the model on `sample` (test index `index`, which picks the random ranking's draw)
    /// with `available` under `settings`, and (for comparison) with every modality present: one
    /// sample's forward pass when nothing is dropped or the complete trace of this sample is
    /// the one kept from the last call, two otherwise. The oracle rankings read the synthetic
    /// sample's ground truth.
    pub fn infer_with(
        &self,
        sample: &PageSample,
        index: usize,
        available: &[bool],
        settings: Settings,
    ) -> Inference {
        let model = self.adjusted(settings);
        let features = sample.features();
        let key: CompleteKey = (features.clone(), sample.label(), index, settings.key());
        let everything = available.iter().all(|&a| a);
        let kept = match everything {
            true => None,
            false => self
                .complete_cache
                .borrow()
                .as_ref()
                .filter(|(cached, _)| *cached == key)
                .map(|(_, trace)| trace.clone()),
        };
        let mut masks = vec![available.to_vec()];
        if !everything && kept.is_none() {
            masks.push(vec![true; available.len()]);
        }
        let split = DataSplit {
            name: "page".into(),
            modalities: self.meta.model.modalities.clone(),
            features,
            targets: Targets::Classes {
                labels: vec![sample.label()],
                n_classes: self.meta.model.n_outputs,
            },
            truth: sample.truth().map(|t| vec![t]),
        };
        let rows = vec![0; masks.len()];
        let mut batch = Batch::from_features(&split, &rows, masks, &self.device);
        batch.sample_ids = vec![index; rows.len()];
        let (_, mut traces) = model.trace(&batch);
        let complete = match (everything, kept) {
            (true, _) => traces[0].clone(),
            (false, Some(kept)) => kept,
            (false, None) => traces.pop().expect("two traces"),
        };
        let trace = traces.swap_remove(0);
        *self.complete_cache.borrow_mut() = Some((key, complete.clone()));
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
            None,
        )
        .expect("the shipped model loads")
    }

    /// The AV-MNIST model the page ships, with its samples, loaded as the page loads it.
    pub(crate) fn shipped_avmnist() -> Engine {
        Engine::load(
            include_str!("../assets/model-avmnist/model.json"),
            include_bytes!("../assets/model-avmnist/model.bpk").to_vec(),
            Some(include_bytes!("../assets/model-avmnist/samples.safetensors").to_vec()),
        )
        .expect("the shipped AV-MNIST model loads")
    }

    /// The shipped `model.json` files were written before the readings were one value and before
    /// the execution policy left the model config (`fused_kernels` in an older file loads too:
    /// `config.rs`'s test): they load with the readings they were trained with, and the model
    /// runs the project's kernels.
    #[test]
    fn model_json_files_written_before_the_readings_were_one_value_load() {
        for file in [
            include_str!("../assets/model/model.json"),
            include_str!("../assets/model-avmnist/model.json"),
        ] {
            assert!(file.contains("\"score_gating\"") && !file.contains("\"execution\""));
        }
        for engine in [shipped(), shipped_avmnist()] {
            let readings = engine.model.config.refinement;
            assert_eq!(
                readings,
                mgr::RefinementReadings::default(),
                "{:?}",
                engine.data
            );
            assert_eq!(engine.model.refinement.len(), 2);
            assert_eq!(engine.model.refinement[0].readings, readings);
            assert_eq!(engine.model.execution, mgr::kernels::Execution::Kernels);
        }
    }

    /// The largest difference of a class probability between the page's half-precision models
    /// and their f32 weights (web/reference/), over the page's samples and every absence
    /// pattern: f16 rounds each weight by at most 2^-11 of it, and through the layers this
    /// measured 7.6e-4 (synthetic) and 5.2e-4 (AV-MNIST); `model.json`'s `weights.check` holds
    /// the figure.
    pub(crate) const HALF_PRECISION_TOLERANCE: f32 = 2e-3;

    /// The shipped models hold exactly their f32 reference's weights rounded to f16, and on
    /// every sample the page shows (synthetic 0-63, every AV-MNIST one) under every absence
    /// pattern they predict what the f32 weights predict, each probability within
    /// [`HALF_PRECISION_TOLERANCE`].
    #[test]
    fn the_half_precision_models_predict_what_their_f32_weights_predict() {
        let reference = [
            (
                shipped(),
                include_bytes!("../reference/model.f32.bpk").as_slice(),
            ),
            (
                shipped_avmnist(),
                include_bytes!("../reference/model-avmnist.f32.bpk").as_slice(),
            ),
        ];
        let device = Device::flex();
        for (engine, f32_weights) in reference {
            let what = engine.data.name();
            let full = mgr::persist::from_burnpack(
                &engine.meta.model,
                f32_weights.to_vec(),
                &device,
                "model.f32.bpk",
            )
            .unwrap();
            let rounded =
                mgr::persist::to_burnpack_as(&full, mgr::persist::WeightPrecision::F16).unwrap();
            let rounded =
                mgr::persist::from_burnpack(&engine.meta.model, rounded, &device, "f16").unwrap();
            let same = engine.compare_models(&rounded, &engine.model);
            assert_eq!(
                same.max_output_diff, 0.0,
                "{what}: not the reference rounded"
            );
            let check = engine.compare_models(&full, &engine.model);
            let shown = if engine.data == Data::Synthetic {
                AUC_SAMPLES
            } else {
                32
            };
            let patterns = (1 << engine.meta.model.modalities.len()) - 1;
            assert_eq!(check.views, shown * patterns, "{what}");
            assert_eq!(check.same_prediction, check.views, "{what}: {check:?}");
            assert!(
                check.max_output_diff > 0.0 && check.max_output_diff <= HALF_PRECISION_TOLERANCE,
                "{what}: {check:?}"
            );
        }
    }

    /// The trace with every modality present is the same whether it was computed beside the
    /// masked one, alone, or kept from the call before; it is kept only for the same sample,
    /// rho and L_T.
    #[test]
    fn the_complete_trace_is_kept_only_for_the_same_sample_rho_and_lt() {
        let engine = shipped();
        let sample = engine.sample(3);
        let drop_audio = [true, false, true];
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        // Nothing kept yet: both traces in one batch of two.
        let beside = engine.infer(&sample, &drop_audio, None, None);
        let alone = engine.infer(&sample, &[true; 3], None, None);
        assert_eq!(alone.trace, alone.complete);
        assert!(close(&beside.complete.output, &alone.trace.output));
        assert_eq!(beside.complete.predicted_class, alone.trace.predicted_class);
        // Kept: the same trace, and the masked one as computed beside it.
        let kept = engine.infer(&sample, &drop_audio, None, None);
        assert_eq!(kept.complete, alone.complete);
        assert!(close(&kept.trace.output, &beside.trace.output));
        assert_ne!(kept.trace.output, kept.complete.output);
        // Another sample, rho or L_T is computed afresh.
        let other = engine.infer(&engine.sample(4), &drop_audio, None, None);
        assert!(!close(&other.complete.output, &alone.complete.output));
        let kept_at = |i: &Inference| {
            i.complete.layers[0]
                .tokens
                .iter()
                .filter(|t| t.kept)
                .count()
        };
        let rho = engine.infer(&sample, &drop_audio, Some(0.25), None);
        assert!(
            kept_at(&rho) < kept_at(&alone),
            "{} vs {}",
            kept_at(&rho),
            kept_at(&alone)
        );
        let lt = engine.infer(&sample, &drop_audio, None, Some(1));
        assert_eq!(
            (lt.complete.layers.len(), alone.complete.layers.len()),
            (1, 2)
        );
    }

    /// The shipped AV-MNIST model reads its digits: with both modalities most shipped samples
    /// are right (its test accuracy is 0.66 over 10,000, mostly missing-modality samples),
    /// each sample's recording says its digit, and there is no ground truth to rank against.
    #[test]
    fn the_shipped_avmnist_model_classifies_its_shipped_samples() {
        let engine = shipped_avmnist();
        let limits = engine.limits();
        assert_eq!(limits.modalities, ["vision", "audio"]);
        assert!(limits.samples >= 24, "{}", limits.samples);
        assert!(engine.ranking_auc(None, None).is_none());
        let (mut right, mut right_vision_only, mut changed) = (0, 0, 0);
        for i in 0..limits.samples {
            let sample = engine.sample(i);
            let PageSample::Avmnist(av) = &sample else {
                panic!("sample {i} is not AV-MNIST")
            };
            assert!(
                av.recording.starts_with(&format!("{}_", av.label)),
                "{}",
                av.recording
            );
            assert!(
                av.wave.len() > 1000,
                "{}: {} samples",
                av.recording,
                av.wave.len()
            );
            let both = engine.infer(&sample, &[true, true], None, None);
            let vision = engine.infer(&sample, &[true, false], None, None);
            right += usize::from(both.trace.predicted_class == Some(av.label));
            right_vision_only += usize::from(vision.trace.predicted_class == Some(av.label));
            changed += usize::from(vision.trace.output != both.trace.output);
            assert_eq!(vision.complete.output, both.trace.output);
        }
        let n = limits.samples;
        assert!(2 * right > n, "{right} of {n} right with both modalities");
        assert_eq!(
            changed, n,
            "dropping audio must change every prediction's probabilities"
        );
        eprintln!(
            "shipped AV-MNIST samples: {right}/{n} right with both, {right_vision_only}/{n} vision only"
        );
        assert_eq!(
            engine.sample(n).label(),
            engine.sample(0).label(),
            "indices count round"
        );
    }

    #[test]
    fn a_model_is_refused_without_its_samples_or_with_modalities_the_page_cannot_draw() {
        let json = include_str!("../assets/model-avmnist/model.json");
        let bpk = include_bytes!("../assets/model-avmnist/model.bpk").to_vec();
        let err = Engine::load(json, bpk, None)
            .err()
            .expect("no samples file");
        assert!(err.contains("samples"), "{err}");
        let synthetic = include_str!("../assets/model/model.json");
        let claim = |dataset: &str| {
            synthetic.replacen(
                "\"format\"",
                &format!("\"dataset\": \"{dataset}\", \"samples_file\": \"s\", \"format\""),
                1,
            )
        };
        let err = WebMeta::parse(&claim("avmnist")).unwrap_err();
        assert!(
            err.contains("avmnist") && err.contains("vision 16x49"),
            "{err}"
        );
        let err = WebMeta::parse(&claim("mosi")).unwrap_err();
        assert!(err.contains("`mosi`"), "{err}");
        assert_eq!(
            WebMeta::parse(synthetic).unwrap().data(),
            Ok(Data::Synthetic)
        );
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
                let _ = Engine::load(&String::from_utf8_lossy(&meta), bpk, None);
            }
        }
    }

    /// The page's AUC line: one value per refinement layer in use, each a probability, the
    /// same from the cache, and layer 0's equal to the AUC of the traces' own scores.
    #[test]
    fn ranking_auc_per_layer_matches_the_traces_it_summarises() {
        let engine = shipped();
        let aucs = engine.ranking_auc(None, None).unwrap();
        assert_eq!(aucs.len(), engine.limits().refine_layers);
        assert!(
            aucs.iter()
                .all(|a| a.is_some_and(|v| (0.0..=1.0).contains(&v))),
            "{aucs:?}"
        );
        assert_eq!(engine.ranking_auc(None, None).unwrap(), aucs);
        assert_eq!(engine.ranking_auc(None, Some(1)).unwrap().len(), 1);
        // Layer 0 does not depend on rho (the split of layer 0 is made after its scores).
        assert_eq!(engine.ranking_auc(Some(0.3), None).unwrap()[0], aucs[0]);

        let (mut scores, mut signal) = (Vec::new(), Vec::new());
        for i in 0..AUC_SAMPLES {
            let sample = engine.sample(i);
            let noise = sample.truth().unwrap().noise;
            let trace = engine.infer(&sample, &[true, true, true], None, None).trace;
            for t in &trace.layers[0].tokens {
                scores.push(t.xi);
                signal.push(!noise[t.origin.modality][t.origin.position]);
            }
        }
        let want = mgr::ranking_quality::auc(&scores, &signal).unwrap();
        assert!((aucs[0].unwrap() - want).abs() < 1e-3, "{aucs:?} vs {want}");
    }
}
