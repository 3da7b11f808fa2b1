//! `mgr train`: one run, resumable, with checkpoints, reports and a final summary.

use anyhow::{Result, bail};
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use mgr::Model;
use mgr::absence::{AbsenceMask, SplitKind};
use mgr::train::{EVAL_BATCH, Evaluation, evaluate, init_model};
use std::path::Path;
use std::time::Instant;

use crate::checkpoint::{self, EpochRow, RunPaths, RunResults, RunState, TestMetrics, TrainState};
use crate::dataset::{self, Splits};
use crate::device::{self, DeviceChoice};
use crate::epochs::train_epoch;
use crate::fsutil::{Lock, kill_point, write_atomic};
use crate::progress;
use crate::runconfig::RunConfig;

/// Resolves the dataset-dependent fields and draws the three masks; fails before anything is
/// written.
pub fn prepare(mut rc: RunConfig) -> Result<(RunConfig, Splits, [AbsenceMask; 3])> {
    let splits = dataset::load(&rc)?;
    rc.model.modalities = splits.train.modalities.clone();
    rc.model.n_outputs = splits.train.targets.n_outputs();
    rc.model.task = splits.train.targets.task();
    rc.model.validate()?;
    let mask = |kind: SplitKind| {
        rc.absence
            .mask(&rc.model.modalities, splits.get(kind).len(), kind)
    };
    let masks = [
        mask(SplitKind::Train)?,
        mask(SplitKind::Valid)?,
        mask(SplitKind::Test)?,
    ];
    Ok((rc, splits, masks))
}

/// A run opened for training: its resolved settings, data, masks, folder and devices.
struct OpenRun {
    rc: RunConfig,
    splits: Splits,
    train_mask: AbsenceMask,
    valid_mask: AbsenceMask,
    test_mask: AbsenceMask,
    paths: RunPaths,
    /// Where evaluation runs, and the first training device.
    device: Device,
    device_name: String,
    /// The training devices (autodiff), one per data-parallel shard.
    train_devices: Vec<Device>,
    /// The run folder's lock, held while the run trains.
    _lock: Lock,
}

/// The parts of a run that each epoch advances.
struct Progress {
    model: Model,
    optimizer: ModuleOptimizer,
    state: TrainState,
}

/// Runs `mgr train`.
/// (The epoch loop, and why it is written out: [`train_epoch`].)
pub fn train(
    rc: RunConfig,
    out: &Path,
    device_choices: &[DeviceChoice],
    resume: bool,
    quiet: bool,
) -> Result<()> {
    let Some((run, mut progress)) = open(rc, out, device_choices, resume, quiet)? else {
        return Ok(());
    };
    let started = Instant::now();
    for epoch in progress.state.epochs_done..run.rc.train.epochs {
        progress = train_one_epoch(&run, progress, epoch, quiet)?;
    }
    finish(
        &run,
        &progress.state,
        started.elapsed().as_secs_f64(),
        quiet,
    )
}

/// Checks the settings, then opens the run folder under its lock, by what it holds
/// ([`RunState`]): an empty one, or with `resume` one stopped before its first checkpoint,
/// starts afresh (config, masks, the initial model); with `resume` a checkpointed one goes on
/// from its last checkpoint, and a finished one only if `--epochs` grew (None: nothing to do).
/// Without `resume` a folder holding a run is refused.
fn open(
    rc: RunConfig,
    out: &Path,
    device_choices: &[DeviceChoice],
    resume: bool,
    quiet: bool,
) -> Result<Option<(OpenRun, Progress)>> {
    let (rc, splits, [train_mask, valid_mask, test_mask]) = prepare(rc)?;
    let paths = RunPaths {
        root: out.to_path_buf(),
    };
    // A first look before anything is written: a folder that is not this run's is refused
    // untouched. Then, under the lock, the look that counts: another process may have moved
    // the run on in between.
    let first_look = look(&rc, &paths, resume)?;
    // Read and checked before the run folder is written: a bad source leaves nothing behind.
    let source = |fresh: bool| match &rc.init_from {
        Some(run) if fresh => checkpoint::init_source(&rc.model, run).map(Some),
        _ => Ok(None),
    };
    let mut init_source = source(first_look.is_fresh())?;
    let (devices, device_name) = device::select_all(device_choices, quiet)?;
    let train_devices: Vec<_> = devices.iter().map(|d| d.clone().autodiff()).collect();
    let lock = paths.lock()?;
    let state = look(&rc, &paths, resume)?;
    if state.is_fresh() && init_source.is_none() {
        init_source = source(true)?;
    }
    if let RunState::Finished { epochs_done } = state
        && epochs_done >= rc.train.epochs
    {
        if !quiet {
            eprintln!(
                "{} is finished ({epochs_done} epochs, {}): nothing to do",
                out.display(),
                paths.results().display()
            );
        }
        return Ok(None);
    }
    let run = OpenRun {
        rc,
        splits,
        train_mask,
        valid_mask,
        test_mask,
        paths,
        device: devices[0].clone(),
        device_name,
        train_devices,
        _lock: lock,
    };
    if state.is_fresh() {
        if state == RunState::Created && !quiet {
            eprintln!(
                "{} has no checkpoint yet (stopped before its first epoch was saved): starting it afresh",
                out.display()
            );
        }
        let progress = start_new(&run, init_source, quiet)?;
        return Ok(Some((run, progress)));
    }
    let progress = resume_checkpoint(&run, quiet)?;
    Ok(Some((run, progress)))
}

/// The last checkpoint of a run opened for more epochs (or killed after one): the config
/// rewritten with the new number of epochs, the model, optimizer and log loaded, the old
/// results removed.
fn resume_checkpoint(run: &OpenRun, quiet: bool) -> Result<Progress> {
    write_atomic(
        &run.paths.config(),
        serde_json::to_string_pretty(&run.rc)?.as_bytes(),
    )?;
    let (state, model, optimizer) = checkpoint::load(
        &run.paths,
        &run.rc,
        run.rc.train.optimizer(),
        &run.train_devices[0],
    )?;
    if !quiet {
        eprintln!(
            "resuming {} after epoch {}",
            run.paths.root.display(),
            state.epochs_done
        );
    }
    let _ = std::fs::remove_file(run.paths.results());
    Ok(Progress {
        model: model.freeze(run.rc.freeze),
        optimizer,
        state,
    })
}

/// The run folder's state, checked against what this command may do with it: without
/// `resume` it must hold no run; with it, a run there must have been started with these
/// settings (only the number of epochs may differ). Reads only.
fn look(rc: &RunConfig, paths: &RunPaths, resume: bool) -> Result<RunState> {
    if !resume {
        if paths.config().exists() {
            bail!(
                "{} already holds a run; use --resume to continue it or another --out",
                paths.root.display()
            );
        }
        return Ok(RunState::Empty);
    }
    let state = paths.state()?;
    if state != RunState::Empty {
        let mut saved = crate::runconfig::load(&paths.root)?;
        saved.train.epochs = rc.train.epochs;
        if serde_json::to_value(&saved)? != serde_json::to_value(rc)? {
            bail!(
                "--resume: the settings differ from {}; resume with the same command (only --epochs may change)",
                paths.config().display()
            );
        }
    }
    Ok(state)
}

/// A new run folder: the config and the three masks, and the initial model (from `init_source`'s
/// tokenizers and encoder where given).
fn start_new(
    run: &OpenRun,
    init_source: Option<checkpoint::InitSource>,
    quiet: bool,
) -> Result<Progress> {
    let (rc, paths) = (&run.rc, &run.paths);
    std::fs::create_dir_all(&paths.root)?;
    write_atomic(
        &paths.config(),
        serde_json::to_string_pretty(rc)?.as_bytes(),
    )?;
    for (name, mask) in [
        ("train", &run.train_mask),
        ("valid", &run.valid_mask),
        ("test", &run.test_mask),
    ] {
        write_atomic(&paths.mask(name), mask.to_csv().as_bytes())?;
    }
    let mut model = init_model(&rc.model, rc.train.seed, &run.device)?
        .with_execution(rc.train.execution_policy());
    if let Some(source) = init_source {
        let from = source.path.clone();
        let count;
        (model, count) = source.apply(model)?;
        if !quiet {
            eprintln!(
                "tokenizers and encoder from {from} ({count} tensors){}",
                match rc.freeze {
                    mgr::Freeze::Backbone => ", frozen",
                    mgr::Freeze::None => ", fine-tuned",
                }
            );
        }
    }
    let model = model.freeze(rc.freeze);
    if !quiet {
        let counts = model.param_counts(rc.freeze);
        eprintln!(
            "{}: {} parameters trained, {} frozen",
            rc.model.method, counts.trainable, counts.frozen
        );
    }
    Ok(Progress {
        model,
        optimizer: rc.train.optimizer(),
        state: TrainState::default(),
    })
}

/// One epoch: train, validate, keep the best model, log the row, checkpoint.
fn train_one_epoch(
    run: &OpenRun,
    progress: Progress,
    epoch: usize,
    quiet: bool,
) -> Result<Progress> {
    let Progress {
        model,
        mut optimizer,
        mut state,
    } = progress;
    let rc = &run.rc;
    let t0 = Instant::now();
    // As many steps as train_epoch's batches of its shuffled order.
    let steps = run.splits.train.len().div_ceil(rc.train.batch_size);
    let bar = progress::bar(
        steps as u64,
        format!("epoch {}/{}", epoch + 1, rc.train.epochs),
    );
    let first_epoch_loss = state.rows.first().map(|row| row.train_loss);
    let trained = train_epoch(
        model,
        &mut optimizer,
        &rc.train,
        &run.splits.train,
        &run.train_mask,
        epoch,
        first_epoch_loss,
        &run.train_devices,
        |_, _, l| {
            kill_point("step");
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", l.total));
        },
    );
    bar.finish_and_clear();
    let (model, losses) = trained.map_err(|e| diverged(e, &state, &run.paths))?;
    let valid = evaluate(
        &model,
        &run.splits.valid,
        &run.valid_mask,
        rc.train.batch_size.max(128),
        &run.device,
    );
    let row = EpochRow {
        epoch: epoch + 1,
        train_loss: losses.total,
        train_task_loss: losses.task,
        l_div: losses.div,
        valid_loss: valid.loss,
        valid_accuracy: valid.overall.accuracy,
        valid_f1: valid.overall.f1,
        seconds: t0.elapsed().as_secs_f64(),
    };
    if !quiet {
        print_epoch(&row, rc.train.epochs);
    }
    if state.best_epoch == 0 || row.valid_accuracy > state.best_valid_accuracy {
        state.best_epoch = row.epoch;
        state.best_valid_accuracy = row.valid_accuracy;
        checkpoint::save_model(&model, &run.paths.best())?;
    }
    state.rows.push(row);
    state.epochs_done = epoch + 1;
    run.paths.write_metrics(&state.rows)?;
    checkpoint::save(&run.paths, &model, &optimizer, &state)?;
    Ok(Progress {
        model,
        optimizer,
        state,
    })
}

/// The error of a diverged epoch: what was kept, and what to change.
fn diverged(e: mgr::MgrError, state: &TrainState, paths: &RunPaths) -> anyhow::Error {
    let kept = if state.epochs_done == 0 {
        "no epoch finished, so there is no checkpoint".to_string()
    } else {
        format!(
            "the checkpoint of epoch {} (the last good one) is kept in {}",
            state.epochs_done,
            paths.root.display()
        )
    };
    anyhow::anyhow!(
        "{e}; {kept}; no results.json is written (lower train.lr, or raise train.divergence_factor if the loss is expected to grow)"
    )
}

fn print_epoch(row: &EpochRow, epochs: usize) {
    eprintln!(
        "epoch {:>3}/{}: loss {:.4} (task {:.4}, L_div {:.4}) valid acc {:.4} f1 {:.4} [{:.1}s]",
        row.epoch,
        epochs,
        row.train_loss,
        row.train_task_loss,
        row.l_div,
        row.valid_accuracy,
        row.valid_f1,
        row.seconds
    );
}

/// Tests the best epoch's model and writes `results.json` (last: its presence marks the run
/// finished).
fn finish(run: &OpenRun, state: &TrainState, seconds: f64, quiet: bool) -> Result<()> {
    let rc = &run.rc;
    let best = checkpoint::load_model(rc, &run.paths.best(), &run.device)?;
    let test = evaluate(
        &best,
        &run.splits.test,
        &run.test_mask,
        EVAL_BATCH,
        &run.device,
    );
    let counts = best.param_counts(rc.freeze);
    let mut results = run_results(rc, &test, state, counts, &run.device_name, seconds);
    results.ranking = crate::commands::ranking_report(rc, &best, &run.splits.test, &run.device)?;
    run.paths.write_results(&results)?;
    if !quiet {
        print_summary(rc, &test, state);
        if let Some(report) = &results.ranking {
            crate::commands::print_ranking(report);
        }
        eprintln!("wrote {}", run.paths.results().display());
    }
    Ok(())
}

/// `results.json` without the ranking: test metrics overall and per absence pattern.
pub fn run_results(
    rc: &RunConfig,
    test: &Evaluation,
    state: &TrainState,
    counts: mgr::ParamCounts,
    device: &str,
    seconds: f64,
) -> RunResults {
    RunResults {
        dataset: rc.dataset.clone(),
        method: rc.model.method.name().to_string(),
        kappa: rc.absence.kappa,
        absence_seed: rc.absence.seed,
        seed: rc.train.seed,
        test: TestMetrics::of(test),
        test_loss: test.loss,
        best_epoch: state.best_epoch,
        best_valid_accuracy: state.best_valid_accuracy,
        epochs: state.epochs_done,
        device: device.to_string(),
        train_seconds: seconds,
        backbone: rc.init_from.as_ref().map(|p| p.display().to_string()),
        freeze: rc.freeze,
        trainable_params: Some(counts.trainable),
        frozen_params: Some(counts.frozen),
        ranking: None,
    }
}

fn print_summary(rc: &RunConfig, test: &Evaluation, state: &TrainState) {
    eprintln!();
    eprintln!(
        "{:<28} {:>9} {:>9} {:>7}",
        format!(
            "{} / {} / kappa {}",
            rc.dataset, rc.model.method, rc.absence.kappa
        ),
        "accuracy",
        "F1",
        "n"
    );
    eprintln!("{}", "-".repeat(56));
    eprintln!(
        "{:<28} {:>9.4} {:>9.4} {:>7}",
        "test (all)", test.overall.accuracy, test.overall.f1, test.overall.n
    );
    for (pattern, m) in &test.per_pattern {
        eprintln!(
            "{:<28} {:>9.4} {:>9.4} {:>7}",
            format!("  {pattern}"),
            m.accuracy,
            m.f1,
            m.n
        );
    }
    eprintln!(
        "{:<28} {:>9.4} {:>9} {:>7}",
        format!("valid (best, epoch {})", state.best_epoch),
        state.best_valid_accuracy,
        "",
        ""
    );
}
