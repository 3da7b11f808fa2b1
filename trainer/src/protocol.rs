//! `mgr protocol`: the paper's protocol. Every (method, insertion type, kappa) cell is trained
//! with absence seeds x training seeds (4 x 4 = 16 runs in the paper); finished runs are
//! skipped, interrupted ones resumed; the tables report mean and sample standard deviation of
//! accuracy and F1 per cell (Tables 1-2, 5-8), with plots.

use anyhow::{Context, Result, bail};
use mgr::metrics::mean_std;
use mgr::{Method, PromptInsertion};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::device::{self, DeviceChoice};
use crate::fsutil::write_atomic;
use crate::runconfig::{RunConfig, set_key};
use crate::{plots, train_cmd};

/// Flags of `mgr protocol`.
#[derive(clap::Args)]
pub struct ProtocolArgs {
    /// Dataset (as `mgr train`).
    #[arg(long, default_value = "synthetic")]
    pub dataset: String,
    /// Dataset folder or file.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Methods, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "baseline,maps,msps,mgr")]
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
    /// Workers, one per entry, each on its device: e.g. `wgpu:0,wgpu:1` (one run on each
    /// GPU at a time) or `flex,flex` (two CPU runs). Independent runs go to whichever worker is
    /// free. An entry joining devices with `+` (`wgpu:0+wgpu:1,wgpu:2+wgpu:3`) is one worker
    /// that trains each run data-parallel over its devices.
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    pub devices: Vec<String>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
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

/// A table cell: method, insertion type, kappa.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cell {
    /// Method name.
    pub method: String,
    /// Prompt insertion type (MGR methods only; "-" otherwise).
    pub insertion: String,
    /// kappa, as written.
    pub kappa: String,
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
    /// Mean accuracy per absence pattern.
    pub per_pattern: BTreeMap<String, f64>,
}

/// Aggregates finished runs' results: mean and sample standard deviation per cell.
pub fn aggregate(results: &[(Cell, serde_json::Value)]) -> Vec<Row> {
    let mut by_cell: BTreeMap<Cell, Vec<&serde_json::Value>> = BTreeMap::new();
    for (cell, r) in results {
        by_cell.entry(cell.clone()).or_default().push(r);
    }
    by_cell
        .into_iter()
        .map(|(cell, rs)| {
            let get = |k: &str| rs.iter().filter_map(|r| r[k].as_f64()).collect::<Vec<_>>();
            let (accuracy_mean, accuracy_std) = mean_std(&get("accuracy"));
            let (f1_mean, f1_std) = mean_std(&get("f1"));
            let mut patterns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in &rs {
                if let Some(pp) = r["per_pattern"].as_object() {
                    for (k, v) in pp {
                        if let Some(a) = v["accuracy"].as_f64() {
                            patterns.entry(k.clone()).or_default().push(a);
                        }
                    }
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
                per_pattern,
            }
        })
        .collect()
}

fn build_jobs(a: &ProtocolArgs) -> Result<Vec<Job>> {
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
            for &kappa in &a.kappa {
                if !(0.0..=1.0).contains(&kappa) {
                    bail!("--kappa {kappa} is outside [0, 1]");
                }
                let cell = Cell {
                    method: method.clone(),
                    insertion: insertion.clone(),
                    kappa: format!("{kappa}"),
                };
                for absence_seed in 0..a.absence_seeds {
                    for seed in 0..a.seeds {
                        let mut v = serde_json::to_value(RunConfig::default())?;
                        set_key(&mut v, "dataset", &serde_json::to_string(&a.dataset)?)?;
                        if let Some(d) = &a.data_dir {
                            set_key(&mut v, "data_dir", &serde_json::to_string(d)?)?;
                        }
                        set_key(&mut v, "model.method", &serde_json::to_string(method)?)?;
                        if insertion != "-" {
                            set_key(
                                &mut v,
                                "model.prompt_insertion",
                                &serde_json::to_string(&insertion)?,
                            )?;
                        }
                        set_key(&mut v, "absence.kappa", &kappa.to_string())?;
                        set_key(&mut v, "absence.seed", &absence_seed.to_string())?;
                        set_key(&mut v, "train.seed", &seed.to_string())?;
                        if let Some(e) = a.epochs {
                            set_key(&mut v, "train.epochs", &e.to_string())?;
                        }
                        for s in &a.sets {
                            let (k, raw) = s.split_once('=').ok_or_else(|| {
                                anyhow::anyhow!("--set `{s}`: expected KEY=VALUE")
                            })?;
                            set_key(&mut v, k.trim(), raw.trim())?;
                        }
                        let config = crate::runconfig::finish(v)?;
                        let ins = if insertion == "-" {
                            String::new()
                        } else {
                            format!("-{insertion}")
                        };
                        let dir = a
                            .out
                            .join("runs")
                            .join(format!("{method}{ins}"))
                            .join(format!("kappa{kappa}"))
                            .join(format!("a{absence_seed}-s{seed}"));
                        jobs.push(Job {
                            cell: cell.clone(),
                            absence_seed,
                            seed,
                            dir,
                            config,
                        });
                    }
                }
            }
        }
    }
    Ok(jobs)
}

/// Runs `mgr protocol`.
pub fn run(a: &ProtocolArgs) -> Result<()> {
    let jobs = build_jobs(a)?;
    let devices: Vec<Vec<DeviceChoice>> = a
        .devices
        .iter()
        .map(|d| device::parse_group(d).with_context(|| format!("--devices `{d}`")))
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let pending: Vec<&Job> = jobs
        .iter()
        .filter(|j| !j.dir.join("results.json").is_file())
        .collect();
    eprintln!(
        "protocol: {} runs, {} finished, {} to do on {} worker(s)",
        jobs.len(),
        jobs.len() - pending.len(),
        pending.len(),
        devices.len()
    );
    let queue = Mutex::new(pending.into_iter());
    let failures = Mutex::new(Vec::new());
    let done = Mutex::new(0usize);
    std::thread::scope(|scope| {
        for device in &devices {
            let (queue, failures, done) = (&queue, &failures, &done);
            scope.spawn(move || {
                loop {
                    let Some(job) = queue.lock().expect("queue").next() else {
                        break;
                    };
                    let resume = job.dir.join("config.json").is_file();
                    let t = std::time::Instant::now();
                    let result = train_cmd::run(job.config.clone(), &job.dir, device, resume, true);
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
    let failures = failures.into_inner().expect("failures");
    write_tables(a, &jobs)?;
    if !failures.is_empty() {
        bail!("{} run(s) failed: {}", failures.len(), failures.join("; "));
    }
    Ok(())
}

fn read_results(jobs: &[Job]) -> Vec<(Cell, serde_json::Value, PathBuf)> {
    jobs.iter()
        .filter_map(|j| {
            let text = std::fs::read_to_string(j.dir.join("results.json")).ok()?;
            Some((
                j.cell.clone(),
                serde_json::from_str(&text).ok()?,
                j.dir.clone(),
            ))
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
    let mut csv =
        String::from("method,insertion,kappa,runs,accuracy_mean,accuracy_std,f1_mean,f1_std\n");
    let mut md = format!(
        "# {} : mean / sample std over absence seeds x training seeds\n\n| method | insertion | kappa | runs | accuracy | F1 |\n|---|---|---|---|---|---|\n",
        a.dataset
    );
    for r in &rows {
        csv.push_str(&format!(
            "{},{},{},{},{:.6},{:.6},{:.6},{:.6}\n",
            r.cell.method,
            r.cell.insertion,
            r.cell.kappa,
            r.runs,
            r.accuracy_mean,
            r.accuracy_std,
            r.f1_mean,
            r.f1_std
        ));
        let partial = if r.runs < expected_runs {
            format!(" (of {expected_runs})")
        } else {
            String::new()
        };
        md.push_str(&format!(
            "| {} | {} | {} | {}{partial} | {:.2} / {:.2} | {:.2} / {:.2} |\n",
            r.cell.method,
            r.cell.insertion,
            r.cell.kappa,
            r.runs,
            100.0 * r.accuracy_mean,
            100.0 * r.accuracy_std,
            100.0 * r.f1_mean,
            100.0 * r.f1_std
        ));
    }
    if two_modal && a.kappa.contains(&1.0) {
        md.push_str("\nkappa = 1 on a two-modality dataset leaves every sample a single modality (the paper omits it for AV-MNIST); it was run because it was asked for.\n");
    }
    let sweeps = plots::kappa_sweeps(&results)?;
    let mut sweep_csv = String::from("method,run,kappa,accuracy\n");
    for line in &sweeps {
        for (kappa, accuracy) in &line.points {
            sweep_csv.push_str(&format!(
                "{},{},{kappa:.1},{accuracy:.6}\n",
                line.name,
                line.run.display()
            ));
        }
    }
    write_atomic(&a.out.join("accuracy-vs-kappa.csv"), sweep_csv.as_bytes())?;
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
    write_atomic(&a.out.join("table.csv"), csv.as_bytes())?;
    write_atomic(&a.out.join("table.md"), md.as_bytes())?;
    write_atomic(
        &a.out.join("table.json"),
        serde_json::to_string_pretty(&rows)?.as_bytes(),
    )?;
    eprintln!("wrote {}", a.out.join("table.md").display());
    print!("{md}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aggregation_is_mean_and_sample_std_per_cell() {
        let cell = |m: &str| Cell {
            method: m.into(),
            insertion: "-".into(),
            kappa: "0.7".into(),
        };
        let accs = [0.5, 0.6, 0.7, 0.8];
        let mut results: Vec<(Cell, serde_json::Value)> = accs
            .iter()
            .map(|&a| (cell("mgr"), json!({"accuracy": a, "f1": a / 2.0, "per_pattern": {"vision": {"accuracy": a}}})))
            .collect();
        results.push((
            cell("baseline"),
            json!({"accuracy": 0.4, "f1": 0.3, "per_pattern": {}}),
        ));
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
    }
}
