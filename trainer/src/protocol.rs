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
use std::path::PathBuf;
use std::sync::Mutex;

use crate::checkpoint::{RunPaths, RunResults};
use crate::device::{self, DeviceChoice};
use crate::fsutil::write_atomic;
use crate::runconfig::{RunConfig, set_key};
use crate::{plots, train_cmd};

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
    /// Sensitivity sweep (the paper's Fig. 4): one config key (any `--set` key) and its values,
    /// e.g. `rho=0.3,0.5,0.7,0.9` or `refine_layers=1,2,3`. Every cell is trained once per
    /// value; `sweep.md` / `sweep.csv` and `plots/sweep-KEY` give F1 against the value.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    pub sweep: Option<String>,
    /// Workers, one per entry, each on its device: e.g. `wgpu:0,wgpu:1` (one run on each
    /// GPU at a time) or `flex,flex` (two CPU runs). Independent runs go to whichever worker is
    /// free. An entry joining devices with `+` (`wgpu:0+wgpu:1,wgpu:2+wgpu:3`) is one worker
    /// that trains each run data-parallel over its devices.
    #[arg(long, value_delimiter = ',', default_value = "auto")]
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
}

impl Cell {
    /// Method, with its insertion type when not the default and the swept setting.
    pub fn label(&self) -> String {
        let mut name = self.method.clone();
        if self.insertion != "-" && self.insertion != "token" {
            name.push_str(&format!(" ({})", self.insertion));
        }
        if !self.setting.is_empty() {
            name.push_str(&format!(" {}", self.setting));
        }
        name
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
    /// Mean accuracy per absence pattern.
    pub per_pattern: BTreeMap<String, f64>,
}

/// Aggregates finished runs' results: mean and sample standard deviation per cell.
pub fn aggregate(results: &[(Cell, RunResults)]) -> Vec<Row> {
    let mut by_cell: BTreeMap<Cell, Vec<&RunResults>> = BTreeMap::new();
    for (cell, r) in results {
        by_cell.entry(cell.clone()).or_default().push(r);
    }
    by_cell
        .into_iter()
        .map(|(cell, rs)| {
            let get = |f: fn(&RunResults) -> f64| rs.iter().map(|r| f(r)).collect::<Vec<_>>();
            let (accuracy_mean, accuracy_std) = mean_std(&get(|r| r.test.accuracy));
            let (f1_mean, f1_std) = mean_std(&get(|r| r.test.f1));
            let mut patterns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in &rs {
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
                mgr::absence::AbsenceConfig::check_kappa(kappa).context("--kappa")?;
                let cell = Cell {
                    method: method.clone(),
                    insertion: insertion.clone(),
                    kappa: format!("{kappa}"),
                    setting: setting.map(|(k, v)| format!("{k}={v}")).unwrap_or_default(),
                };
                for absence_seed in 0..a.absence_seeds {
                    for seed in 0..a.seeds {
                        jobs.push(job(a, &cell, kappa, absence_seed, seed, setting)?);
                    }
                }
            }
        }
    }
    Ok(jobs)
}

/// One run of `cell`: its config (the defaults, the cell, the seeds, `--epochs`, `--set`, the
/// swept setting) and its folder under `--out`.
fn job(
    a: &ProtocolArgs,
    cell: &Cell,
    kappa: f64,
    absence_seed: u64,
    seed: u64,
    setting: Option<&(String, String)>,
) -> Result<Job> {
    let (method, insertion) = (&cell.method, &cell.insertion);
    let mut rc = RunConfig {
        dataset: a.dataset.clone(),
        data_dir: a.data_dir.clone(),
        ..RunConfig::default()
    };
    rc.model.method = method.parse()?;
    if insertion != "-" {
        rc.model.prompt_insertion = insertion.parse()?;
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

/// Runs `mgr protocol`.
pub fn run(a: &ProtocolArgs) -> Result<()> {
    let jobs = build_jobs(a)?;
    if let Some(format) = a.emit_jobs {
        return emit_jobs(a, format, jobs.len());
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
    let devices: Vec<Vec<DeviceChoice>> = a
        .devices
        .iter()
        .map(|d| device::parse_group(d).with_context(|| format!("--devices `{d}`")))
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
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
        let method = if r.cell.setting.is_empty() {
            r.cell.method.clone()
        } else {
            format!("{} {}", r.cell.method, r.cell.setting)
        };
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

/// The head and table of `table.md`: one line per cell, percentages, cells with fewer
/// finished runs than `expected_runs` marked.
fn table_md(dataset: &str, rows: &[Row], expected_runs: usize) -> String {
    let mut md = format!(
        "# {dataset} : mean / sample std over absence seeds x training seeds\n\n| method | insertion | kappa | runs | accuracy | F1 |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let partial = if r.runs < expected_runs {
            format!(" (of {expected_runs})")
        } else {
            String::new()
        };
        let method = if r.cell.setting.is_empty() {
            r.cell.method.clone()
        } else {
            format!("{} ({})", r.cell.method, r.cell.setting)
        };
        md.push_str(&format!(
            "| {} | {} | {} | {}{partial} | {:.2} / {:.2} | {:.2} / {:.2} |\n",
            method,
            r.cell.insertion,
            r.cell.kappa,
            r.runs,
            100.0 * r.accuracy_mean,
            100.0 * r.accuracy_std,
            100.0 * r.f1_mean,
            100.0 * r.f1_std
        ));
    }
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
            },
            runs: 1,
            accuracy_mean: f1,
            accuracy_std: 0.0,
            f1_mean: f1,
            f1_std: 0.0,
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
            sweep: Some("rho=0.3,0.9".into()),
            devices: vec!["flex".into()],
            out: PathBuf::from("/tmp/p"),
            emit_jobs: None,
            job: None,
            collect: false,
        };
        let jobs = build_jobs(&a).unwrap();
        assert_eq!(jobs.len(), 4);
        let rhos: Vec<f64> = jobs.iter().map(|j| j.config.model.rho).collect();
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
