//! Model weights in Burn's burnpack format, to and from bytes (no file system here: the trainer
//! writes the bytes to files, the browser fetches them), and in safetensors, named and laid out
//! for PyTorch users.

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::{
    BurnToPyTorchAdapter, BurnpackStore, FloatCastAdapter, ModuleSnapshot, SafetensorsStore,
};
use burn::tensor::{Bytes, DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::config::{ModelConfig, Task};
use crate::data::DataSplit;
use crate::error::MgrError;
use crate::metrics::argmax;
use crate::model::Model;
use crate::train::EVAL_BATCH;

/// The `format` of the `model.json` that `mgr export-web` writes and the page reads.
pub const WEB_MODEL_FORMAT: &str = "mgr-web-model/1";

fn synthetic_name() -> String {
    "synthetic".into()
}

/// `model.json`, beside the weights (`model.bpk`) of a model for the page: the one schema
/// `mgr export-web` writes and the page reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebModelFile {
    /// [`WEB_MODEL_FORMAT`].
    pub format: String,
    /// The dataset the model was trained on: "synthetic" (older exports say nothing) or
    /// "avmnist".
    #[serde(default = "synthetic_name")]
    pub dataset: String,
    /// The model's configuration.
    pub model: ModelConfig,
    /// kappa of the run's absence masks (None in older exports).
    #[serde(default)]
    pub kappa: Option<f64>,
    /// How the weights are stored and how far that is from the f32 model (None in older
    /// exports, whose weights are f32).
    #[serde(default)]
    pub weights: Option<WebWeights>,
    /// The run's `results.json` (the page reads its test-set ranking report).
    #[serde(default)]
    pub results: Option<serde_json::Value>,
    /// The synthetic dataset the model was trained on (the page draws samples from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<crate::synthetic::SyntheticConfig>,
    /// The samples file beside `model.json` (AV-MNIST: `samples.safetensors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_file: Option<String>,
    /// Credit line for the data the page shows (AV-MNIST: MNIST and FSDD, CC BY-SA 4.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit: Option<String>,
}

/// `model.json`'s `weights`: the precision of `model.bpk` and its check against f32.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebWeights {
    /// [`WeightPrecision::name`].
    pub precision: String,
    /// The page's outputs from these weights against the f32 model's.
    pub check: PrecisionCheck,
}

impl WebModelFile {
    /// The test-set ranking report `mgr train` measured (`results.ranking`), where the export
    /// has a readable one.
    pub fn test_ranking(&self) -> Option<crate::ranking_quality::RankingReport> {
        let ranking = self.results.as_ref()?.get("ranking")?;
        serde_json::from_value(ranking.clone()).ok()
    }
}

/// How a burnpack file stores the model's floats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightPrecision {
    /// The model's own f32 values: checkpoints, and exports that must reload bit for bit.
    #[default]
    F32,
    /// IEEE half precision (10-bit mantissa, relative rounding error at most 2^-11): half the
    /// download for the page, which converts to f32 on load ([`from_burnpack`]).
    F16,
}

impl WeightPrecision {
    /// The name `--precision` takes and `model.json` records.
    pub fn name(self) -> &'static str {
        match self {
            WeightPrecision::F32 => "f32",
            WeightPrecision::F16 => "f16",
        }
    }

    fn dtype(self) -> DType {
        match self {
            WeightPrecision::F32 => DType::F32,
            WeightPrecision::F16 => DType::F16,
        }
    }
}

/// The largest finite f16 value.
const F16_MAX: f32 = 65_504.0;

/// The model's parameters as burnpack bytes (f32).
pub fn to_burnpack(model: &Model) -> Result<Vec<u8>, MgrError> {
    to_burnpack_as(model, WeightPrecision::F32)
}

/// The model's parameters as burnpack bytes, every float tensor stored at `precision`. A value
/// beyond f16's range (65 504) would become infinite and is refused.
pub fn to_burnpack_as(model: &Model, precision: WeightPrecision) -> Result<Vec<u8>, MgrError> {
    if precision == WeightPrecision::F16 {
        let mut largest: Option<(String, f32)> = None;
        for_each_float_param(model, |path, values| {
            let magnitude = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if largest.as_ref().is_none_or(|(_, l)| magnitude > *l) {
                largest = Some((path.to_string(), magnitude));
            }
            true
        });
        if let Some((path, value)) = largest
            && value > F16_MAX
        {
            return Err(MgrError::data(
                "model weights",
                format!("parameter `{path}` holds {value}, beyond half precision's range"),
            ));
        }
    }
    let mut store =
        BurnpackStore::from_bytes(None).with_to_adapter(FloatCastAdapter::to(precision.dtype()));
    model
        .valid()
        .save_into(&mut store)
        .map_err(|e| MgrError::data("model weights", format!("cannot serialise: {e}")))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| MgrError::data("model weights", format!("cannot serialise: {e}")))?;
    Ok(bytes.to_vec())
}

/// The model's parameters as safetensors bytes, as PyTorch names and lays them out: each tensor
/// under its module path (`refinement.0.attention.query.weight`, `tokenizers.1.e_miss`),
/// `nn.Linear` weights `[out, in]` (Burn keeps `[in, out]`), LayerNorm's gamma and beta as
/// `weight` and `bias`; f32, little-endian. `metadata` goes into the file's header next to
/// Burn's own keys (`format`, `producer`, `version`).
pub fn to_safetensors(model: &Model, metadata: &[(&str, String)]) -> Result<Vec<u8>, MgrError> {
    let fail = |e: String| MgrError::data("model weights", format!("cannot serialise: {e}"));
    let mut store = SafetensorsStore::from_bytes(None).with_to_adapter(BurnToPyTorchAdapter);
    for (key, value) in metadata {
        store = store.metadata(*key, value.clone());
    }
    model
        .valid()
        .save_into(&mut store)
        .map_err(|e| fail(e.to_string()))?;
    store.get_bytes().map_err(|e| fail(e.to_string()))
}

/// How far a model with rounded weights (e.g. loaded from [`WeightPrecision::F16`]) is from the
/// model it was rounded from, over a set of samples under every non-empty absence pattern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrecisionCheck {
    /// (sample, absence pattern) pairs compared.
    pub views: usize,
    /// Of those, how many predict the same class (regression: every one).
    pub same_prediction: usize,
    /// The largest difference of one output (a class probability, or the regression value).
    pub max_output_diff: f32,
}

/// Runs `model` and `rounded` (same config) on the samples `indices` of `split` under each of
/// the 2^M - 1 non-empty absence patterns and compares their outputs.
pub fn compare_outputs(
    model: &Model,
    rounded: &Model,
    split: &DataSplit,
    indices: &[usize],
    device: &Device,
) -> PrecisionCheck {
    let (model, rounded) = (model.valid(), rounded.valid());
    let m = split.modalities.len();
    let c = model.config.n_outputs;
    let mut check = PrecisionCheck {
        views: 0,
        same_prediction: 0,
        max_output_diff: 0.0,
    };
    for bits in 1..(1usize << m) {
        let pattern: Vec<bool> = (0..m).map(|i| bits >> i & 1 == 1).collect();
        for chunk in indices.chunks(EVAL_BATCH) {
            let batch =
                Batch::from_features(split, chunk, vec![pattern.clone(); chunk.len()], device);
            let outputs = |model: &Model| -> Vec<f32> {
                let output = model.forward_shard(&batch).output; // [b, C]
                model
                    .probabilities(output)
                    .into_data()
                    .try_to_vec::<f32>()
                    .expect("f32 outputs")
            };
            let (a, b) = (outputs(&model), outputs(&rounded));
            for (row_a, row_b) in a.chunks(c).zip(b.chunks(c)) {
                check.views += 1;
                let same = match model.config.task {
                    Task::Classification => argmax(row_a) == argmax(row_b),
                    Task::Regression => true,
                };
                check.same_prediction += usize::from(same);
                for (x, y) in row_a.iter().zip(row_b) {
                    check.max_output_diff = check.max_output_diff.max((x - y).abs());
                }
            }
        }
    }
    check
}

/// A model of `config` on `device` with the parameters in `bytes` (burnpack, floats in f32 or
/// f16: converted to f32 on load). Every parameter
/// must be present with its shape and hold only finite values (a NaN weight, from a diverged
/// run or a damaged file, would otherwise turn every prediction into NaN silently); `what`
/// names the source in errors.
pub fn from_burnpack(
    config: &ModelConfig,
    bytes: Vec<u8>,
    device: &Device,
    what: &str,
) -> Result<Model, MgrError> {
    // The weights must be able to hold the model before it is allocated: a config (a damaged or
    // hostile model.json) asking for d_model = 10^6 would otherwise exhaust memory, not error.
    // Two bytes per weight: the smallest a float is stored in (f16).
    let needed = weight_count_lower_bound(config).saturating_mul(2);
    if needed > bytes.len() as u128 {
        return Err(MgrError::data(
            what,
            format!(
                "{} bytes cannot hold this config's encoder and refinement matrices alone ({needed} bytes even in half precision)",
                bytes.len()
            ),
        ));
    }
    let mut model = config.init(device)?;
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)))
        .with_from_adapter(FloatCastAdapter::to(DType::F32));
    let result = model
        .load_from(&mut store)
        .map_err(|e| MgrError::data(what, format!("not weights of this model: {e}")))?;
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(MgrError::data(
            what,
            format!("weights of another model: {result}"),
        ));
    }
    let mut first_non_finite: Option<(String, usize)> = None;
    for_each_float_param(&model, |path, values| {
        let count = values.iter().filter(|v| !v.is_finite()).count();
        if count > 0 {
            first_non_finite = Some((path.to_string(), count));
        }
        count == 0
    });
    if let Some((path, count)) = first_non_finite {
        return Err(MgrError::data(
            what,
            format!("parameter `{path}` holds {count} NaN or infinite values"),
        ));
    }
    Ok(model)
}

/// Loads only the parameters under the module paths `parts` (e.g. `["tokenizers", "encoder"]`)
/// from burnpack `bytes` (another model's weights) into `model`; every other parameter keeps
/// its value. Every parameter of `model` under `parts` must be in `bytes` with its shape.
/// Returns the model and how many tensors were loaded.
pub fn load_parts(
    mut model: Model,
    bytes: Vec<u8>,
    parts: &[&str],
    what: &str,
) -> Result<(Model, usize), MgrError> {
    let pattern = format!("^({})\\.", parts.join("|"));
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)))
        .with_regex(&pattern)
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| MgrError::data(what, format!("not weights of an MGR model: {e}")))?;
    let missing: Vec<&str> = result
        .missing
        .iter()
        .map(|(path, _)| path.as_str())
        .filter(|path| parts.iter().any(|p| path.starts_with(&format!("{p}."))))
        .collect();
    if !result.errors.is_empty() || !missing.is_empty() || result.applied.is_empty() {
        return Err(MgrError::data(
            what,
            format!(
                "cannot initialise {} from it: {} loaded, missing {missing:?}, errors {:?}",
                parts.join(" and "),
                result.applied.len(),
                result.errors
            ),
        ));
    }
    Ok((model, result.applied.len()))
}

/// A lower bound on a model's weight count from its config alone: the encoder layers'
/// attention (Q, K, V, output) and feed-forward matrices, and each refinement layer's
/// attention and Eq. 12 matrices (6 d^2), without biases or any other module.
fn weight_count_lower_bound(config: &ModelConfig) -> u128 {
    let d2 = (config.d_model as u128).saturating_mul(config.d_model as u128);
    let encoder = (4 + 2 * config.ff_mult as u128).saturating_mul(config.n_layers as u128);
    let refinement = 6u128.saturating_mul(config.refine_layers_effective() as u128);
    encoder.saturating_add(refinement).saturating_mul(d2)
}

/// Calls `each` with every float parameter's path (`head.linear.weight`) and values, in the
/// module's order, until it returns false.
fn for_each_float_param(model: &Model, each: impl FnMut(&str, &[f32]) -> bool) {
    let mut visitor = FloatParams {
        path: Vec::new(),
        each,
        done: false,
    };
    model.visit(&mut visitor);
}

/// The visitor behind [`for_each_float_param`].
struct FloatParams<F> {
    path: Vec<String>,
    each: F,
    done: bool,
}

impl<F: FnMut(&str, &[f32]) -> bool> ModuleVisitor for FloatParams<F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.done {
            return;
        }
        let data = param.val().into_data();
        let Ok(values) = data.as_slice::<f32>() else {
            return;
        };
        self.done = !(self.each)(&self.path.join("."), values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModalitySpec;

    fn cfg() -> ModelConfig {
        ModelConfig::new(
            vec![
                ModalitySpec::new("a".into(), 3, 2),
                ModalitySpec::new("b".into(), 2, 4),
            ],
            3,
        )
        .with_d_model(8)
        .with_n_heads(2)
    }

    /// Reads one f32 tensor out of safetensors bytes by hand (8-byte header length, JSON header,
    /// raw little-endian data), so the test checks the format, not a reader.
    fn safetensor(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f32>) {
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        let entry = &header[name];
        assert_eq!(entry["dtype"], "F32", "{name}");
        let shape = entry["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let offsets = entry["data_offsets"].as_array().unwrap();
        let (start, end) = (
            8 + header_len + offsets[0].as_u64().unwrap() as usize,
            8 + header_len + offsets[1].as_u64().unwrap() as usize,
        );
        let values = bytes[start..end]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (shape, values)
    }

    #[test]
    fn safetensors_holds_every_parameter_in_pytorch_names_and_layout() {
        let device = Device::flex();
        let model = cfg().init(&device).unwrap();
        let bytes = to_safetensors(&model, &[("config", "{}".into())]).unwrap();
        // A Linear weight is transposed: Burn's [in, out] is PyTorch's [out, in].
        let burn_weight = model.head.linear.weight.val();
        let [d_in, d_out] = burn_weight.dims();
        let burn_values = burn_weight.into_data().try_to_vec::<f32>().unwrap();
        let (shape, values) = safetensor(&bytes, "head.linear.weight");
        assert_eq!(shape, vec![d_out, d_in]);
        for i in 0..d_in {
            for o in 0..d_out {
                assert_eq!(values[o * d_in + i], burn_values[i * d_out + o]);
            }
        }
        // LayerNorm's gamma is PyTorch's `weight`; a parameter that is no Linear keeps its shape.
        let (shape, _) = safetensor(&bytes, "head.norm.weight");
        assert_eq!(shape, vec![8]);
        let miss = model.tokenizers[1].e_miss.val();
        let (shape, values) = safetensor(&bytes, "tokenizers.1.e_miss");
        assert_eq!(shape, miss.dims().to_vec());
        assert_eq!(values, miss.into_data().try_to_vec::<f32>().unwrap());
        // Every parameter is there, and the metadata too.
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        let tensors = header.as_object().unwrap().len() - 1; // minus __metadata__
        struct Count(usize);
        impl ModuleVisitor for Count {
            fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
                self.0 += 1;
            }
        }
        let mut count = Count(0);
        model.visit(&mut count);
        assert_eq!(tensors, count.0);
        assert_eq!(header["__metadata__"]["config"], "{}");
    }

    /// `--init-from`: the tokenizers (and encoder) come from the other model, everything else
    /// keeps its own initialisation; a model of another size is refused.
    #[test]
    fn load_parts_takes_only_the_named_modules() {
        let device = Device::flex();
        let source = cfg()
            .with_method(crate::Method::Baseline)
            .init(&device)
            .unwrap();
        let target = cfg().init(&device).unwrap();
        let own_head = target.head.linear.weight.val().into_data();
        let own_projection = target.tokenizers[0].projection.weight.val().into_data();
        let (loaded, count) = load_parts(
            target,
            to_burnpack(&source).unwrap(),
            &["tokenizers", "encoder"],
            "base.bpk",
        )
        .unwrap();
        // Per tokenizer: projection weight and bias, position, E_avail, E_miss; and the encoder.
        assert!(count > 2 * 5, "{count}");
        let data = |t: Tensor<2>| t.into_data();
        data(loaded.tokenizers[0].projection.weight.val())
            .assert_eq(&data(source.tokenizers[0].projection.weight.val()), true);
        data(loaded.tokenizers[1].e_miss.val())
            .assert_eq(&data(source.tokenizers[1].e_miss.val()), true);
        data(loaded.head.linear.weight.val()).assert_eq(&own_head, true);
        assert_ne!(
            data(loaded.tokenizers[0].projection.weight.val()),
            own_projection
        );
        let wider = cfg().with_d_model(16).init(&device).unwrap();
        let err = load_parts(
            wider,
            to_burnpack(&source).unwrap(),
            &["encoder"],
            "base.bpk",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("base.bpk"), "{err}");
    }

    /// Half precision: every float rounded to the nearest f16 (so within 2^-11 of its value,
    /// relatively), back as f32 on load, in about half the bytes; a weight f16 cannot hold is
    /// refused by name.
    #[test]
    fn half_precision_rounds_each_weight_to_f16_and_halves_the_file() {
        let device = Device::flex();
        // Wide enough that the weights, not the names and each tensor's alignment, fill the file.
        let config = cfg().with_d_model(64).with_n_heads(4);
        let model = config.init(&device).unwrap();
        let full = to_burnpack(&model).unwrap();
        let half = to_burnpack_as(&model, WeightPrecision::F16).unwrap();
        let ratio = half.len() as f64 / full.len() as f64;
        assert!(
            (0.45..0.55).contains(&ratio),
            "{} bytes in f16 against {} in f32",
            half.len(),
            full.len()
        );
        let back = from_burnpack(&config, half, &device, "m.bpk").unwrap();
        let weights = |m: &Model| -> Vec<f32> {
            m.tokenizers[0]
                .projection
                .weight
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let (original, loaded) = (weights(&model), weights(&back));
        assert_eq!(original.len(), loaded.len());
        let mut changed = 0;
        for (&w, &h) in original.iter().zip(&loaded) {
            // f16 has 10 mantissa bits: above its subnormal range the rounding error is at most
            // half a unit in the last place, 2^-11 of the value.
            assert!(
                (w - h).abs() <= w.abs() * 2f32.powi(-11) + 2f32.powi(-25),
                "{w} -> {h}"
            );
            // And h is an f16 value: 13 low mantissa bits clear (in the normal range).
            if h.abs() >= 2f32.powi(-14) {
                assert_eq!(h.to_bits() & 0x1fff, 0, "{h} is not an f16 value");
            }
            changed += usize::from(w != h);
        }
        assert!(
            changed > original.len() / 2,
            "only {changed} weights rounded"
        );
        // A weight of 1e5 is beyond f16 (largest 65 504): refused, named.
        let mut big = model.clone();
        big.head.linear.weight = big
            .head
            .linear
            .weight
            .map(|w| w.slice_assign([0..1, 0..1], Tensor::full([1, 1], 1e5, &device)));
        let err = to_burnpack_as(&big, WeightPrecision::F16)
            .unwrap_err()
            .to_string();
        assert!(err.contains("head.linear.weight"), "{err}");
        assert!(to_burnpack_as(&big, WeightPrecision::F32).is_ok());
    }

    #[test]
    fn round_trip_keeps_every_parameter_and_bad_bytes_are_errors() {
        let device = Device::flex();
        let model = cfg().init(&device).unwrap();
        let bytes = to_burnpack(&model).unwrap();
        let back = from_burnpack(&cfg(), bytes.clone(), &device, "m.bpk").unwrap();
        let a = model.head.linear.weight.val().into_data();
        back.head
            .linear
            .weight
            .val()
            .into_data()
            .assert_eq(&a, true);
        assert!(
            from_burnpack(&cfg(), bytes[..bytes.len() / 2].to_vec(), &device, "m.bpk").is_err()
        );
        assert!(from_burnpack(&cfg(), b"not a model".to_vec(), &device, "m.bpk").is_err());
        // A NaN weight is named, not loaded.
        let mut poisoned = model.clone();
        poisoned.head.linear.weight = poisoned
            .head
            .linear
            .weight
            .map(|w| w.slice_assign([0..1, 0..1], Tensor::full([1, 1], f32::NAN, &device)));
        let err = from_burnpack(&cfg(), to_burnpack(&poisoned).unwrap(), &device, "m.bpk")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.bpk") && err.contains("head.linear.weight") && err.contains("1 NaN"),
            "{err}"
        );
        // A config far larger than the weights is refused before anything is allocated.
        let huge = cfg().with_d_model(1 << 20).with_n_heads(1);
        let err = from_burnpack(&huge, b"tiny".to_vec(), &device, "m.bpk")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.bpk") && err.contains("cannot hold"),
            "{err}"
        );
        let other = cfg().with_d_model(16);
        let err = from_burnpack(&other, bytes, &device, "m.bpk")
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.bpk"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Random bytes, and real weights cut short or with bytes overwritten: an error naming
        /// the source or a model, never a panic.
        #[test]
        fn any_bytes_are_refused_or_loaded_without_a_panic(
            random in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            cut in proptest::prelude::any::<usize>(),
            edits in proptest::collection::vec(
                (proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..8),
        ) {
            let device = Device::flex();
            let valid = to_burnpack(&cfg().init(&device).unwrap()).unwrap();
            let truncated = valid[..cut % valid.len()].to_vec();
            let mut edited = valid.clone();
            for (at, byte) in edits {
                // Most edits land in the header, where a parser has the most to check.
                let at = if at % 2 == 0 { at % 256.min(edited.len()) } else { at % edited.len() };
                edited[at] = byte;
            }
            for (name, bytes) in [("random", random), ("truncated", truncated), ("edited", edited)] {
                if let Err(e) = from_burnpack(&cfg(), bytes, &device, name) {
                    proptest::prop_assert!(e.to_string().contains(name), "{e}");
                }
            }
        }
    }
}
