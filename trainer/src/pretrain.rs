//! `mgr pretrain`: the backbone that plays the foundation model (the paper's ViLT).
//!
//! A normal `mgr train` run of the baseline (tokenizers, multimodal encoder, head) at kappa 0
//! (every modality present) on a pretraining pool that shares no sample with the downstream
//! splits, so `mgr eval`, `mgr export` and `mgr train --backbone RUN` read it as any run:
//! - synthetic: the generator with another seed (`--pool-seed`, default 1000; downstream runs
//!   use `synthetic.seed` 0), so every pool sample is new;
//! - avmnist: `<data-dir>/pretrain`, written by `mgr prepare avmnist --pool N` (the first N
//!   training digits spoken by george and lucas, whom the recipe does not use; the downstream
//!   training split is the remaining digits).
//!
//! The objective is supervised, on the pool's own labels (MPLMM pretrains its MulT backbone
//! this way on CMU-MOSEI); the downstream head is trained anew, only the tokenizers and the
//! encoder are taken.

use anyhow::{Result, bail};
use std::path::PathBuf;

use crate::device::DeviceChoice;
use crate::runconfig::{self, RunConfig, apply_sets, finish};

/// The synthetic pool's default seed: far from the downstream default (0) and the seeds a
/// protocol varies.
pub const SYNTHETIC_POOL_SEED: u64 = 1000;

/// Flags of `mgr pretrain`.
#[derive(clap::Args)]
pub struct PretrainArgs {
    /// Dataset whose backbone to pretrain (synthetic or avmnist).
    #[arg(long, default_value = "synthetic", value_parser = runconfig::dataset_names())]
    pub dataset: String,
    /// avmnist: the folder `mgr prepare avmnist --pool N` wrote (the pool is its `pretrain/`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run folder to write (a normal run folder).
    #[arg(long)]
    pub out: PathBuf,
    /// Training epochs.
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    /// Seed of initialisation and batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// synthetic: seed of the pool's samples.
    #[arg(long, default_value_t = SYNTHETIC_POOL_SEED)]
    pub pool_seed: u64,
    /// auto | flex | wgpu | wgpu:N | vulkan | cuda | cuda:N, as `mgr train`.
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    pub device: Vec<DeviceChoice>,
    /// Override any field, as `mgr train --set` (e.g. `--set d_model=32`: the downstream runs
    /// must use the same sizes).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Continue an interrupted pretraining run.
    #[arg(long)]
    pub resume: bool,
}

/// The run config of a pretraining run.
pub fn resolve(a: &PretrainArgs) -> Result<RunConfig> {
    let mut rc = RunConfig {
        dataset: a.dataset.clone(),
        ..RunConfig::default()
    };
    match a.dataset.as_str() {
        "synthetic" => {
            if a.data_dir.is_some() {
                bail!(
                    "pretrain --dataset synthetic: the pool is generated, --data-dir is not used"
                );
            }
            rc.synthetic.seed = a.pool_seed;
        }
        "avmnist" => {
            let Some(dir) = &a.data_dir else {
                bail!(
                    "pretrain --dataset avmnist needs --data-dir (a folder of `mgr prepare avmnist --pool N`)"
                );
            };
            let pool = dir.join("pretrain");
            if !pool.join("train_labels.npy").is_file() {
                bail!(
                    "{} has no pretraining pool ({} is missing): prepare it with `mgr prepare avmnist --pool N --out {}`",
                    dir.display(),
                    pool.join("train_labels.npy").display(),
                    dir.display()
                );
            }
            rc.data_dir = Some(pool);
        }
        other => bail!(
            "pretrain: no pretraining pool is defined for {other} (synthetic and avmnist have one)"
        ),
    }
    rc.model.method = mgr::Method::Baseline;
    rc.absence.kappa = 0.0;
    rc.train.epochs = a.epochs;
    rc.train.seed = a.seed;
    let mut v = serde_json::to_value(rc)?;
    apply_sets(&mut v, &a.sets)?;
    let rc = finish(v)?;
    if rc.model.method != mgr::Method::Baseline || rc.absence.kappa != 0.0 || rc.init_from.is_some()
    {
        bail!(
            "pretrain: a backbone is the baseline trained from scratch on complete samples (method, kappa and init_from are fixed)"
        );
    }
    Ok(rc)
}
