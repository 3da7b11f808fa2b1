//! Plots a researcher wants after a protocol, as SVG and PNG (plotters): training curves per
//! run, accuracy against kappa from one trained model per method, per-absence-pattern bars.
//!
//! Text needs a TrueType font (plotters lays text out with ab_glyph, for SVG too): DejaVu Sans
//! from Debian's fonts-dejavu-core is registered at run time; without it no plot is drawn and
//! the table says so.

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::checkpoint::{RunPaths, RunResults};
use crate::fsutil::{rename_into_place, temp_path};
use crate::kappa_sweep::SweepLine;
use crate::protocol::cells::{Cell, Row, SweepPoint};

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a font for plot text once; false when none is found.
pub fn font_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        for path in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

type Draw<'a> = dyn Fn(&DrawingArea<SVGBackend, Shift>) -> Result<()> + 'a;
type DrawPng<'a> = dyn Fn(&DrawingArea<BitMapBackend, Shift>) -> Result<()> + 'a;

/// Writes `stem.svg` (and `stem.png` when a font is available); returns the files.
/// `stem` plus an extension, appended (a stem such as `curves-mgr-kappa0.7` has a dot that
/// `Path::with_extension` would take for an extension).
fn with_suffix(stem: &Path, extension: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

fn both(stem: &Path, size: (u32, u32), svg: &Draw, png: &DrawPng) -> Result<Vec<PathBuf>> {
    if !font_available() {
        return Ok(Vec::new());
    }
    // Each drawn into a temp file and renamed: a kill leaves the old plot or the new one.
    let svg_path = with_suffix(stem, "svg");
    let svg_tmp = temp_path(&svg_path)?;
    render(
        SVGBackend::new(&svg_tmp, size).into_drawing_area(),
        &svg_path,
        svg,
    )?;
    rename_into_place(&svg_tmp, &svg_path)?;
    let png_path = with_suffix(stem, "png");
    let png_tmp = temp_path(&png_path)?;
    render(
        BitMapBackend::new(&png_tmp, size).into_drawing_area(),
        &png_path,
        png,
    )?;
    rename_into_place(&png_tmp, &png_path)?;
    Ok(vec![svg_path, png_path])
}

/// A white `root`, drawn on by `draw`, written to `path`.
fn render<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    path: &Path,
    draw: &dyn Fn(&DrawingArea<DB, Shift>) -> Result<()>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    draw(&root)?;
    root.present()
        .map_err(|e| anyhow!("{}: {e}", path.display()))
}

macro_rules! drawer {
    ($body:expr) => {
        (
            &|root: &DrawingArea<SVGBackend, Shift>| $body(root),
            &|root: &DrawingArea<BitMapBackend, Shift>| $body(root),
        )
    };
}

/// Epoch rows of a run's metrics.csv: (epoch, train loss, L_div, valid accuracy).
fn read_curves(run: &Path) -> Vec<(f64, f64, f64, f64)> {
    let paths = RunPaths {
        root: run.to_path_buf(),
    };
    paths
        .read_metrics()
        .unwrap_or_default()
        .iter()
        .map(|r| (r.epoch as f64, r.train_loss, r.l_div, r.valid_accuracy))
        .collect()
}

fn curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    runs: &[Vec<(f64, f64, f64, f64)>],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let panels = root.split_evenly((1, 3));
    let names = ["train loss", "L_div", "valid accuracy"];
    for (p, area) in panels.iter().enumerate() {
        let pick = |r: &(f64, f64, f64, f64)| [r.1, r.2, r.3][p];
        let max_epoch = runs.iter().flatten().map(|r| r.0).fold(1.0, f64::max);
        let (lo, hi) = runs
            .iter()
            .flatten()
            .map(pick)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        let (lo, hi) = if lo.is_finite() && hi > lo {
            (lo, hi)
        } else {
            (0.0, 1.0)
        };
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title}: {}", names[p]), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(1.0..max_epoch, lo..hi)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (i, run) in runs.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(run.iter().map(|r| (r.0, pick(r))), color))
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    Ok(())
}

fn sweep<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    dataset: &str,
    lines: &BTreeMap<String, Vec<(f64, f64)>>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("{dataset}: test accuracy vs kappa (one trained model per method)"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("kappa at test time")
        .y_desc("accuracy")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    draw_legend(&mut chart)
}

fn bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, rows: &[&Row]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let patterns: Vec<String> = rows
        .iter()
        .flat_map(|r| r.per_pattern.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let groups = patterns.len().max(1);
    let per = rows.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..groups as f64, 0.0..1.0)
        .map_err(|e| anyhow!("{e}"))?;
    let labels = patterns.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.26 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("accuracy")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (j, row) in rows.iter().enumerate() {
        let color = Palette99::pick(j).to_rgba();
        let width = 0.8 / per as f64;
        let rects = patterns.iter().enumerate().filter_map(|(g, p)| {
            let v = *row.per_pattern.get(p)?;
            let x0 = g as f64 + 0.1 + j as f64 * width;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.9, v)],
                color.filled(),
            ))
        });
        let name = row.cell.label();
        chart
            .draw_series(rects)
            .map_err(|e| anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    draw_legend(&mut chart)
}

/// All plots of a protocol; returns the files, relative to `out`.
pub fn protocol_plots(
    out: &Path,
    rows: &[Row],
    results: &[(Cell, RunResults, PathBuf)],
    sweeps: &[SweepLine],
    dataset: &str,
) -> Result<Vec<PathBuf>> {
    let dir = out.join("plots");
    std::fs::create_dir_all(&dir)?;
    let mut files = Vec::new();
    let mut by_cell: BTreeMap<&Cell, Vec<&PathBuf>> = BTreeMap::new();
    for (cell, _, run) in results {
        by_cell.entry(cell).or_default().push(run);
    }
    for (cell, runs) in &by_cell {
        let curves_data: Vec<_> = runs.iter().map(|r| read_curves(r)).collect();
        let mut ins = if cell.insertion == "-" {
            String::new()
        } else {
            format!("-{}", cell.insertion)
        };
        if !cell.backbone.is_empty() {
            ins.push_str(&format!("-{}", cell.backbone));
        }
        if !cell.setting.is_empty() {
            ins.push_str(&format!("-{}", cell.setting.replace('=', "")));
        }
        let stem = dir.join(format!("curves-{}{ins}-kappa{}", cell.method, cell.kappa));
        let title = format!("{}{ins} kappa {}", cell.method, cell.kappa);
        let (s, p) = drawer!(|root| curves(root, &title, &curves_data));
        files.extend(both(&stem, (1200, 360), s, p)?);
    }
    let lines: BTreeMap<String, Vec<(f64, f64)>> = sweeps
        .iter()
        .map(|l| (l.name.clone(), l.points.clone()))
        .collect();
    let (s, p) = drawer!(|root| sweep(root, dataset, &lines));
    files.extend(both(&dir.join("accuracy-vs-kappa"), (800, 520), s, p)?);
    let kappas: std::collections::BTreeSet<&String> = rows.iter().map(|r| &r.cell.kappa).collect();
    for kappa in kappas {
        let subset: Vec<&Row> = rows.iter().filter(|r| &r.cell.kappa == kappa).collect();
        let title = format!("{dataset}: test accuracy per absence pattern, kappa {kappa}");
        let (s, p) = drawer!(|root| bars(root, &title, &subset));
        files.extend(both(
            &dir.join(format!("per-pattern-kappa{kappa}")),
            (900, 520),
            s,
            p,
        )?);
    }
    Ok(files
        .into_iter()
        .map(|f| f.strip_prefix(out).map(Path::to_path_buf).unwrap_or(f))
        .collect())
}

/// The x axis of a sweep plot: the values in order of appearance, placed at their number when
/// every value is one, else at their position.
struct SweepAxis {
    values: Vec<String>,
    numeric: bool,
}

impl SweepAxis {
    fn new(points: &[SweepPoint]) -> Self {
        let mut values: Vec<String> = Vec::new();
        for p in points {
            if !values.contains(&p.value) {
                values.push(p.value.clone());
            }
        }
        let numeric = points.iter().all(|p| p.value.parse::<f64>().is_ok());
        Self { values, numeric }
    }

    fn x(&self, v: &str) -> f64 {
        if self.numeric {
            v.parse().unwrap_or(0.0)
        } else {
            self.values.iter().position(|w| w == v).unwrap_or(0) as f64
        }
    }

    fn label(&self, x: f64) -> String {
        if self.numeric {
            return format!("{x}");
        }
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            self.values.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    }
}

/// The y range of a sweep plot: every mean plus or minus its standard deviation, padded, within
/// [0, 1].
fn f1_range(points: &[SweepPoint]) -> (f64, f64) {
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (
                a.min(p.row.f1_mean - p.row.f1_std),
                b.max(p.row.f1_mean + p.row.f1_std),
            )
        });
    if lo.is_finite() && hi > lo {
        ((lo - 0.02).max(0.0), (hi + 0.02).min(1.0))
    } else {
        (0.0, 1.0)
    }
}

/// F1 (mean, with one sample standard deviation either side) against the swept value, one
/// line per cell; x is the value when every value is a number, else its position.
fn sweep_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    key: &str,
    points: &[SweepPoint],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let axis = SweepAxis::new(points);
    let x_of = |v: &str| axis.x(v);
    let (x_lo, x_hi) = axis
        .values
        .iter()
        .map(|v| x_of(v))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    let pad = ((x_hi - x_lo) * 0.08).max(0.5);
    let (y_lo, y_hi) = f1_range(points);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d((x_lo - pad)..(x_hi + pad), y_lo..y_hi)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(key)
        .y_desc("test F1")
        .x_label_formatter(&|x| axis.label(*x))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let mut lines: Vec<&str> = points.iter().map(|p| p.line.as_str()).collect();
    lines.dedup();
    for (i, line) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let series: Vec<(f64, f64, f64)> = points
            .iter()
            .filter(|p| p.line == *line)
            .map(|p| (x_of(&p.value), p.row.f1_mean, p.row.f1_std))
            .collect();
        chart
            .draw_series(LineSeries::new(
                series.iter().map(|&(x, y, _)| (x, y)),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(line.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(
                series
                    .iter()
                    .map(|&(x, y, sd)| PathElement::new(vec![(x, y - sd), (x, y + sd)], color)),
            )
            .map_err(|e| anyhow!("{e}"))?;
    }
    draw_legend(&mut chart)
}

/// `plots/sweep-KEY.svg` and `.png`: F1 against the swept value; returns the files, relative
/// to `out`.
pub fn sweep_plot(
    out: &Path,
    key: &str,
    points: &[SweepPoint],
    dataset: &str,
) -> Result<Vec<PathBuf>> {
    if points.is_empty() {
        return Ok(Vec::new());
    }
    let dir = out.join("plots");
    std::fs::create_dir_all(&dir)?;
    let title = format!("{dataset}: test F1 against {key}");
    let safe_key: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let (s, p) = drawer!(|root| sweep_lines(root, &title, key, points));
    let files = both(&dir.join(format!("sweep-{safe_key}")), (800, 520), s, p)?;
    Ok(files
        .into_iter()
        .map(|f| f.strip_prefix(out).map(Path::to_path_buf).unwrap_or(f))
        .collect())
}

/// The series' labels in a box every plot draws the same way.
fn draw_legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: plotters::coord::CoordTranslate,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
