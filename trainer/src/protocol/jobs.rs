//! The protocol's runs: one job per cell, absence seed and training seed, each a `mgr train`
//! folder under `--out`; the workers that train them, one per device group; and the job scripts
//! of `--emit-jobs` for a cluster.

use anyhow::{Context, Result, bail};
use mgr::{Method, PromptInsertion};
use std::path::PathBuf;
use std::sync::Mutex;

use super::cells::{Cell, backbone_label, parse_sweep};
use super::{JobScript, ProtocolArgs};
use crate::checkpoint::RunPaths;
use crate::device::DeviceChoice;
use crate::fsutil::write_atomic;
use crate::run;
use crate::runconfig::{RunConfig, set_key};

/// One run of the protocol.
#[derive(Clone, Debug)]
pub(super) struct Job {
    pub(super) cell: Cell,
    pub(super) absence_seed: u64,
    pub(super) seed: u64,
    pub(super) dir: PathBuf,
    pub(super) config: RunConfig,
}

impl Job {
    /// `results.json` of its run folder, whose presence marks a finished run.
    pub(super) fn results(&self) -> PathBuf {
        RunPaths {
            root: self.dir.clone(),
        }
        .results()
    }
}

pub(super) fn build_jobs(a: &ProtocolArgs) -> Result<Vec<Job>> {
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

/// Trains `pending` with one worker per device group, each taking the next job when free (an
/// interrupted run resumes); returns the failures, one line each.
pub(super) fn train_jobs(pending: Vec<&Job>, devices: &[Vec<DeviceChoice>]) -> Vec<String> {
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
pub(super) fn emit_jobs(a: &ProtocolArgs, format: JobScript, n: usize) -> Result<()> {
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
pub(super) fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
