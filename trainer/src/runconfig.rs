//! The full resolved configuration of a run: defaults, then `--config FILE.toml`, then the
//! command-line flags, then `--set key=value`. Unknown keys are errors, never ignored.

use anyhow::{Context, Result, anyhow, bail};
use mgr::absence::{AbsenceConfig, AbsenceMask, SplitKind};
use mgr::synthetic::SyntheticConfig;
use mgr::train::TrainConfig;
use mgr::{ModalitySpec, ModelConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The absence setting of a run, with modality names rather than indices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbsenceSettings {
    /// Share of samples missing at least one modality, in [0, 1].
    pub kappa: f64,
    /// Seed of the masks (each split draws its own from it).
    pub seed: u64,
    /// Modalities that may be missing (empty: all).
    pub missable: Vec<String>,
    /// At most this many missing at once (0: up to M - 1).
    pub max_missing: usize,
}

impl AbsenceSettings {
    /// The model crate's absence config for these modalities.
    pub fn to_config(&self, modalities: &[ModalitySpec]) -> Result<AbsenceConfig> {
        let missable = self
            .missable
            .iter()
            .map(|name| {
                modalities
                    .iter()
                    .position(|m| &m.name == name)
                    .ok_or_else(|| {
                        let names: Vec<&str> = modalities.iter().map(|m| m.name.as_str()).collect();
                        anyhow!(
                            "absence type: unknown modality `{name}` (this dataset has {})",
                            names.join(", ")
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let max_missing = if self.max_missing == 0 {
            usize::MAX
        } else {
            self.max_missing
        };
        Ok(AbsenceConfig {
            kappa: self.kappa,
            missable,
            max_missing,
        })
    }

    /// The mask of one split of `n` samples under these settings.
    pub fn mask(
        &self,
        modalities: &[ModalitySpec],
        n: usize,
        split: SplitKind,
    ) -> Result<AbsenceMask> {
        let names: Vec<String> = modalities.iter().map(|m| m.name.clone()).collect();
        Ok(AbsenceMask::generate(
            &self.to_config(modalities)?,
            &names,
            n,
            self.seed,
            split,
        )?)
    }
}

/// Everything that defines a run; written to `config.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Dataset name (see [`crate::datasets::DATASETS`]).
    pub dataset: String,
    /// Folder or file of the dataset (not used by `synthetic`).
    pub data_dir: Option<PathBuf>,
    /// Use only the first N samples of each split (0: all); for quick experiments and tests.
    #[serde(default)]
    pub limit: usize,
    /// Start from another run's tokenizers and multimodal encoder (its best weights) instead
    /// of random ones, then train everything (issue 11, lead 6: the paper fine-tunes a
    /// pretrained backbone). None: from scratch.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// What of the model loaded from `init_from` (the backbone: tokenizers' projections and
    /// position embeddings, the multimodal encoder) is left untrained: `backbone` is the
    /// paper's setting (a frozen foundation model, each method training only what it adds),
    /// `none` fine-tunes everything. `backbone` needs `init_from`.
    #[serde(default)]
    pub freeze: mgr::Freeze,
    /// The absence protocol.
    pub absence: AbsenceSettings,
    /// The model (modalities and outputs are filled from the dataset).
    pub model: ModelConfig,
    /// Optimisation.
    pub train: TrainConfig,
    /// The synthetic dataset's settings (used when `dataset = "synthetic"`).
    pub synthetic: SyntheticConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            dataset: "synthetic".into(),
            data_dir: None,
            limit: 0,
            init_from: None,
            freeze: mgr::Freeze::None,
            absence: AbsenceSettings {
                kappa: 0.7,
                seed: 0,
                missable: Vec::new(),
                max_missing: 0,
            },
            model: ModelConfig::new(Vec::new(), 0),
            train: TrainConfig::new(),
            synthetic: SyntheticConfig::new(),
        }
    }
}

const SECTIONS: [&str; 4] = ["model", "train", "absence", "synthetic"];

/// Sets `key` (dotted path, or a bare field name searched in the sections) to `value`.
pub fn set_key(root: &mut Value, key: &str, raw: &str) -> Result<()> {
    let value: Value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let path: Vec<String> = if key.contains('.') {
        key.split('.').map(str::to_string).collect()
    } else if root.get(key).is_some() {
        vec![key.to_string()]
    } else {
        let hits: Vec<&str> = SECTIONS
            .iter()
            .copied()
            .filter(|s| root[*s].get(key).is_some())
            .collect();
        match hits.as_slice() {
            [one] => vec![one.to_string(), key.to_string()],
            [] => bail!(
                "config key `{key}` does not exist (try `mgr train --help`, or a dotted path such as model.rho)"
            ),
            many => bail!(
                "config key `{key}` is ambiguous: {}",
                many.iter()
                    .map(|s| format!("{s}.{key}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    };
    let mut node = root;
    for (i, part) in path.iter().enumerate() {
        let obj = node
            .as_object_mut()
            .ok_or_else(|| anyhow!("config key `{key}`: `{part}` is not inside a section"))?;
        if !obj.contains_key(part) {
            bail!("config key `{key}` does not exist");
        }
        if i + 1 == path.len() {
            obj.insert(part.clone(), value);
            return Ok(());
        }
        node = obj.get_mut(part).expect("checked");
    }
    unreachable!("path is non-empty")
}

/// Merges a TOML document into the defaults; unknown keys are errors naming the file.
pub fn merge_toml(root: &mut Value, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read config {}", file.display()))?;
    let doc: toml::Value =
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", file.display()))?;
    let doc = serde_json::to_value(doc)?;
    fn walk(node: &mut Value, doc: &Map<String, Value>, prefix: &str, file: &Path) -> Result<()> {
        for (k, v) in doc {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let Some(slot) = node.get_mut(k) else {
                bail!("{}: config key `{key}` does not exist", file.display());
            };
            match (v, slot.is_object()) {
                (Value::Object(inner), true) => walk(slot, inner, &key, file)?,
                _ => *slot = v.clone(),
            }
        }
        Ok(())
    }
    let doc = doc
        .as_object()
        .ok_or_else(|| anyhow!("{}: not a TOML table", file.display()))?;
    walk(root, doc, "", file)
}

/// The `--dataset` values the command line accepts ([`crate::datasets::DATASETS`]), listed in
/// the help from there.
pub fn dataset_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(crate::datasets::names())
}

/// The `--freeze` values the command line accepts (every [`mgr::Freeze`]).
pub fn freeze_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(mgr::Freeze::ALL.map(mgr::Freeze::name))
}

/// The `--method` values the command line accepts (every [`mgr::Method`]), listed in the help
/// from there.
pub fn method_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(mgr::Method::ALL.map(mgr::Method::name))
}

/// The `--ranking` values the command line accepts (every [`mgr::SplitRanking`]).
pub fn ranking_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(mgr::SplitRanking::ALL.map(mgr::SplitRanking::name))
}

/// Refuses a ranking that reads per-token ground truth on a dataset without one, naming both.
pub fn check_ranking(ranking: mgr::SplitRanking, dataset: &str) -> Result<()> {
    if ranking.needs_truth() && !crate::datasets::find(dataset)?.noise_truth {
        bail!(
            "ranking `{}` splits by the data's per-token ground truth (noise and conflicting tokens), which only the synthetic data has: dataset `{dataset}` has none. Use learned, random or inverted.",
            ranking.name()
        );
    }
    Ok(())
}

/// Defaults, then `--config`, then the flags, then `--set`.
pub fn resolve_train_config(a: &crate::TrainArgs) -> Result<RunConfig> {
    let mut v = serde_json::to_value(RunConfig::default())?;
    if let Some(file) = &a.config {
        merge_toml(&mut v, file)?;
    }
    let mut flags: Vec<(&str, String)> = Vec::new();
    if let Some(d) = &a.dataset {
        flags.push(("dataset", serde_json::to_string(d)?));
    }
    if let Some(d) = &a.data_dir {
        flags.push(("data_dir", serde_json::to_string(d)?));
    }
    if let Some(run) = a.backbone.as_ref().or(a.init_from.as_ref()) {
        flags.push(("init_from", serde_json::to_string(run)?));
    }
    if let Some(f) = &a.freeze {
        flags.push(("freeze", serde_json::to_string(&f.parse::<mgr::Freeze>()?)?));
    }
    if let Some(m) = &a.method {
        m.parse::<mgr::Method>()?;
        flags.push(("model.method", serde_json::to_string(m)?));
    }
    if let Some(k) = a.kappa {
        AbsenceConfig::check_kappa(k).context("--kappa")?;
        flags.push(("absence.kappa", k.to_string()));
    }
    if let Some(s) = a.absence_seed {
        flags.push(("absence.seed", s.to_string()));
    }
    if let Some(s) = a.seed {
        flags.push(("train.seed", s.to_string()));
    }
    if let Some(e) = a.epochs {
        flags.push(("train.epochs", e.to_string()));
    }
    for (k, raw) in flags {
        set_key(&mut v, k, &raw)?;
    }
    apply_sets(&mut v, &a.sets)?;
    finish(v)
}

/// Applies `--set KEY=VALUE` overrides, in order.
pub fn apply_sets(root: &mut Value, sets: &[String]) -> Result<()> {
    for s in sets {
        let (k, raw) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("--set `{s}`: expected KEY=VALUE"))?;
        set_key(root, k.trim(), raw.trim())?;
    }
    Ok(())
}

/// Deserialises the merged value, naming the field that does not fit.
pub fn finish(root: Value) -> Result<RunConfig> {
    let rc: RunConfig = serde_json::from_value(root).map_err(|e| anyhow!("invalid config: {e}"))?;
    crate::datasets::find(&rc.dataset)?;
    check_ranking(rc.model.refinement.ranking, &rc.dataset)?;
    mgr::absence::AbsenceConfig::check_kappa(rc.absence.kappa)?;
    if !mgr::ModelConfig::rho_is_valid(rc.model.refinement.rho) {
        bail!("rho {} is outside (0, 1]", rc.model.refinement.rho);
    }
    rc.train.validate()?;
    if rc.freeze == mgr::Freeze::Backbone && rc.init_from.is_none() {
        bail!(
            "freeze = backbone needs a pretrained backbone to freeze: add --backbone RUN (a run of `mgr pretrain` or `mgr train`)"
        );
    }
    Ok(rc)
}

/// Loads a run's `config.json`.
pub fn load(run: &Path) -> Result<RunConfig> {
    let path = run.join("config.json");
    if !path.is_file() {
        bail!("{} is not a run folder (no config.json)", run.display());
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut value: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a run config", path.display()))?;
    backfill(&mut value);
    serde_json::from_value(value).with_context(|| format!("{}: not a run config", path.display()))
}

/// Fields added after runs were first written whose default is exactly what older runs did
/// (training-only options): an older `config.json` without them gets the default. A field whose
/// default changed the computation (the refinement readings) is not here: an old run lacking it
/// must not load as a different model.
const BACKFILLED: [(&str, &str); 4] = [
    ("train", "schedule"),
    ("train", "warmup_frac"),
    ("train", "divergence_factor"),
    // A model field, but it changes only L_div's gradient, not the forward pass; its default
    // (false) is what every run before it trained with.
    ("model", "div_detach_shared"),
];

/// Fills the [`BACKFILLED`] fields a saved config lacks with today's defaults.
fn backfill(saved: &mut Value) {
    let Ok(defaults) = serde_json::to_value(RunConfig::default()) else {
        return;
    };
    for (section, field) in BACKFILLED {
        if let (Some(Value::Object(fields)), Some(default)) =
            (saved.get_mut(section), defaults[section].get(field))
        {
            fields
                .entry(field.to_string())
                .or_insert_with(|| default.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_config_without_training_only_fields_loads_with_their_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = serde_json::to_value(RunConfig::default()).unwrap();
        v["train"]["lr"] = serde_json::json!(0.5);
        for (section, field) in BACKFILLED {
            v[section].as_object_mut().unwrap().remove(field);
        }
        std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
        let rc = load(dir.path()).unwrap();
        assert_eq!(rc.train.lr, 0.5, "saved values stay");
        assert_eq!(
            rc.train.divergence_factor,
            TrainConfig::new().divergence_factor
        );
        assert_eq!(rc.train.schedule, mgr::train::LrSchedule::Constant);
        assert!(
            !rc.model.div_detach_shared,
            "what every older run trained with"
        );
        // A field that changes the model is not filled in: such a config is refused.
        v["model"]
            .as_object_mut()
            .unwrap()
            .remove("refine_residual");
        std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
        let err = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(err.contains("refine_residual"), "{err}");
    }

    #[test]
    fn set_finds_bare_and_dotted_keys_and_rejects_unknown_ones() {
        let mut v = serde_json::to_value(RunConfig::default()).unwrap();
        set_key(&mut v, "rho", "0.25").unwrap();
        set_key(&mut v, "train.epochs", "3").unwrap();
        set_key(&mut v, "method", "msps").unwrap();
        let rc = finish(v.clone()).unwrap();
        assert_eq!(rc.model.refinement.rho, 0.25);
        assert_eq!(rc.train.epochs, 3);
        assert_eq!(rc.model.method, mgr::Method::Msps);
        let err = set_key(&mut v, "rhoo", "1").unwrap_err().to_string();
        assert!(
            err.contains("rhoo") && err.contains("does not exist"),
            "{err}"
        );
        set_key(&mut v, "method", "nope").unwrap();
        assert!(finish(v).is_err());
    }

    #[test]
    fn toml_merge_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "[model]\nrho = 0.3\n[train]\nepochs = 2\n").unwrap();
        let mut v = serde_json::to_value(RunConfig::default()).unwrap();
        merge_toml(&mut v, &good).unwrap();
        assert_eq!(finish(v.clone()).unwrap().model.refinement.rho, 0.3);
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[model]\nrhoo = 0.3\n").unwrap();
        let err = merge_toml(&mut v, &bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.toml") && err.contains("model.rhoo"),
            "{err}"
        );
    }
}
