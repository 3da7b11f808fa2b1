//! `mgr train`: one run, resumable, with checkpoints, reports and a final summary.

use anyhow::{Result, bail};
use mgr::absence::{AbsenceMask, SplitKind};
use mgr::metrics::Metrics;
use mgr::train::{Evaluation, evaluate, init_model, train_epoch};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

use crate::checkpoint::{self, EpochRow, RunPaths, TrainState};
use crate::dataset::{self, Splits};
use crate::device::{self, DeviceChoice};
use crate::fsutil::write_atomic;
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

/// Runs `mgr train`.
pub fn run(
    rc: RunConfig,
    out: &Path,
    device_choices: &[DeviceChoice],
    resume: bool,
    quiet: bool,
) -> Result<()> {
    let (rc, splits, [train_mask, valid_mask, test_mask]) = prepare(rc)?;
    let paths = RunPaths {
        root: out.to_path_buf(),
    };
    // Read and checked before the run folder exists: a bad source leaves nothing behind.
    let init_source = match &rc.init_from {
        Some(run) if !resume => Some(checkpoint::init_source(&rc.model, run)?),
        _ => None,
    };
    if resume {
        let mut saved = crate::runconfig::load(out)?;
        saved.train.epochs = rc.train.epochs; // resuming may extend the run
        if serde_json::to_value(&saved)? != serde_json::to_value(&rc)? {
            bail!(
                "--resume: the settings differ from {}; resume with the same command (only --epochs may change)",
                paths.config().display()
            );
        }
        write_atomic(
            &paths.config(),
            serde_json::to_string_pretty(&rc)?.as_bytes(),
        )?;
    } else if paths.config().exists() {
        bail!(
            "{} already holds a run; use --resume to continue it or another --out",
            out.display()
        );
    }
    let (devices, device_name) = device::select_all(device_choices, quiet)?;
    let device = devices[0].clone();
    let train_devices: Vec<_> = devices.iter().map(|d| d.clone().autodiff()).collect();
    let train_device = train_devices[0].clone();

    let mut optimizer = rc.train.optimizer();
    let (mut state, mut model) = if resume {
        let (state, model, opt) = checkpoint::load(&paths, &rc.model, optimizer, &train_device)?;
        optimizer = opt;
        if !quiet {
            eprintln!(
                "resuming {} after epoch {}",
                out.display(),
                state.epochs_done
            );
        }
        (state, model)
    } else {
        std::fs::create_dir_all(out)?;
        write_atomic(
            &paths.config(),
            serde_json::to_string_pretty(&rc)?.as_bytes(),
        )?;
        for (name, mask) in [
            ("train", &train_mask),
            ("valid", &valid_mask),
            ("test", &test_mask),
        ] {
            write_atomic(&paths.mask(name), mask.to_csv().as_bytes())?;
        }
        let mut model = init_model(&rc.model, rc.train.seed, &device)?;
        if let Some(source) = init_source {
            let from = source.path.clone();
            let count;
            (model, count) = source.apply(model)?;
            if !quiet {
                eprintln!("tokenizers and encoder from {from} ({count} tensors)");
            }
        }
        (TrainState::default(), model)
    };
    let _ = std::fs::remove_file(paths.results());

    let started = Instant::now();
    for epoch in state.epochs_done..rc.train.epochs {
        let t0 = Instant::now();
        let steps = rc
            .train
            .epoch_order(splits.train.len(), epoch)
            .chunks(rc.train.batch_size)
            .count();
        let bar = progress::bar(
            steps as u64,
            format!("epoch {}/{}", epoch + 1, rc.train.epochs),
        );
        let first_epoch_loss = state.rows.first().map(|row| row.train_loss);
        let trained = train_epoch(
            model,
            &mut optimizer,
            &rc.train,
            &splits.train,
            &train_mask,
            epoch,
            first_epoch_loss,
            &train_devices,
            |_, _, l| {
                bar.inc(1);
                bar.set_message(format!("loss {:.4}", l.total));
            },
        );
        bar.finish_and_clear();
        let (next, losses) = trained.map_err(|e| {
            let kept = if state.epochs_done == 0 {
                "no epoch finished, so there is no checkpoint".to_string()
            } else {
                format!(
                    "the checkpoint of epoch {} (the last good one) is kept in {}",
                    state.epochs_done,
                    out.display()
                )
            };
            anyhow::anyhow!(
                "{e}; {kept}; no results.json is written (lower train.lr, or raise train.divergence_factor if the loss is expected to grow)"
            )
        })?;
        model = next;
        let valid = evaluate(
            &model,
            &splits.valid,
            &valid_mask,
            rc.train.batch_size.max(128),
            &device,
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
            eprintln!(
                "epoch {:>3}/{}: loss {:.4} (task {:.4}, L_div {:.4}) valid acc {:.4} f1 {:.4} [{:.1}s]",
                row.epoch,
                rc.train.epochs,
                row.train_loss,
                row.train_task_loss,
                row.l_div,
                row.valid_accuracy,
                row.valid_f1,
                row.seconds
            );
        }
        if state.best_epoch == 0 || row.valid_accuracy > state.best_valid_accuracy {
            state.best_epoch = row.epoch;
            state.best_valid_accuracy = row.valid_accuracy;
            checkpoint::save_model(&model, &paths.best())?;
        }
        state.rows.push(row);
        state.epochs_done = epoch + 1;
        write_atomic(
            &paths.metrics(),
            checkpoint::metrics_csv(&state.rows).as_bytes(),
        )?;
        checkpoint::save(&paths, &model, &optimizer, &state)?;
    }

    let best = checkpoint::load_model(&rc.model, &paths.best(), &device)?;
    let test = evaluate(&best, &splits.test, &test_mask, 256, &device);
    let mut results = results_json(
        &rc,
        &test,
        &state,
        &device_name,
        started.elapsed().as_secs_f64(),
    );
    let ranking = crate::commands::ranking_report(&rc, &best, &splits.test, &device)?;
    if let Some(report) = &ranking {
        results["ranking"] = serde_json::json!(report);
    }
    write_atomic(
        &paths.results(),
        serde_json::to_string_pretty(&results)?.as_bytes(),
    )?;
    if !quiet {
        print_summary(&rc, &test, &state);
        if let Some(report) = &ranking {
            crate::commands::print_ranking(report);
        }
        eprintln!("wrote {}", paths.results().display());
    }
    Ok(())
}

fn metrics_json(m: &Metrics) -> serde_json::Value {
    let mut v = json!({"accuracy": m.accuracy, "f1": m.f1, "n": m.n});
    if let (Some(mae), Some(corr)) = (m.mae, m.corr) {
        v["mae"] = json!(mae);
        v["corr"] = json!(corr);
    }
    v
}

/// `results.json`: test metrics overall and per absence pattern.
pub fn results_json(
    rc: &RunConfig,
    test: &Evaluation,
    state: &TrainState,
    device: &str,
    seconds: f64,
) -> serde_json::Value {
    let mut v = json!({
        "dataset": rc.dataset,
        "method": rc.model.method.name(),
        "kappa": rc.absence.kappa,
        "absence_seed": rc.absence.seed,
        "seed": rc.train.seed,
        "accuracy": test.overall.accuracy,
        "f1": test.overall.f1,
        "n_test": test.overall.n,
        "test_loss": test.loss,
        "per_pattern": test.per_pattern.iter().map(|(k, m)| (k.clone(), metrics_json(m))).collect::<serde_json::Map<_, _>>(),
        "best_epoch": state.best_epoch,
        "best_valid_accuracy": state.best_valid_accuracy,
        "epochs": state.epochs_done,
        "device": device,
        "train_seconds": seconds,
    });
    if let (Some(mae), Some(corr)) = (test.overall.mae, test.overall.corr) {
        v["mae"] = json!(mae);
        v["corr"] = json!(corr);
    }
    v
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
