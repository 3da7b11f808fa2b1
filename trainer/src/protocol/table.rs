//! The protocol's outputs: `table.md`, `table.csv`, `table.json`, `accuracy-vs-kappa.csv`,
//! a sweep's `sweep.md` / `sweep.csv`, and the plots, from the finished runs' results.

use anyhow::Result;
use std::path::PathBuf;

use super::ProtocolArgs;
use super::cells::{Cell, Row, aggregate, parse_sweep, sweep_points};
use super::jobs::Job;
use crate::checkpoint::{RunPaths, RunResults};
use crate::fsutil::write_atomic;
use crate::plots;

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

pub(super) fn write_tables(a: &ProtocolArgs, jobs: &[Job]) -> Result<()> {
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
pub(super) fn table_md(dataset: &str, rows: &[Row], expected_runs: usize) -> String {
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
