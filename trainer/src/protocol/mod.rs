//! `mgr protocol`: the paper's protocol. Every (method, insertion type, kappa) cell is trained
//! with absence seeds x training seeds (4 x 4 = 16 runs in the paper); finished runs are
//! skipped, interrupted ones resumed; the tables report mean and sample standard deviation of
//! accuracy and F1 per cell (Tables 1-2, 5-8), with plots.
//!
//! On a cluster: `--emit-jobs slurm|shell` writes one command per run (`--job N`, each writing
//! its own run folder) instead of training, and `--collect` builds the same tables from the
//! folders once the jobs are done.

pub(crate) mod cells;
mod jobs;
mod lr;
mod table;

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

use crate::device::{self, DeviceChoice};
use crate::fsutil::{Lock, LockKind, remove_stale_temps, try_lock};
use jobs::{Job, build_jobs, emit_jobs, train_jobs};
use lr::select_lrs;
use table::write_tables;

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

#[cfg(test)]
mod tests {
    use super::cells::{Cell, Row, aggregate, parse_sweep, sweep_points};
    use super::jobs::shell_quote;
    use super::table::table_md;
    use super::*;
    use crate::checkpoint::RunResults;
    use crate::checkpoint::TestMetrics;
    use std::collections::BTreeMap;

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
