//! Accuracy against kappa (the paper's robustness curve): each method's first trained model
//! evaluated on its test split at kappa 0, 0.1, ..., 1, nothing retrained. Drawn by `plots`.

use anyhow::Result;
use mgr::absence::SplitKind;
use mgr::train::{EVAL_BATCH, evaluate};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checkpoint::RunResults;
use crate::protocol::cells::Cell;

/// Test accuracy of one run's best model at kappa 0, 0.1, ..., 1 (its own absence seed).
pub fn kappa_sweep(run: &Path) -> Result<Vec<(f64, f64)>> {
    let rc = crate::runconfig::load(run)?;
    let splits = crate::dataset::load(&rc)?;
    let device = burn::tensor::Device::flex();
    let best = crate::checkpoint::RunPaths {
        root: run.to_path_buf(),
    }
    .best();
    let model = crate::checkpoint::load_model(&rc, &best, &device)?;
    let mut points = Vec::new();
    for step in 0..=10 {
        let mut absence = rc.absence.clone();
        absence.kappa = step as f64 / 10.0;
        let mask = absence.mask(&rc.model.modalities, splits.test.len(), SplitKind::Test)?;
        points.push((
            absence.kappa,
            evaluate(&model, &splits.test, &mask, EVAL_BATCH, &device)
                .overall
                .accuracy,
        ));
    }
    Ok(points)
}

/// Accuracy against kappa for one method, from one trained model.
#[derive(Clone, Debug)]
pub struct SweepLine {
    /// The method (with its insertion type when not the default).
    pub name: String,
    /// The run whose best model was evaluated.
    pub run: PathBuf,
    /// (kappa, test accuracy), kappa = 0, 0.1, ..., 1.
    pub points: Vec<(f64, f64)>,
}

/// One sweep per method: the best model of the method's first run (first cell, first seeds) is
/// evaluated at every kappa; nothing is retrained.
pub fn kappa_sweeps(results: &[(Cell, RunResults, PathBuf)]) -> Result<Vec<SweepLine>> {
    let mut first_run: BTreeMap<String, &PathBuf> = BTreeMap::new();
    let mut sorted: Vec<&(Cell, RunResults, PathBuf)> = results.iter().collect();
    sorted.sort_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
    for (cell, _, run) in sorted {
        // One line per cell but for the swept setting: its label without the setting.
        let name = Cell {
            setting: String::new(),
            ..cell.clone()
        }
        .label();
        first_run.entry(name).or_insert(run);
    }
    first_run
        .into_iter()
        .map(|(name, run)| {
            Ok(SweepLine {
                points: kappa_sweep(run)?,
                name,
                run: run.clone(),
            })
        })
        .collect()
}
