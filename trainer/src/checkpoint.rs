//! Checkpoints of a run: weights (burnpack), optimizer state and the epoch log, each written
//! to a temp file and renamed, the state file last, so a kill at any moment leaves the previous
//! checkpoint usable.

use anyhow::{Context, Result, bail};
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Bytes, Device};
use mgr::absence::AbsenceMask;
use mgr::metrics::Metrics;
use mgr::persist::{from_burnpack, to_burnpack};
use mgr::ranking_quality::RankingReport;
use mgr::train::Evaluation;
use mgr::{Model, ModelConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::fsutil::{Lock, LockKind, is_temp_name, remove_stale_temps, try_lock, write_atomic};
use crate::runconfig::RunConfig;

/// One row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean total training loss (Eq. 13).
    pub train_loss: f64,
    /// Mean task loss.
    pub train_task_loss: f64,
    /// Mean L_div (unweighted).
    pub l_div: f64,
    /// Validation task loss.
    pub valid_loss: f64,
    /// Validation accuracy.
    pub valid_accuracy: f64,
    /// Validation F1.
    pub valid_f1: f64,
    /// Seconds spent on this epoch.
    pub seconds: f64,
}

/// Test metrics of one model under one absence setting, as `results.json` and `mgr eval` both
/// write them (flattened into each).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestMetrics {
    /// Test accuracy over every test sample.
    pub accuracy: f64,
    /// Test F1 over every test sample.
    pub f1: f64,
    /// Test F1 weighted by class support (classification; absent in older results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighted_f1: Option<f64>,
    /// Test samples.
    pub n_test: usize,
    /// Test mean absolute error (regression only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Test Pearson correlation (regression only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corr: Option<f64>,
    /// Test metrics per absence pattern (the available modalities joined by '+').
    pub per_pattern: BTreeMap<String, Metrics>,
}

impl TestMetrics {
    /// The metrics of an evaluation; the regression metrics both or neither, as they come.
    pub fn of(test: &Evaluation) -> Self {
        let (mae, corr) = test.overall.mae.zip(test.overall.corr).unzip();
        Self {
            accuracy: test.overall.accuracy,
            f1: test.overall.f1,
            weighted_f1: test.overall.weighted_f1,
            n_test: test.overall.n,
            mae,
            corr,
            per_pattern: test.per_pattern.clone(),
        }
    }
}

/// `results.json` of a finished run: what it was, its test metrics (overall and per absence
/// pattern) with the model of its best validation epoch, and the ranking report where its
/// method and dataset have one. Read and written only through [`RunPaths`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// Dataset name.
    pub dataset: String,
    /// Method name.
    pub method: String,
    /// kappa of the absence masks.
    pub kappa: f64,
    /// Seed of the absence masks.
    pub absence_seed: u64,
    /// Seed of initialisation and batch order.
    pub seed: u64,
    /// Test metrics of the best validation epoch's weights.
    #[serde(flatten)]
    pub test: TestMetrics,
    /// Mean test task loss.
    pub test_loss: f64,
    /// The epoch (1-based) whose weights were tested.
    pub best_epoch: usize,
    /// Its validation accuracy.
    pub best_valid_accuracy: f64,
    /// Epochs trained.
    pub epochs: usize,
    /// The device it trained on, as `mgr` names it.
    pub device: String,
    /// Wall-clock seconds of training.
    pub train_seconds: f64,
    /// The pretrained backbone the run started from (`--backbone` / `--init-from`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone: Option<String>,
    /// What it left frozen (`--freeze`).
    #[serde(default)]
    pub freeze: mgr::Freeze,
    /// Scalar parameters the optimiser trained (absent in results written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainable_params: Option<usize>,
    /// Scalar parameters left as loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_params: Option<usize>,
    /// The ranking against the ground-truth noise tokens (MGR methods on synthetic data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranking: Option<RankingReport>,
}

/// Where training stands; `checkpoint/state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Epoch (1-based) of the best validation accuracy so far.
    pub best_epoch: usize,
    /// That accuracy.
    pub best_valid_accuracy: f64,
    /// All epochs so far.
    pub rows: Vec<EpochRow>,
}

/// What a run folder holds ([`RunPaths::state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// No folder, or one with nothing of a run in it (empty, or only a killed writer's temp
    /// files): a run starts there.
    Empty,
    /// `config.json` (perhaps masks and a first epoch's files) but no checkpoint: killed before
    /// its first epoch was saved. It starts afresh: the same seeds train the same run.
    Created,
    /// A checkpoint after `epochs_done` epochs and no results: it resumes there.
    Checkpointed {
        /// Epochs the checkpoint holds.
        epochs_done: usize,
    },
    /// `results.json`: finished after `epochs_done` epochs; nothing is redone.
    Finished {
        /// Epochs it trained.
        epochs_done: usize,
    },
}

impl RunState {
    /// Whether a run starts there from its first epoch (empty, or created and never
    /// checkpointed).
    pub fn is_fresh(self) -> bool {
        matches!(self, Self::Empty | Self::Created)
    }
}

/// Paths inside a run folder.
pub struct RunPaths {
    /// The run folder.
    pub root: PathBuf,
}

impl RunPaths {
    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// `best.bpk`: the weights of the best epoch by validation accuracy.
    pub fn best(&self) -> PathBuf {
        self.root.join("best.bpk")
    }
    /// `results.json`: written last; its presence marks a finished run.
    pub fn results(&self) -> PathBuf {
        self.root.join("results.json")
    }
    /// `metrics.csv`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }
    /// The run's `results.json`; errors name the file.
    pub fn read_results(&self) -> Result<RunResults> {
        let path = self.results();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a run's results", path.display()))
    }
    /// Writes `results.json` (atomically), its keys in sorted order at every level.
    pub fn write_results(&self, results: &RunResults) -> Result<()> {
        // Through a Value, whose maps sort their keys: the file reads the same whatever the
        // order of the struct's fields.
        let sorted = serde_json::to_value(results)?;
        write_atomic(
            &self.results(),
            serde_json::to_string_pretty(&sorted)?.as_bytes(),
        )
    }
    /// The run's `metrics.csv` as epoch rows; errors name the file and the line.
    pub fn read_metrics(&self) -> Result<Vec<EpochRow>> {
        let path = self.metrics();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        parse_metrics_csv(&text).with_context(|| format!("{}", path.display()))
    }
    /// Writes `metrics.csv` (atomically) from the epoch log.
    pub fn write_metrics(&self, rows: &[EpochRow]) -> Result<()> {
        write_atomic(&self.metrics(), metrics_csv(rows).as_bytes())
    }
    /// `masks/<split>.csv`.
    pub fn mask(&self, split: &str) -> PathBuf {
        self.root.join("masks").join(format!("{split}.csv"))
    }
    /// The absence mask the run saved for `split`; errors name the file.
    pub fn read_mask(&self, split: &str) -> Result<AbsenceMask> {
        let path = self.mask(split);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(AbsenceMask::from_csv(&text, &path.display().to_string())?)
    }
    /// `.lock`: the advisory lock of the process training the run (see [`RunPaths::lock`]).
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(".lock")
    }
    /// Takes the run's lock, creating its folder: one process trains a run at a time (two
    /// protocols on one `--out`, a job array task started twice, a `mgr train --resume` beside
    /// a protocol). Also removes the temp files a killed writer left, which only a holder may.
    pub fn lock(&self) -> Result<Lock> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create {}", self.root.display()))?;
        let lock = try_lock(
            &self.lock_file(),
            LockKind::Exclusive,
            &format!("the run {}", self.root.display()),
        )?;
        for dir in [
            self.root.clone(),
            self.checkpoint_dir(),
            self.root.join("masks"),
        ] {
            remove_stale_temps(&dir);
        }
        Ok(lock)
    }
    /// What the folder holds ([`RunState`]), from its files alone; each is written by rename
    /// (config first, then each epoch's checkpoint with its state file last, `results.json`
    /// last of all), so a kill at any moment leaves one of the states. A folder that is none of
    /// them (files but no `config.json`, a file that does not parse) is an error naming the
    /// path and what is wrong; nothing is removed.
    pub fn state(&self) -> Result<RunState> {
        let root = &self.root;
        if !root.exists() {
            return Ok(RunState::Empty);
        }
        if !root.is_dir() {
            bail!("{} is a file, not a run folder", root.display());
        }
        if !self.config().exists() {
            let entries = std::fs::read_dir(root)
                .with_context(|| format!("cannot read {}", root.display()))?;
            let foreign: Vec<String> = entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| !is_temp_name(name) && name != ".lock")
                .collect();
            if let Some(first) = foreign.first() {
                bail!(
                    "{} holds {} entr{} ({first}{}) but no config.json: not a run folder of mgr; \
                     nothing was changed (move them, or choose another --out)",
                    root.display(),
                    foreign.len(),
                    if foreign.len() == 1 { "y" } else { "ies" },
                    if foreign.len() > 1 { ", ..." } else { "" }
                );
            }
            return Ok(RunState::Empty);
        }
        crate::runconfig::load(root)?;
        if self.results().exists() {
            let results = self.read_results()?;
            return Ok(RunState::Finished {
                epochs_done: results.epochs,
            });
        }
        if !self.state_file().exists() {
            return Ok(RunState::Created);
        }
        let state = self.read_state()?;
        Ok(RunState::Checkpointed {
            epochs_done: state.epochs_done,
        })
    }
    fn read_state(&self) -> Result<TrainState> {
        let path = self.state_file();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a checkpoint state", path.display()))
    }
    fn checkpoint_dir(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    fn state_file(&self) -> PathBuf {
        self.checkpoint_dir().join("state.json")
    }
    fn weights(&self, epoch: usize) -> PathBuf {
        self.checkpoint_dir().join(format!("epoch-{epoch}.bpk"))
    }
    fn optimizer(&self, epoch: usize) -> PathBuf {
        self.checkpoint_dir().join(format!("optimizer-{epoch}.bin"))
    }
}

/// Saves `model` as burnpack at `path` (atomically).
pub fn save_model(model: &Model, path: &Path) -> Result<()> {
    write_atomic(path, &to_burnpack(model)?)
}

/// Loads weights from `path` into a model of `rc`'s model config on `device`, drawing the random
/// ranking's scores from the run's training seed (as the model it trained was).
pub fn load_model(rc: &RunConfig, path: &Path, device: &Device) -> Result<Model> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read weights {}", path.display()))?;
    let model = from_burnpack(&rc.model, bytes, device, &path.display().to_string())?;
    Ok(model.with_ranking_seed(rc.train.seed))
}

/// Writes the epoch's weights and optimizer state, then the state file, then removes the
/// previous epoch's files.
pub fn save(
    paths: &RunPaths,
    model: &Model,
    optimizer: &ModuleOptimizer,
    state: &TrainState,
) -> Result<()> {
    let epoch = state.epochs_done;
    save_model(model, &paths.weights(epoch))?;
    let record = optimizer
        .to_record()
        .into_bytes()
        .map_err(|e| anyhow::anyhow!("cannot serialise the optimizer state: {e:?}"))?;
    write_atomic(&paths.optimizer(epoch), &record)?;
    write_atomic(
        &paths.state_file(),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    if epoch > 0 {
        let _ = std::fs::remove_file(paths.weights(epoch - 1));
        let _ = std::fs::remove_file(paths.optimizer(epoch - 1));
    }
    Ok(())
}

/// Loads the last checkpoint: state, weights and optimizer.
pub fn load(
    paths: &RunPaths,
    rc: &RunConfig,
    optimizer: ModuleOptimizer,
    device: &Device,
) -> Result<(TrainState, Model, ModuleOptimizer)> {
    if !paths.state_file().is_file() {
        bail!(
            "{} has no checkpoint to resume from ({} is missing)",
            paths.root.display(),
            paths.state_file().display()
        );
    }
    let state = paths.read_state()?;
    let model = load_model(rc, &paths.weights(state.epochs_done), device)?;
    let opt_path = paths.optimizer(state.epochs_done);
    let bytes =
        std::fs::read(&opt_path).with_context(|| format!("cannot read {}", opt_path.display()))?;
    let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| anyhow::anyhow!("{}: not an optimizer state: {e:?}", opt_path.display()))?;
    Ok((state, model, optimizer.load_record(record)))
}

/// The header of `metrics.csv`.
const METRICS_HEADER: &str =
    "epoch,train_loss,train_task_loss,l_div,valid_loss,valid_accuracy,valid_f1,seconds";

/// `metrics.csv` from the epoch log.
fn metrics_csv(rows: &[EpochRow]) -> String {
    let mut out = format!("{METRICS_HEADER}\n");
    for r in rows {
        out.push_str(&format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.3}\n",
            r.epoch,
            r.train_loss,
            r.train_task_loss,
            r.l_div,
            r.valid_loss,
            r.valid_accuracy,
            r.valid_f1,
            r.seconds
        ));
    }
    out
}

/// Epoch rows from the text of `metrics.csv` (as [`metrics_csv`] writes it).
fn parse_metrics_csv(text: &str) -> Result<Vec<EpochRow>> {
    let mut lines = text.lines();
    if lines.next() != Some(METRICS_HEADER) {
        bail!("not a metrics.csv: its first line is not `{METRICS_HEADER}`");
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            let line_no = i + 2;
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() != 8 {
                bail!("line {line_no}: {} fields, expected 8", fields.len());
            }
            let number = |k: usize| -> Result<f64> {
                fields[k]
                    .parse()
                    .with_context(|| format!("line {line_no}: `{}` is not a number", fields[k]))
            };
            Ok(EpochRow {
                epoch: fields[0]
                    .parse()
                    .with_context(|| format!("line {line_no}: `{}` is not an epoch", fields[0]))?,
                train_loss: number(1)?,
                train_task_loss: number(2)?,
                l_div: number(3)?,
                valid_loss: number(4)?,
                valid_accuracy: number(5)?,
                valid_f1: number(6)?,
                seconds: number(7)?,
            })
        })
        .collect()
}

/// A run folder with a trained model: its config and paths (an error when `best.bpk` is
/// missing).
pub fn finished_run(run: &Path) -> Result<(RunConfig, RunPaths)> {
    let rc = crate::runconfig::load(run)?;
    let paths = RunPaths {
        root: run.to_path_buf(),
    };
    if !paths.best().is_file() {
        bail!(
            "{} has no trained model ({} is missing)",
            run.display(),
            paths.best().display()
        );
    }
    Ok((rc, paths))
}

/// The weights `--init-from RUN` starts a model from: RUN's best weights, and where they came from.
pub struct InitSource {
    /// `best.bpk`'s bytes.
    bytes: Vec<u8>,
    /// Its path, for messages.
    pub path: String,
}

/// `--init-from RUN`, checked before anything is written: RUN must be a finished run with the
/// same modalities and encoder sizes as `config`.
pub fn init_source(config: &ModelConfig, run: &Path) -> Result<InitSource> {
    let (source, paths) = finished_run(run).context("--init-from")?;
    let (a, b) = (&source.model, config);
    for (field, same) in [
        ("modalities", a.modalities == b.modalities),
        ("d_model", a.d_model == b.d_model),
        ("n_heads", a.n_heads == b.n_heads),
        ("n_layers", a.n_layers == b.n_layers),
        ("ff_mult", a.ff_mult == b.ff_mult),
    ] {
        if !same {
            bail!(
                "--init-from {}: its model has another {field}; the tokenizers and encoder must match",
                run.display()
            );
        }
    }
    let best = paths.best();
    let bytes = std::fs::read(&best)
        .with_context(|| format!("--init-from: cannot read {}", best.display()))?;
    Ok(InitSource {
        bytes,
        path: best.display().to_string(),
    })
}

impl InitSource {
    /// `model` with these tokenizers and multimodal encoder; every other module keeps its
    /// initialisation. Returns the model and how many tensors were loaded.
    pub fn apply(self, model: Model) -> Result<(Model, usize)> {
        Ok(mgr::persist::load_parts(
            model,
            self.bytes,
            &["tokenizers", "encoder"],
            &self.path,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, valid_accuracy: f64) -> EpochRow {
        EpochRow {
            epoch,
            train_loss: 1.25,
            train_task_loss: 1.0,
            l_div: 2.5,
            valid_loss: 0.75,
            valid_accuracy,
            valid_f1: valid_accuracy / 2.0,
            seconds: 12.5,
        }
    }

    #[test]
    fn metrics_csv_round_trips_and_names_the_bad_line() {
        let rows = vec![row(1, 0.5), row(2, 0.625)];
        let text = metrics_csv(&rows);
        assert_eq!(
            text.lines().nth(2),
            Some("2,1.250000,1.000000,2.500000,0.750000,0.625000,0.312500,12.500")
        );
        assert_eq!(parse_metrics_csv(&text).unwrap(), rows);
        let broken = text.replace("0.625000", "x");
        let err = parse_metrics_csv(&broken).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("`x`"), "{err}");
        let short = format!("{METRICS_HEADER}\n1,2,3\n");
        assert!(
            parse_metrics_csv(&short)
                .unwrap_err()
                .to_string()
                .contains("3 fields")
        );
        assert!(parse_metrics_csv("epoch,loss\n").is_err());
    }

    #[test]
    fn results_are_written_with_sorted_keys_and_read_back() {
        let dir = std::env::temp_dir().join(format!("mgr-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = RunPaths { root: dir.clone() };
        let pattern = Metrics {
            accuracy: 0.5,
            f1: 0.25,
            n: 4,
            weighted_f1: Some(0.3),
            mae: None,
            corr: None,
        };
        let results = RunResults {
            dataset: "synthetic".into(),
            method: "mgr".into(),
            kappa: 0.7,
            absence_seed: 1,
            seed: 2,
            test: TestMetrics {
                accuracy: 0.75,
                f1: 0.5,
                weighted_f1: Some(0.55),
                n_test: 8,
                mae: None,
                corr: None,
                per_pattern: BTreeMap::from([("vision".to_string(), pattern)]),
            },
            test_loss: 0.9,
            best_epoch: 3,
            best_valid_accuracy: 0.8,
            epochs: 4,
            device: "flex".into(),
            train_seconds: 1.5,
            backbone: Some("runs/base/best.bpk".into()),
            freeze: mgr::Freeze::Backbone,
            trainable_params: Some(1200),
            frozen_params: Some(34000),
            ranking: None,
        };
        paths.write_results(&results).unwrap();
        let text = std::fs::read_to_string(paths.results()).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("  \"") && !l.starts_with("    "))
            .map(|l| l.trim().split('"').nth(1).unwrap())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(!text.contains("\"mae\"") && !text.contains("\"ranking\""));
        assert_eq!(paths.read_results().unwrap(), results);
        std::fs::write(paths.results(), "{\"accuracy\": 1}").unwrap();
        let err = format!("{:#}", paths.read_results().unwrap_err());
        assert!(
            err.contains("results.json") && err.contains("not a run's results"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Each state a kill can leave a run folder in, read from the files alone, and the folders
    /// that are not a run's refused with the path and the problem, left as they were.
    #[test]
    fn a_run_folder_says_what_state_it_is_in() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = RunPaths {
            root: tmp.path().join("run"),
        };
        assert_eq!(paths.state().unwrap(), RunState::Empty, "no folder");
        std::fs::create_dir_all(&paths.root).unwrap();
        std::fs::write(paths.root.join(".config.tmp-77.json"), "{\"half").unwrap();
        std::fs::write(paths.lock_file(), "").unwrap();
        assert_eq!(
            paths.state().unwrap(),
            RunState::Empty,
            "a killed writer's temp file and the lock are not a run"
        );
        let config = serde_json::to_string(&RunConfig::default()).unwrap();
        std::fs::write(paths.config(), &config).unwrap();
        std::fs::create_dir_all(paths.root.join("masks")).unwrap();
        assert_eq!(paths.state().unwrap(), RunState::Created);
        let state = TrainState {
            epochs_done: 2,
            ..TrainState::default()
        };
        write_atomic(
            &paths.state_file(),
            serde_json::to_string(&state).unwrap().as_bytes(),
        )
        .unwrap();
        assert_eq!(
            paths.state().unwrap(),
            RunState::Checkpointed { epochs_done: 2 }
        );
        let results = serde_json::json!({
            "dataset": "synthetic", "method": "mgr", "kappa": 0.7, "absence_seed": 0, "seed": 0,
            "accuracy": 0.5, "f1": 0.5, "n_test": 4, "per_pattern": {}, "test_loss": 1.0,
            "best_epoch": 2, "best_valid_accuracy": 0.5, "epochs": 3, "device": "flex",
            "train_seconds": 1.0
        });
        std::fs::write(paths.results(), results.to_string()).unwrap();
        assert_eq!(
            paths.state().unwrap(),
            RunState::Finished { epochs_done: 3 }
        );

        // Not a run's: each refused, naming the file, and nothing removed.
        std::fs::write(paths.results(), "{").unwrap();
        let err = format!("{:#}", paths.state().unwrap_err());
        assert!(err.contains("results.json"), "{err}");
        std::fs::remove_file(paths.results()).unwrap();
        std::fs::write(paths.state_file(), "[1, 2]").unwrap();
        let err = format!("{:#}", paths.state().unwrap_err());
        assert!(
            err.contains("state.json") && err.contains("not a checkpoint state"),
            "{err}"
        );
        std::fs::write(paths.config(), "{\"model\": 1}").unwrap();
        let err = format!("{:#}", paths.state().unwrap_err());
        assert!(
            err.contains("config.json") && err.contains("not a run config"),
            "{err}"
        );
        std::fs::remove_file(paths.config()).unwrap();
        let err = format!("{:#}", paths.state().unwrap_err());
        assert!(
            err.contains("no config.json") && err.contains("not a run folder of mgr"),
            "{err}"
        );
        assert!(paths.state_file().exists() && paths.root.join("masks").exists());
        let file = RunPaths {
            root: tmp.path().join("notes.txt"),
        };
        std::fs::write(&file.root, "mine").unwrap();
        let err = format!("{:#}", file.state().unwrap_err());
        assert!(
            err.contains("notes.txt") && err.contains("is a file"),
            "{err}"
        );
    }

    #[test]
    fn a_run_folder_has_one_holder_and_its_lock_sweeps_killed_writers_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = RunPaths {
            root: tmp.path().join("run"),
        };
        std::fs::create_dir_all(paths.root.join("checkpoint")).unwrap();
        let stale = paths.root.join("checkpoint").join(".state.tmp-1.json");
        std::fs::write(&stale, "{").unwrap();
        let lock = paths.lock().unwrap();
        assert!(!stale.exists());
        let err = format!("{:#}", paths.lock().unwrap_err());
        assert!(err.contains("in use by another mgr process"), "{err}");
        drop(lock);
        paths.lock().unwrap();
    }
}
