//! `mgr protocol`: the paper's protocol. Every (method, insertion type, kappa) cell is trained
//! with absence seeds x training seeds (4 x 4 = 16 runs in the paper); finished runs are
//! skipped, interrupted ones resumed; the tables report mean and sample standard deviation of
//! accuracy and F1 per cell (Tables 1-2, 5-8), with plots.
//!
//! On a cluster: `--emit-jobs slurm|shell` writes one command per run (`--job N`, each writing
//! its own run folder) instead of training, and `--collect` builds the same tables from the
//! folders once the jobs are done.

use anyhow::{Context, Result, bail};
use mgr::metrics::mean_std;
use mgr::{Method, PromptInsertion};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::checkpoint::{RunPaths, RunResults};
use crate::device::{self, DeviceChoice};
use crate::fsutil::{Lock, LockKind, remove_stale_temps, try_lock, write_atomic};
use crate::runconfig::{RunConfig, set_key};
use crate::{plots, run};

/// Flags of `mgr protocol`.
#[derive(clap::Args)]
pub struct ProtocolArgs {
    /// Dataset (as `mgr train`).
    #[arg(long, default_value = "synthetic", value_parser = crate::runconfig::dataset_names())]
    pub dataset: String,
    /// Dataset folder or file.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Methods, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "baseline,maps,msps,mgr",
        value_parser = crate::runconfig::method_names()
    )]
    pub methods: Vec<String>,
    /// Prompt insertion types for MGR methods, comma-separated (Tables 5-6).
    #[arg(long, value_delimiter = ',', default_value = "token")]
    pub insertions: Vec<String>,
    /// kappa values, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.7")]
    pub kappa: Vec<f64>,
    /// Absence seeds per cell (0..N).
    #[arg(long, default_value_t = 4)]
    pub absence_seeds: u64,
    /// Training seeds per cell (0..N).
    #[arg(long, default_value_t = 4)]
    pub seeds: u64,
    /// Epochs per run.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Any config override, as `mgr train --set`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// A pretrained backbone (a run of `mgr pretrain`) every run starts from: its tokenizers
    /// and multimodal encoder (as `mgr train --backbone`).
    #[arg(long, value_name = "RUN")]
    pub backbone: Option<PathBuf>,
    /// With `--backbone`: `backbone` (frozen: each method trains only what it adds, the
    /// paper's setting), `none` (fine-tuned) or both, comma-separated: each is its own cell.
    #[arg(long, value_delimiter = ',', default_value = "none", value_parser = crate::runconfig::freeze_names())]
    pub freeze: Vec<String>,
    /// Learning rates to choose from on validation, comma-separated (e.g. `1e-4,1e-3,1e-2`):
    /// each cell first trains its first run (absence seed 0, seed 0) once per rate, keeps the
    /// rate of the highest best-epoch validation accuracy (`lr-selection.md`; the test split is
    /// not looked at), then trains all its runs with it. Without it: `train.lr`.
    #[arg(long, value_delimiter = ',', value_name = "LR,...", conflicts_with_all = ["emit_jobs", "job"])]
    pub lrs: Vec<f64>,
    /// Sensitivity sweep (the paper's Fig. 4): one config key (any `--set` key) and its values,
    /// e.g. `rho=0.3,0.5,0.7,0.9` or `refine_layers=1,2,3`. Every cell is trained once per
    /// value; `sweep.md` / `sweep.csv` and `plots/sweep-KEY` give F1 against the value.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    pub sweep: Option<String>,
    /// Workers, one per entry, each on its device: e.g. `wgpu:0,wgpu:1` (one run on each
    /// GPU at a time) or `flex,flex` (two CPU runs). Independent runs go to whichever worker is
    /// free. An entry joining devices with `+` (`wgpu:0+wgpu:1,wgpu:2+wgpu:3`) is one worker
    /// that trains each run data-parallel over its devices. `--device`, as `mgr train` spells
    /// it, is the same option.
    #[arg(
        long,
        visible_alias = "device",
        value_delimiter = ',',
        default_value = "auto"
    )]
    pub devices: Vec<String>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Train nothing; write one command per run for a cluster: `slurm` writes
    /// `<out>/jobs.sbatch` (an `#SBATCH --array` job, one task per run), `shell` writes
    /// `<out>/jobs.sh` (one command per line, for `bash` or GNU `parallel`). Each command is this
    /// protocol with `--job N`; once they are done, `--collect` builds the tables.
    #[arg(long, value_enum, value_name = "FORMAT", conflicts_with_all = ["job", "collect"])]
    pub emit_jobs: Option<JobScript>,
    /// Train only run N of this protocol (0-based, in the order `--emit-jobs` lists them) and
    /// write no tables: what one job of an emitted script runs.
    #[arg(long, value_name = "N", conflicts_with = "collect")]
    pub job: Option<usize>,
    /// Train nothing; build the tables and plots from the run folders found under `--out`.
    #[arg(long)]
    pub collect: bool,
}

/// The job scripts `--emit-jobs` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum JobScript {
    /// A Slurm array job (`sbatch <out>/jobs.sbatch`).
    Slurm,
    /// One command per line (`bash <out>/jobs.sh`, `parallel < <out>/jobs.sh`).
    Shell,
}

/// One run of the protocol.
#[derive(Clone, Debug)]
struct Job {
    cell: Cell,
    absence_seed: u64,
    seed: u64,
    dir: PathBuf,
    config: RunConfig,
}

impl Job {
    /// `results.json` of its run folder, whose presence marks a finished run.
    fn results(&self) -> PathBuf {
        RunPaths {
            root: self.dir.clone(),
        }
        .results()
    }
}

/// A table cell: method, insertion type, kappa.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cell {
    /// Method name.
    pub method: String,
    /// Prompt insertion type (MGR methods only; "-" otherwise).
    pub insertion: String,
    /// kappa, as written.
    pub kappa: String,
    /// The swept setting, `KEY=VALUE` (empty without `--sweep`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub setting: String,
    /// With `--backbone`: `frozen` or `fine-tuned` (empty: from scratch).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backbone: String,
}

impl Cell {
    /// Method, with its insertion type when not the default, its backbone setting and the
    /// swept setting.
    pub fn label(&self) -> String {
        let mut name = self.method.clone();
        if self.insertion != "-" && self.insertion != "token" {
            name.push_str(&format!(" ({})", self.insertion));
        }
        name.push_str(&self.backbone_suffix());
        if !self.setting.is_empty() {
            name.push_str(&format!(" {}", self.setting));
        }
        name
    }

    /// ` [frozen]` / ` [fine-tuned]` after a method's name, empty from scratch: how every table,
    /// label and sweep line names the backbone setting.
    pub fn backbone_suffix(&self) -> String {
        if self.backbone.is_empty() {
            String::new()
        } else {
            format!(" [{}]", self.backbone)
        }
    }

    /// The baseline's cell of the same table line (insertion, kappa, backbone, setting): what
    /// this cell's runs are paired with.
    pub fn baseline(&self) -> Cell {
        Cell {
            method: "baseline".into(),
            insertion: "-".into(),
            ..self.clone()
        }
    }
}

/// The backbone setting's name in a cell: `frozen` or `fine-tuned`.
fn backbone_label(freeze: mgr::Freeze) -> &'static str {
    match freeze {
        mgr::Freeze::Backbone => "frozen",
        mgr::Freeze::None => "fine-tuned",
    }
}

/// `--sweep KEY=V1,V2,...` as the key and its values.
pub fn parse_sweep(raw: &str) -> Result<(String, Vec<String>)> {
    let (key, values) = raw
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--sweep `{raw}`: expected KEY=V1,V2,..."))?;
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if key.trim().is_empty() || values.is_empty() {
        bail!("--sweep `{raw}`: expected KEY=V1,V2,... with at least one value");
    }
    Ok((key.trim().to_string(), values))
}

/// One row of the tables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The cell.
    #[serde(flatten)]
    pub cell: Cell,
    /// Finished runs.
    pub runs: usize,
    /// Mean accuracy.
    pub accuracy_mean: f64,
    /// Sample standard deviation of accuracy.
    pub accuracy_std: f64,
    /// Mean F1.
    pub f1_mean: f64,
    /// Sample standard deviation of F1.
    pub f1_std: f64,
    /// Mean and sample standard deviation of the support-weighted F1, over the runs that
    /// report it (None: none does, e.g. regression or results from before it existed).
    pub weighted_f1: Option<(f64, f64)>,
    /// Paired against the baseline's cell of the same line (same absence seed and training
    /// seed): mean and sample standard deviation of this cell's F1 minus the baseline's, and
    /// how many pairs (None for the baseline itself or without a baseline cell).
    pub paired_f1: Option<(f64, f64, usize)>,
    /// Mean accuracy per absence pattern.
    pub per_pattern: BTreeMap<String, f64>,
}

/// Aggregates finished runs' results: mean and sample standard deviation per cell, and each
/// cell's F1 paired against the baseline's runs with the same seeds.
pub fn aggregate(results: &[(Cell, RunResults)]) -> Vec<Row> {
    let mut by_cell: BTreeMap<Cell, Vec<&RunResults>> = BTreeMap::new();
    for (cell, r) in results {
        by_cell.entry(cell.clone()).or_default().push(r);
    }
    by_cell
        .iter()
        .map(|(cell, rs)| {
            let cell = cell.clone();
            let get = |f: fn(&RunResults) -> f64| rs.iter().map(|r| f(r)).collect::<Vec<_>>();
            let (accuracy_mean, accuracy_std) = mean_std(&get(|r| r.test.accuracy));
            let (f1_mean, f1_std) = mean_std(&get(|r| r.test.f1));
            let weighted: Vec<f64> = rs.iter().filter_map(|r| r.test.weighted_f1).collect();
            let weighted_f1 = (!weighted.is_empty()).then(|| mean_std(&weighted));
            let baseline = cell.baseline();
            let paired_f1 = match by_cell.get(&baseline) {
                Some(base) if baseline != cell => {
                    let diffs: Vec<f64> = rs
                        .iter()
                        .filter_map(|r| {
                            base.iter()
                                .find(|b| b.absence_seed == r.absence_seed && b.seed == r.seed)
                                .map(|b| r.test.f1 - b.test.f1)
                        })
                        .collect();
                    (!diffs.is_empty()).then(|| {
                        let (m, s) = mean_std(&diffs);
                        (m, s, diffs.len())
                    })
                }
                _ => None,
            };
            let mut patterns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in rs.iter() {
                for (k, m) in &r.test.per_pattern {
                    patterns.entry(k.clone()).or_default().push(m.accuracy);
                }
            }
            let per_pattern = patterns
                .into_iter()
                .map(|(k, v)| (k, mean_std(&v).0))
                .collect();
            Row {
                cell,
                runs: rs.len(),
                accuracy_mean,
                accuracy_std,
                f1_mean,
                f1_std,
                weighted_f1,
                paired_f1,
                per_pattern,
            }
        })
        .collect()
}

fn build_jobs(a: &ProtocolArgs) -> Result<Vec<Job>> {
    let settings: Vec<Option<(String, String)>> = match &a.sweep {
        Some(raw) => {
            let (key, values) = parse_sweep(raw)?;
            values.into_iter().map(|v| Some((key.clone(), v))).collect()
        }
        None => vec![None],
    };
    let mut jobs = Vec::new();
    for setting in &settings {
        jobs.extend(build_cell_jobs(a, setting.as_ref())?);
    }
    Ok(jobs)
}

fn build_cell_jobs(a: &ProtocolArgs, setting: Option<&(String, String)>) -> Result<Vec<Job>> {
    let freezes: Vec<mgr::Freeze> = a
        .freeze
        .iter()
        .map(|f| f.parse::<mgr::Freeze>())
        .collect::<Result<_, _>>()?;
    if a.backbone.is_none() && freezes.contains(&mgr::Freeze::Backbone) {
        bail!("--freeze backbone needs --backbone RUN (a run of `mgr pretrain`)");
    }
    let mut jobs = Vec::new();
    for method in &a.methods {
        let m: Method = method.parse()?;
        let insertions: Vec<String> = if m.is_mgr() {
            a.insertions.clone()
        } else {
            vec!["-".into()]
        };
        for insertion in insertions {
            if insertion != "-" {
                insertion.parse::<PromptInsertion>()?;
            }
            for &freeze in &freezes {
                for &kappa in &a.kappa {
                    mgr::absence::AbsenceConfig::check_kappa(kappa).context("--kappa")?;
                    let cell = Cell {
                        method: method.clone(),
                        insertion: insertion.clone(),
                        kappa: format!("{kappa}"),
                        setting: setting.map(|(k, v)| format!("{k}={v}")).unwrap_or_default(),
                        backbone: match a.backbone {
                            Some(_) => backbone_label(freeze).to_string(),
                            None => String::new(),
                        },
                    };
                    for absence_seed in 0..a.absence_seeds {
                        for seed in 0..a.seeds {
                            jobs.push(job(a, &cell, kappa, freeze, absence_seed, seed, setting)?);
                        }
                    }
                }
            }
        }
    }
    Ok(jobs)
}

/// One run of `cell`: its config (the defaults, the cell, the seeds, `--epochs`, the backbone,
/// `--set`, the swept setting) and its folder under `--out`.
fn job(
    a: &ProtocolArgs,
    cell: &Cell,
    kappa: f64,
    freeze: mgr::Freeze,
    absence_seed: u64,
    seed: u64,
    setting: Option<&(String, String)>,
) -> Result<Job> {
    let (method, insertion) = (&cell.method, &cell.insertion);
    let mut rc = RunConfig {
        dataset: a.dataset.clone(),
        data_dir: a.data_dir.clone(),
        init_from: a.backbone.clone(),
        freeze,
        ..RunConfig::default()
    };
    rc.model.method = method.parse()?;
    if insertion != "-" {
        rc.model.refinement.prompt_insertion = insertion.parse()?;
    }
    rc.absence.kappa = kappa;
    rc.absence.seed = absence_seed;
    rc.train.seed = seed;
    if let Some(e) = a.epochs {
        rc.train.epochs = e;
    }
    // `--set` and the swept setting are the user's KEY=VALUE text: applied to the typed cell,
    // in that order, through the one parser `mgr train --set` uses.
    let mut v = serde_json::to_value(rc)?;
    crate::runconfig::apply_sets(&mut v, &a.sets)?;
    if let Some((k, value)) = setting {
        set_key(&mut v, k, value).with_context(|| format!("--sweep {k}={value}"))?;
    }
    let config = crate::runconfig::finish(v).with_context(|| format!("cell {}", cell.label()))?;
    let ins = if insertion == "-" {
        String::new()
    } else {
        format!("-{insertion}")
    };
    let mut dir = a.out.join("runs").join(format!("{method}{ins}"));
    if !cell.backbone.is_empty() {
        dir = dir.join(&cell.backbone);
    }
    if let Some((k, value)) = setting {
        dir = dir.join(format!("{k}{value}"));
    }
    let dir = dir
        .join(format!("kappa{kappa}"))
        .join(format!("a{absence_seed}-s{seed}"));
    Ok(Job {
        cell: cell.clone(),
        absence_seed,
        seed,
        dir,
        config,
    })
}

/// One cell's learning-rate choice (`--lrs`).
#[derive(Clone, Debug, Serialize)]
struct LrChoice {
    cell: Cell,
    /// Each rate's best-epoch validation accuracy (None: its run has not finished).
    tried: Vec<(f64, Option<f64>)>,
    /// The chosen rate.
    chosen: f64,
}

/// `--lrs`: each cell's first run (absence seed 0, seed 0) once per rate, in
/// `<out>/lr-select/...` (trained unless `train` is false, as for `--collect`); the rate with
/// the highest best-epoch validation accuracy is chosen (ties: the first listed), written to
/// `lr-selection.md` and `.json`, and set on every run of the cell. The selection run of the
/// chosen rate is the cell's first run: it is copied there instead of trained again.
fn select_lrs(
    a: &ProtocolArgs,
    jobs: &mut [Job],
    devices: &[Vec<DeviceChoice>],
    train: bool,
) -> Result<()> {
    let firsts: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.absence_seed == 0 && j.seed == 0)
        .collect();
    let trials = lr_trials(a, &firsts)?;
    if train {
        let pending: Vec<&Job> = trials
            .iter()
            .map(|(_, _, j)| j)
            .filter(|j| !j.results().is_file())
            .collect();
        eprintln!(
            "protocol --lrs: {} selection runs, {} to do",
            trials.len(),
            pending.len()
        );
        let failures = train_jobs(pending, devices);
        if !failures.is_empty() {
            bail!(
                "{} learning-rate selection run(s) failed: {}",
                failures.len(),
                failures.join("; ")
            );
        }
    }
    let mut choices: Vec<LrChoice> = Vec::new();
    for first in &firsts {
        let tried: Vec<(f64, Option<f64>, PathBuf)> = trials
            .iter()
            .filter(|(c, _, _)| *c == first.cell)
            .map(|(_, lr, j)| {
                let valid = RunPaths {
                    root: j.dir.clone(),
                }
                .read_results()
                .ok()
                .map(|r| r.best_valid_accuracy);
                (*lr, valid, j.dir.clone())
            })
            .collect();
        let Some(best) = tried
            .iter()
            .filter_map(|(lr, v, dir)| v.map(|v| (*lr, v, dir)))
            .reduce(|best, next| if next.1 > best.1 { next } else { best })
        else {
            bail!(
                "--lrs: no selection run of {} has finished under {}",
                first.cell.label(),
                a.out.join("lr-select").display()
            );
        };
        if train && !first.dir.join("config.json").exists() {
            copy_dir(best.2, &first.dir)?;
        }
        choices.push(LrChoice {
            cell: first.cell.clone(),
            tried: tried.iter().map(|(lr, v, _)| (*lr, *v)).collect(),
            chosen: best.0,
        });
    }
    for j in jobs.iter_mut() {
        if let Some(choice) = choices.iter().find(|c| c.cell == j.cell) {
            j.config.train.lr = choice.chosen;
        }
    }
    write_lr_selection(&a.out, &a.lrs, &choices)
}

/// `lr-selection.md` (a table: each cell's best-epoch validation accuracy per rate, and the
/// rate chosen) and `lr-selection.json` in `out`.
fn write_lr_selection(out: &Path, lrs: &[f64], choices: &[LrChoice]) -> Result<()> {
    let mut md = String::from(
        "# Learning rate per cell, chosen on validation

Best-epoch validation accuracy of each cell's first run (absence seed 0, seed 0) per rate; the chosen rate (highest) trains every run of the cell.

| cell | kappa |",
    );
    for lr in lrs {
        md.push_str(&format!(" lr {lr} |"));
    }
    md.push_str(
        " chosen |
|---|---|",
    );
    md.push_str(&"---|".repeat(lrs.len() + 1));
    md.push('\n');
    for c in choices {
        md.push_str(&format!("| {} | {} |", c.cell.label(), c.cell.kappa));
        for (_, v) in &c.tried {
            match v {
                Some(v) => md.push_str(&format!(" {:.2} |", 100.0 * v)),
                None => md.push_str(" - |"),
            }
        }
        md.push_str(&format!(" {} |\n", c.chosen));
    }
    write_atomic(&out.join("lr-selection.md"), md.as_bytes())?;
    write_atomic(
        &out.join("lr-selection.json"),
        serde_json::to_string_pretty(choices)?.as_bytes(),
    )?;
    Ok(())
}

/// One selection run per cell and rate: the cell's first run with that rate, in
/// `<out>/lr-select/<cell>/lr<rate>`, as (cell, rate, job).
fn lr_trials(a: &ProtocolArgs, firsts: &[&Job]) -> Result<Vec<(Cell, f64, Job)>> {
    let runs_root = a.out.join("runs");
    let mut trials: Vec<(Cell, f64, Job)> = Vec::new();
    for first in firsts {
        let rel = first.dir.strip_prefix(&runs_root).unwrap_or(&first.dir);
        let cell_dir = a.out.join("lr-select").join(rel.parent().unwrap_or(rel));
        for &lr in &a.lrs {
            if !(lr > 0.0 && lr.is_finite()) {
                bail!("--lrs: {lr} is not a positive learning rate");
            }
            let mut trial = (*first).clone();
            trial.config.train.lr = lr;
            trial.dir = cell_dir.join(format!("lr{lr}"));
            trials.push((first.cell.clone(), lr, trial));
        }
    }
    Ok(trials)
}

/// Copies the folder `from` to `to` (which must not exist) through a temp folder and a rename.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    fn copy(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let target = to.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                copy(&entry.path(), &target)?;
            } else {
                std::fs::copy(entry.path(), &target)?;
            }
        }
        Ok(())
    }
    let tmp = to.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy(from, &tmp)
        .with_context(|| format!("cannot copy {} to {}", from.display(), tmp.display()))?;
    std::fs::rename(&tmp, to)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), to.display()))
}

/// Runs `mgr protocol`.
pub fn run(a: &ProtocolArgs) -> Result<()> {
    let mut jobs = build_jobs(a)?;
    if let (Some(backbone), false) = (&a.backbone, a.collect) {
        crate::checkpoint::finished_run(backbone).context("--backbone")?;
    }
    if let Some(format) = a.emit_jobs {
        return emit_jobs(a, format, jobs.len());
    }
    let devices: Vec<Vec<DeviceChoice>> = a
        .devices
        .iter()
        .map(|d| device::parse_group(d).with_context(|| format!("--devices `{d}`")))
        .collect::<Result<_>>()?;
    let _lock = if a.collect { None } else { Some(lock_out(a)?) };
    if !a.lrs.is_empty() {
        select_lrs(a, &mut jobs, &devices, !a.collect)?;
    }
    if a.collect {
        return collect(a, &jobs);
    }
    let selected: Vec<&Job> = match a.job {
        Some(n) => vec![jobs.get(n).ok_or_else(|| {
            anyhow::anyhow!(
                "--job {n}: this protocol has {} runs (0 to {})",
                jobs.len(),
                jobs.len().saturating_sub(1)
            )
        })?],
        None => jobs.iter().collect(),
    };
    let pending: Vec<&Job> = selected
        .iter()
        .copied()
        .filter(|j| !j.results().is_file())
        .collect();
    eprintln!(
        "protocol: {} runs, {} finished, {} to do on {} worker(s)",
        selected.len(),
        selected.len() - pending.len(),
        pending.len(),
        devices.len()
    );
    let failures = train_jobs(pending, &devices);
    if a.job.is_none() {
        write_tables(a, &jobs)?;
    }
    if !failures.is_empty() {
        bail!("{} run(s) failed: {}", failures.len(), failures.join("; "));
    }
    Ok(())
}

/// Creates `--out` and takes its lock (`<out>/.lock`): a whole protocol alone (a second one on
/// the same folder is refused, never both training), the `--job N` workers of a job array
/// together. Each run folder has a lock of its own besides ([`RunPaths::lock`]). The whole
/// protocol then removes the temp files a killed one left beside its tables.
fn lock_out(a: &ProtocolArgs) -> Result<Lock> {
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let kind = if a.job.is_some() {
        LockKind::Shared
    } else {
        LockKind::Exclusive
    };
    let lock = try_lock(
        &a.out.join(".lock"),
        kind,
        &format!("the protocol folder {}", a.out.display()),
    )?;
    if kind == LockKind::Exclusive {
        remove_stale_temps(&a.out);
        remove_stale_temps(&a.out.join("plots"));
    }
    Ok(lock)
}

/// `--collect`: the tables and plots from the finished runs under `--out`.
fn collect(a: &ProtocolArgs, jobs: &[Job]) -> Result<()> {
    let found = jobs.iter().filter(|j| j.results().is_file()).count();
    eprintln!(
        "protocol --collect: {found} of {} runs finished under {}",
        jobs.len(),
        a.out.display()
    );
    if found == 0 {
        bail!(
            "no finished run of this protocol under {}: were the jobs run with the same \
             flags and --out?",
            a.out.display()
        );
    }
    write_tables(a, jobs)
}

/// Trains `pending` with one worker per device group, each taking the next job when free (an
/// interrupted run resumes); returns the failures, one line each.
fn train_jobs(pending: Vec<&Job>, devices: &[Vec<DeviceChoice>]) -> Vec<String> {
    let queue = Mutex::new(pending.into_iter());
    let failures = Mutex::new(Vec::new());
    let done = Mutex::new(0usize);
    std::thread::scope(|scope| {
        for device in devices {
            let (queue, failures, done) = (&queue, &failures, &done);
            scope.spawn(move || {
                loop {
                    let Some(job) = queue.lock().expect("queue").next() else {
                        break;
                    };
                    let t = std::time::Instant::now();
                    // As `--resume`: whatever state a kill left the folder in, it goes on.
                    let result = run::train(job.config.clone(), &job.dir, device, true, true);
                    let mut n = done.lock().expect("count");
                    *n += 1;
                    match result {
                        Ok(()) => eprintln!(
                            "[{}] {} kappa {} a{} s{}: done in {:.0}s",
                            *n,
                            job.cell.method,
                            job.cell.kappa,
                            job.absence_seed,
                            job.seed,
                            t.elapsed().as_secs_f64()
                        ),
                        Err(e) => {
                            eprintln!("[{}] {}: failed: {e:#}", *n, job.dir.display());
                            failures
                                .lock()
                                .expect("failures")
                                .push(format!("{}: {e:#}", job.dir.display()));
                        }
                    }
                }
            });
        }
    });
    failures.into_inner().expect("failures")
}

/// `--emit-jobs`: this protocol's command line with `--job N` for each of its `n` runs, as a
/// Slurm array job or a list of shell commands, run from the current directory by this binary.
fn emit_jobs(a: &ProtocolArgs, format: JobScript, n: usize) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut args = vec![exe.display().to_string()];
    let mut raw = std::env::args().skip(1);
    while let Some(arg) = raw.next() {
        if arg == "--emit-jobs" {
            raw.next();
        } else if !arg.starts_with("--emit-jobs=") {
            args.push(arg);
        }
    }
    let command = args
        .iter()
        .map(|s| shell_quote(s))
        .collect::<Vec<_>>()
        .join(" ");
    let cd = format!("cd {}", shell_quote(&cwd.display().to_string()));
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let (path, text) = match format {
        JobScript::Shell => (
            a.out.join("jobs.sh"),
            (0..n)
                .map(|i| format!("{cd} && {command} --job {i}\n"))
                .collect::<String>(),
        ),
        JobScript::Slurm => {
            let logs = a.out.join("logs");
            std::fs::create_dir_all(&logs)
                .with_context(|| format!("cannot create {}", logs.display()))?;
            let logs = std::path::absolute(&logs).unwrap_or(logs);
            (
                a.out.join("jobs.sbatch"),
                format!(
                    "#!/bin/bash\n#SBATCH --job-name=mgr-protocol\n#SBATCH --array=0-{}\n\
                     #SBATCH --output={}/job-%a.log\n\
                     # {n} runs of `mgr protocol`, one per array task; each writes its own run \
                     folder.\n# Afterwards, the same command with --collect builds the tables.\n\
                     {cd}\nexec {command} --job \"$SLURM_ARRAY_TASK_ID\"\n",
                    n.saturating_sub(1),
                    logs.display(),
                ),
            )
        }
    };
    write_atomic(&path, text.as_bytes())?;
    eprintln!(
        "wrote {} ({n} runs); then: the same command with --collect instead of --emit-jobs",
        path.display()
    );
    Ok(())
}

/// `s` as one word for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn read_results(jobs: &[Job]) -> Vec<(Cell, RunResults, PathBuf)> {
    jobs.iter()
        .filter_map(|j| {
            let results = RunPaths {
                root: j.dir.clone(),
            }
            .read_results()
            .ok()?;
            Some((j.cell.clone(), results, j.dir.clone()))
        })
        .collect()
}

fn write_tables(a: &ProtocolArgs, jobs: &[Job]) -> Result<()> {
    let results = read_results(jobs);
    let rows = aggregate(
        &results
            .iter()
            .map(|(c, r, _)| (c.clone(), r.clone()))
            .collect::<Vec<_>>(),
    );
    let expected_runs = (a.absence_seeds * a.seeds) as usize;
    let two_modal = results
        .first()
        .and_then(|(_, _, dir)| crate::runconfig::load(dir).ok())
        .is_some_and(|rc| rc.model.modalities.len() == 2);
    let mut md = table_md(&a.dataset, &rows, expected_runs);
    if two_modal && a.kappa.contains(&1.0) {
        md.push_str("\nkappa = 1 on a two-modality dataset leaves every sample a single modality (the paper omits it for AV-MNIST); it was run because it was asked for.\n");
    }
    if let Some(raw) = &a.sweep {
        let (key, _) = parse_sweep(raw)?;
        write_sweep_table(a, &key, &rows)?;
        md.push_str(&format!(
            "\nSensitivity to `{key}` (F1 against the value): [sweep.md](sweep.md), [sweep.csv](sweep.csv).\n"
        ));
    }
    let sweeps = crate::kappa_sweep::kappa_sweeps(&results)?;
    write_atomic(
        &a.out.join("accuracy-vs-kappa.csv"),
        kappa_sweep_csv(&sweeps).as_bytes(),
    )?;
    if !sweeps.is_empty() {
        md.push_str("\nTest accuracy against kappa, each method's first run evaluated at kappa 0 to 1 (one trained model, not retrained): [accuracy-vs-kappa.csv](accuracy-vs-kappa.csv).\n");
    }
    let plot_files = plots::protocol_plots(&a.out, &rows, &results, &sweeps, &a.dataset)?;
    if !crate::plots::font_available() {
        md.push_str("\nNo plots: no TrueType font found (install Debian's fonts-dejavu-core).\n");
    }
    if !plot_files.is_empty() {
        md.push_str("\n## Plots\n\n");
        for f in &plot_files {
            md.push_str(&format!("- [{}]({})\n", f.display(), f.display()));
        }
    }
    write_atomic(&a.out.join("table.csv"), table_csv(&rows).as_bytes())?;
    write_atomic(&a.out.join("table.md"), md.as_bytes())?;
    write_atomic(
        &a.out.join("table.json"),
        serde_json::to_string_pretty(&rows)?.as_bytes(),
    )?;
    eprintln!("wrote {}", a.out.join("table.md").display());
    print!("{md}");
    Ok(())
}

/// `table.csv`: one line per cell, fractions.
fn table_csv(rows: &[Row]) -> String {
    let mut csv =
        String::from("method,insertion,kappa,runs,accuracy_mean,accuracy_std,f1_mean,f1_std\n");
    for r in rows {
        let mut method = r.cell.method.clone() + &r.cell.backbone_suffix();
        if !r.cell.setting.is_empty() {
            method.push_str(&format!(" {}", r.cell.setting));
        }
        csv.push_str(&format!(
            "{},{},{},{},{:.6},{:.6},{:.6},{:.6}\n",
            method,
            r.cell.insertion,
            r.cell.kappa,
            r.runs,
            r.accuracy_mean,
            r.accuracy_std,
            r.f1_mean,
            r.f1_std
        ));
    }
    csv
}

/// The head and table of `table.md`: one line per cell, percentages (weighted F1, F1 paired
/// against the baseline's runs of the same seeds, accuracy per absence pattern), cells with
/// fewer finished runs than `expected_runs` marked.
fn table_md(dataset: &str, rows: &[Row], expected_runs: usize) -> String {
    let patterns: std::collections::BTreeSet<&String> =
        rows.iter().flat_map(|r| r.per_pattern.keys()).collect();
    let mut md = format!(
        "# {dataset} : mean / sample std over absence seeds x training seeds\n\n| method | insertion | kappa | runs | accuracy | F1 | weighted F1 | F1 - baseline (paired) |",
    );
    for p in &patterns {
        md.push_str(&format!(" {p} |"));
    }
    md.push_str("\n|---|---|---|---|---|---|---|---|");
    md.push_str(&"---|".repeat(patterns.len()));
    md.push('\n');
    for r in rows {
        let partial = if r.runs < expected_runs {
            format!(" (of {expected_runs})")
        } else {
            String::new()
        };
        let mut method = r.cell.method.clone() + &r.cell.backbone_suffix();
        if !r.cell.setting.is_empty() {
            method.push_str(&format!(" ({})", r.cell.setting));
        }
        let weighted = match r.weighted_f1 {
            Some((m, s)) => format!("{:.2} / {:.2}", 100.0 * m, 100.0 * s),
            None => "-".into(),
        };
        let paired = match r.paired_f1 {
            Some((m, s, n)) => format!("{:+.2} / {:.2} ({n})", 100.0 * m, 100.0 * s),
            None => "-".into(),
        };
        md.push_str(&format!(
            "| {} | {} | {} | {}{partial} | {:.2} / {:.2} | {:.2} / {:.2} | {weighted} | {paired} |",
            method,
            r.cell.insertion,
            r.cell.kappa,
            r.runs,
            100.0 * r.accuracy_mean,
            100.0 * r.accuracy_std,
            100.0 * r.f1_mean,
            100.0 * r.f1_std
        ));
        for p in &patterns {
            match r.per_pattern.get(*p) {
                Some(a) => md.push_str(&format!(" {:.2} |", 100.0 * a)),
                None => md.push_str(" - |"),
            }
        }
        md.push('\n');
    }
    md.push_str("\n(last columns: mean test accuracy per absence pattern.)\n");
    md
}

/// `accuracy-vs-kappa.csv`: each sweep's points.
fn kappa_sweep_csv(sweeps: &[crate::kappa_sweep::SweepLine]) -> String {
    let mut csv = String::from("method,run,kappa,accuracy\n");
    for line in sweeps {
        for (kappa, accuracy) in &line.points {
            csv.push_str(&format!(
                "{},{},{kappa:.1},{accuracy:.6}\n",
                line.name,
                line.run.display()
            ));
        }
    }
    csv
}

/// One point of a sensitivity sweep: a cell's F1 at one value of the swept key.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepPoint {
    /// The cell without its setting (one line of the plot).
    pub line: String,
    /// The value, as written.
    pub value: String,
    /// The row of the cell at this value.
    pub row: Row,
}

/// The sweep's points, ordered by line and then by value (numerically when every value is a
/// number).
pub fn sweep_points(key: &str, rows: &[Row]) -> Vec<SweepPoint> {
    let prefix = format!("{key}=");
    let mut points: Vec<SweepPoint> = rows
        .iter()
        .filter_map(|r| {
            let value = r.cell.setting.strip_prefix(&prefix)?.to_string();
            let line = Cell {
                setting: String::new(),
                ..r.cell.clone()
            };
            Some(SweepPoint {
                line: format!("{} kappa {}", line.label(), line.kappa),
                value,
                row: r.clone(),
            })
        })
        .collect();
    let numeric = points.iter().all(|p| p.value.parse::<f64>().is_ok());
    points.sort_by(|a, b| {
        a.line.cmp(&b.line).then_with(|| {
            if numeric {
                let (x, y) = (a.value.parse::<f64>(), b.value.parse::<f64>());
                x.unwrap_or(0.0).total_cmp(&y.unwrap_or(0.0))
            } else {
                a.value.cmp(&b.value)
            }
        })
    });
    points
}

fn write_sweep_table(a: &ProtocolArgs, key: &str, rows: &[Row]) -> Result<()> {
    let points = sweep_points(key, rows);
    let mut csv = format!("line,{key},runs,f1_mean,f1_std,accuracy_mean,accuracy_std\n");
    let mut md = format!(
        "# {}: sensitivity to `{key}` (test F1 and accuracy, mean / sample std, %)\n\n| cell | {key} | runs | F1 | accuracy |\n|---|---|---|---|---|\n",
        a.dataset
    );
    for p in &points {
        let r = &p.row;
        csv.push_str(&format!(
            "{},{},{},{:.6},{:.6},{:.6},{:.6}\n",
            p.line, p.value, r.runs, r.f1_mean, r.f1_std, r.accuracy_mean, r.accuracy_std
        ));
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} / {:.2} | {:.2} / {:.2} |\n",
            p.line,
            p.value,
            r.runs,
            100.0 * r.f1_mean,
            100.0 * r.f1_std,
            100.0 * r.accuracy_mean,
            100.0 * r.accuracy_std
        ));
    }
    let plot_files = plots::sweep_plot(&a.out, key, &points, &a.dataset)?;
    if !plot_files.is_empty() {
        md.push('\n');
        for f in &plot_files {
            md.push_str(&format!("- [{}]({})\n", f.display(), f.display()));
        }
    }
    write_atomic(&a.out.join("sweep.csv"), csv.as_bytes())?;
    write_atomic(&a.out.join("sweep.md"), md.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::TestMetrics;

    #[test]
    fn shell_quoting_keeps_plain_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("--set"), "--set");
        assert_eq!(shell_quote("rho=0.3,0.5"), "rho=0.3,0.5");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn aggregation_is_mean_and_sample_std_per_cell() {
        let cell = |m: &str| Cell {
            method: m.into(),
            insertion: "-".into(),
            kappa: "0.7".into(),
            setting: String::new(),
            backbone: String::new(),
        };
        let results_of = |accuracy: f64, f1: f64, vision: Option<f64>| {
            let pattern = |a: f64| mgr::metrics::Metrics {
                accuracy: a,
                ..Default::default()
            };
            RunResults {
                dataset: "synthetic".into(),
                method: "mgr".into(),
                kappa: 0.7,
                absence_seed: 0,
                seed: 0,
                test: TestMetrics {
                    accuracy,
                    f1,
                    weighted_f1: None,
                    n_test: 1,
                    mae: None,
                    corr: None,
                    per_pattern: vision
                        .map(|a| ("vision".to_string(), pattern(a)))
                        .into_iter()
                        .collect(),
                },
                test_loss: 0.0,
                best_epoch: 1,
                best_valid_accuracy: 0.0,
                epochs: 1,
                device: "flex".into(),
                train_seconds: 0.0,
                backbone: None,
                freeze: mgr::Freeze::None,
                trainable_params: None,
                frozen_params: None,
                ranking: None,
            }
        };
        let accs = [0.5, 0.6, 0.7, 0.8];
        let mut results: Vec<(Cell, RunResults)> = accs
            .iter()
            .map(|&a| (cell("mgr"), results_of(a, a / 2.0, Some(a))))
            .collect();
        results.push((cell("baseline"), results_of(0.4, 0.3, None)));
        let rows = aggregate(&results);
        let mgr = rows.iter().find(|r| r.cell.method == "mgr").unwrap();
        assert_eq!(mgr.runs, 4);
        assert!((mgr.accuracy_mean - 0.65).abs() < 1e-12);
        // sample std of 0.5..0.8: sqrt(0.05 / 3)
        assert!((mgr.accuracy_std - (0.05f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((mgr.f1_std - (0.05f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
        assert!((mgr.per_pattern["vision"] - 0.65).abs() < 1e-12);
        let base = rows.iter().find(|r| r.cell.method == "baseline").unwrap();
        assert_eq!((base.runs, base.accuracy_std), (1, 0.0));
        assert_eq!(
            base.paired_f1, None,
            "the baseline is not paired with itself"
        );
        // Every MGR run has seeds (0, 0): each pairs with the one baseline run.
        let (m, _, n) = mgr.paired_f1.unwrap();
        assert_eq!(n, 4);
        assert!((m - (0.325 - 0.3)).abs() < 1e-12, "{m}");
    }

    /// Pairs are matched by (absence seed, seed): a run without a baseline partner is left
    /// out, and another backbone setting's baseline is not a partner.
    #[test]
    fn paired_differences_match_runs_by_their_seeds() {
        let cell = |m: &str, backbone: &str| Cell {
            method: m.into(),
            insertion: "-".into(),
            kappa: "0.7".into(),
            setting: String::new(),
            backbone: backbone.into(),
        };
        let run = |f1: f64, absence_seed: u64, seed: u64| {
            let mut r: RunResults = serde_json::from_value(serde_json::json!({
                "dataset": "synthetic", "method": "x", "kappa": 0.7, "absence_seed": absence_seed,
                "seed": seed, "accuracy": f1, "f1": f1, "n_test": 1, "per_pattern": {},
                "test_loss": 0.0, "best_epoch": 1, "best_valid_accuracy": 0.0, "epochs": 1,
                "device": "flex", "train_seconds": 0.0
            }))
            .unwrap();
            r.test.weighted_f1 = Some(f1 + 0.01);
            r
        };
        let results = vec![
            (cell("baseline", "frozen"), run(0.50, 0, 0)),
            (cell("baseline", "frozen"), run(0.60, 0, 1)),
            (cell("mgr", "frozen"), run(0.70, 0, 1)),
            (cell("mgr", "frozen"), run(0.52, 0, 0)),
            (cell("mgr", "frozen"), run(0.90, 1, 0)),
            (cell("baseline", "fine-tuned"), run(0.10, 1, 0)),
        ];
        let rows = aggregate(&results);
        let mgr = rows
            .iter()
            .find(|r| r.cell == cell("mgr", "frozen"))
            .unwrap();
        let (m, s, n) = mgr.paired_f1.unwrap();
        // pairs (0,1): +0.10, (0,0): +0.02; (1,0) has no frozen baseline
        assert_eq!(n, 2);
        assert!(
            (m - 0.06).abs() < 1e-12 && (s - 0.08 / 2f64.sqrt()).abs() < 1e-9,
            "{m} {s}"
        );
        let (w, _) = mgr.weighted_f1.unwrap();
        assert!((w - (0.70 + 0.52 + 0.90) / 3.0 - 0.01).abs() < 1e-12);
        let md = table_md("synthetic", &rows, 2);
        assert!(md.contains("| mgr [frozen] | - | 0.7 | 3 |"), "{md}");
        assert!(md.contains("+6.00 / 5.66 (2)"), "{md}");
    }

    #[test]
    fn sweep_is_parsed_and_its_points_ordered_by_value() {
        assert_eq!(
            parse_sweep("rho=0.3, 0.5,0.9").unwrap(),
            (
                "rho".to_string(),
                vec!["0.3".into(), "0.5".into(), "0.9".into()]
            )
        );
        assert!(parse_sweep("rho").is_err());
        assert!(parse_sweep("rho=").is_err());
        let row = |setting: &str, f1: f64| Row {
            cell: Cell {
                method: "mgr".into(),
                insertion: "token".into(),
                kappa: "0.7".into(),
                setting: setting.into(),
                backbone: String::new(),
            },
            runs: 1,
            accuracy_mean: f1,
            accuracy_std: 0.0,
            f1_mean: f1,
            f1_std: 0.0,
            weighted_f1: None,
            paired_f1: None,
            per_pattern: BTreeMap::new(),
        };
        // "10" sorts before "9" as text; the sweep orders numbers as numbers
        let rows = vec![
            row("refine_layers=10", 0.1),
            row("refine_layers=9", 0.2),
            row("", 0.3),
        ];
        let points = sweep_points("refine_layers", &rows);
        let values: Vec<&str> = points.iter().map(|p| p.value.as_str()).collect();
        assert_eq!(values, vec!["9", "10"]);
        assert_eq!(points[0].line, "mgr kappa 0.7");
        assert_eq!(points[0].row.f1_mean, 0.2);
    }

    #[test]
    fn a_sweep_trains_each_cell_once_per_value_in_its_own_folder() {
        let a = ProtocolArgs {
            dataset: "synthetic".into(),
            data_dir: None,
            methods: vec!["mgr".into()],
            insertions: vec!["token".into()],
            kappa: vec![0.7],
            absence_seeds: 1,
            seeds: 2,
            epochs: Some(1),
            sets: vec!["lr=0.002".into()],
            backbone: None,
            freeze: vec!["none".into()],
            lrs: Vec::new(),
            sweep: Some("rho=0.3,0.9".into()),
            devices: vec!["flex".into()],
            out: PathBuf::from("/tmp/p"),
            emit_jobs: None,
            job: None,
            collect: false,
        };
        let jobs = build_jobs(&a).unwrap();
        assert_eq!(jobs.len(), 4);
        let rhos: Vec<f64> = jobs.iter().map(|j| j.config.model.refinement.rho).collect();
        assert_eq!(rhos, vec![0.3, 0.3, 0.9, 0.9]);
        assert!(jobs.iter().all(|j| j.config.train.lr == 0.002));
        assert!(
            jobs[2]
                .dir
                .ends_with("runs/mgr-token/rho0.9/kappa0.7/a0-s0"),
            "{:?}",
            jobs[2].dir
        );
        assert_eq!(jobs[2].cell.setting, "rho=0.9");
        let bad = ProtocolArgs {
            sweep: Some("rhoo=0.3".into()),
            ..a
        };
        let err = format!("{:#}", build_jobs(&bad).unwrap_err());
        assert!(err.contains("rhoo"), "{err}");
    }
}
