//! Checkpoints of a run: weights (burnpack), optimizer state and the epoch log, each written
//! to a temp file and renamed, the state file last, so a kill at any moment leaves the previous
//! checkpoint usable.

use anyhow::{Context, Result, bail};
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Bytes, Device};
use mgr::absence::AbsenceMask;
use mgr::persist::{from_burnpack, to_burnpack};
use mgr::{Model, ModelConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::fsutil::write_atomic;

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
    fn checkpoint_dir(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    fn state(&self) -> PathBuf {
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

/// Loads weights from `path` into a model of `config` on `device`.
pub fn load_model(config: &ModelConfig, path: &Path, device: &Device) -> Result<Model> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read weights {}", path.display()))?;
    Ok(from_burnpack(
        config,
        bytes,
        device,
        &path.display().to_string(),
    )?)
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
        &paths.state(),
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
    config: &ModelConfig,
    optimizer: ModuleOptimizer,
    device: &Device,
) -> Result<(TrainState, Model, ModuleOptimizer)> {
    let state_path = paths.state();
    if !state_path.is_file() {
        bail!(
            "{} has no checkpoint to resume from ({} is missing)",
            paths.root.display(),
            state_path.display()
        );
    }
    let state: TrainState = serde_json::from_str(&std::fs::read_to_string(&state_path)?)
        .with_context(|| format!("{}: not a checkpoint state", state_path.display()))?;
    let model = load_model(config, &paths.weights(state.epochs_done), device)?;
    let opt_path = paths.optimizer(state.epochs_done);
    let bytes =
        std::fs::read(&opt_path).with_context(|| format!("cannot read {}", opt_path.display()))?;
    let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| anyhow::anyhow!("{}: not an optimizer state: {e:?}", opt_path.display()))?;
    Ok((state, model, optimizer.load_record(record)))
}

/// `metrics.csv` from the epoch log.
pub fn metrics_csv(rows: &[EpochRow]) -> String {
    let mut out = String::from(
        "epoch,train_loss,train_task_loss,l_div,valid_loss,valid_accuracy,valid_f1,seconds\n",
    );
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

/// A run folder with a trained model: its config and paths (an error when `best.bpk` is
/// missing).
pub fn finished_run(run: &Path) -> Result<(crate::runconfig::RunConfig, RunPaths)> {
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
