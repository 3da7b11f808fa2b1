//! The protocol's table cells and rows: a cell (method, insertion type, kappa, swept setting,
//! backbone), the mean and sample standard deviation of its runs, the paired difference against
//! the baseline, and a sweep's points. What the tables and the plots (plots.rs,
//! kappa_sweep.rs) read.

use anyhow::{Result, bail};
use mgr::metrics::mean_std;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::checkpoint::RunResults;

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
pub(super) fn backbone_label(freeze: mgr::Freeze) -> &'static str {
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
