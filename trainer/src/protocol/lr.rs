//! `--lrs`: each cell's learning rate chosen on validation from its first run, trained once
//! per rate (`lr-selection.md`, `.json`).

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};

use super::ProtocolArgs;
use super::cells::Cell;
use super::jobs::{Job, train_jobs};
use crate::checkpoint::RunPaths;
use crate::device::DeviceChoice;
use crate::fsutil::write_atomic;

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
pub(super) fn select_lrs(
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
