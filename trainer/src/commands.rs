//! `mgr eval`, `mgr trace`, `mgr export-web` and `mgr export`.

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::Device;
use mgr::absence::{AbsenceConfig, AbsenceMask, SplitKind};
use mgr::batch::Batch;
use mgr::data::{DataSplit, Targets};
use mgr::ranking_quality::RankingReport;
use mgr::train::{EVAL_BATCH, evaluate};
use serde::Serialize;
use serde_json::json;

use crate::checkpoint::{TestMetrics, finished_run, load_model};
use crate::dataset;
use crate::datasets::{self, PageSamples};
use crate::device;
use crate::fsutil::write_atomic;
use crate::runconfig::RunConfig;
use crate::{EvalArgs, ExportArgs, ExportFileArgs, ExportFormat, TraceArgs};

/// What `mgr eval` prints: the run and absence setting it evaluated, the test metrics, and the
/// ranking report where the run has one.
#[derive(Serialize)]
struct EvalReport<'a> {
    run: &'a std::path::Path,
    dataset: &'a str,
    method: &'static str,
    /// The ranking the split ran with (the run's own, or `--ranking`'s).
    split_ranking: &'static str,
    kappa: f64,
    absence_seed: u64,
    absence_type: &'a [String],
    #[serde(flatten)]
    test: TestMetrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    ranking: Option<RankingReport>,
    /// What xi follows on data without ground truth (the ranking report has it otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    ranking_drivers: Option<Vec<mgr::ranking_quality::LayerDrivers>>,
}

/// `mgr eval`: the saved best model on the test split under another absence setting.
pub fn eval(a: &EvalArgs) -> Result<()> {
    let (mut rc, paths) = finished_run(&a.run)?;
    if let Some(k) = a.kappa {
        AbsenceConfig::check_kappa(k).context("--kappa")?;
        rc.absence.kappa = k;
    }
    if let Some(s) = a.absence_seed {
        rc.absence.seed = s;
    }
    if let Some(t) = &a.absence_type {
        rc.absence.missable = t.clone();
    }
    if let Some(m) = a.max_missing {
        rc.absence.max_missing = m;
    }
    let (device, _) = device::select(a.device, true)?;
    let splits = dataset::load(&rc)?;
    let mask = rc
        .absence
        .mask(&rc.model.modalities, splits.test.len(), SplitKind::Test)?;
    let mut model = load_model(&rc, &paths.best(), &device)?;
    let own_ranking = rc.model.refinement.ranking;
    if let Some(name) = &a.ranking {
        let ranking: mgr::SplitRanking = name.parse()?;
        crate::runconfig::check_ranking(ranking, &rc.dataset).context("--ranking")?;
        model.set_ranking(ranking);
        rc.model.refinement.ranking = ranking;
    }
    let test = evaluate(&model, &splits.test, &mask, EVAL_BATCH, &device);
    let ranking = ranking_report(&rc, &model, &splits.test, &device)?;
    // A swapped ranking's report is not the run's: results.json keeps the trained one's.
    if let Some(report) = ranking
        .as_ref()
        .filter(|_| model.config.refinement.ranking == own_ranking)
    {
        // The ranking does not depend on the absence setting (complete inputs, then each
        // modality dropped from every sample), so it belongs to the run's results.
        if let Ok(mut results) = paths.read_results() {
            results.ranking = Some(report.clone());
            paths.write_results(&results)?;
        }
    }
    let ranking_drivers = (ranking.is_none() && rc.model.refine_layers_effective() > 0)
        .then(|| mgr::ranking_quality::drivers(&model, &ranking_samples(&splits.test), &device));
    let out = EvalReport {
        run: &a.run,
        dataset: &rc.dataset,
        method: rc.model.method.name(),
        split_ranking: model.config.refinement.ranking.name(),
        kappa: rc.absence.kappa,
        absence_seed: rc.absence.seed,
        absence_type: &rc.absence.missable,
        test: TestMetrics::of(&test),
        ranking,
        ranking_drivers,
    };
    // Through a Value, so the keys come out sorted like results.json's.
    let out = serde_json::to_value(&out)?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Test samples the ranking report measures (the first ones of the test split).
pub const RANKING_SAMPLES: usize = 300;

/// The first [`RANKING_SAMPLES`] samples of `test`, which the ranking report and the drivers
/// read.
fn ranking_samples(test: &DataSplit) -> DataSplit {
    let n = test.len().min(RANKING_SAMPLES);
    test.subset(&(0..n).collect::<Vec<_>>(), test.name.clone())
}

/// The ranking report (the split's grades against the ground-truth noise and conflicting
/// tokens, kept rates, kept slots of dropped modalities) of an MGR model on the synthetic
/// data's first test samples, on complete inputs and under the run's own absence setting; None
/// for other datasets (no ground truth) and methods without refinement.
pub fn ranking_report(
    rc: &RunConfig,
    model: &mgr::Model,
    test: &mgr::data::DataSplit,
    device: &Device,
) -> Result<Option<RankingReport>> {
    if test.truth.is_none() || rc.model.refine_layers_effective() == 0 {
        return Ok(None);
    }
    let subset = ranking_samples(test);
    let n = subset.len();
    let mut mask = rc
        .absence
        .mask(&rc.model.modalities, test.len(), SplitKind::Test)?;
    mask.rows.truncate(n);
    let setting = format!(
        "kappa {}, absence seed {} (the run's test masks)",
        rc.absence.kappa, rc.absence.seed
    );
    Ok(Some(mgr::ranking_quality::ranking_report(
        model,
        &subset,
        Some((&setting, &mask)),
        device,
    )?))
}

fn fmt_auc(auc: Option<f64>) -> String {
    auc.map_or("n/a".to_string(), |a| format!("{a:.3}"))
}

/// The ranking report as lines for the terminal.
pub fn print_ranking(report: &RankingReport) {
    eprintln!(
        "ranking `{}` against the ground truth ({} test samples, complete inputs):",
        report.ranking, report.samples
    );
    for l in &report.layers {
        print_layer(l);
    }
    if let Some(under) = &report.under_absence {
        eprintln!("  under {}:", under.setting);
        for l in &under.layers {
            print_layer(l);
        }
    }
    for d in &report.dropped {
        let shares: Vec<String> = d
            .kept_share
            .iter()
            .map(|s| format!("{:.1}%", 100.0 * s))
            .collect();
        eprintln!(
            "  {} dropped: its placeholders hold {} of the kept slots per layer ({:.1}% of the tokens)",
            d.modality,
            shares.join(" / "),
            100.0 * d.token_share
        );
    }
}

/// One layer's grades: noise inside each modality and pooled, conflict, kept rates.
fn print_layer(l: &mgr::ranking_quality::LayerRanking) {
    let within: Vec<String> = l
        .by_modality
        .iter()
        .map(|g| format!("{} {}", g.modality, fmt_auc(g.auc)))
        .collect();
    let placeholder = l.kept_rate_placeholder.map_or(String::new(), |r| {
        format!("  placeholder {:.1}%", 100.0 * r)
    });
    eprintln!(
        "  layer {}: noise AUC within modality {} (mean {}), pooled {}  conflict AUC {}",
        l.layer,
        within.join(", "),
        fmt_auc(l.auc_modality_mean),
        fmt_auc(l.auc),
        fmt_auc(l.conflict.auc),
    );
    eprintln!(
        "           kept: signal {:.1}%  noise {:.1}%  agreeing {:.1}%  conflicting {:.1}%{placeholder}",
        100.0 * l.kept_rate_signal,
        100.0 * l.kept_rate_noise,
        100.0 * l.conflict.kept_rate_agreeing,
        100.0 * l.conflict.kept_rate_conflicting,
    );
}

/// `mgr trace`: one test sample's trace as JSON.
pub fn trace(a: &TraceArgs) -> Result<()> {
    let (rc, paths) = finished_run(&a.run)?;
    let device = Device::flex();
    let splits = dataset::load(&rc)?;
    if a.index >= splits.test.len() {
        bail!(
            "--index {} is out of range: the test split has {} samples",
            a.index,
            splits.test.len()
        );
    }
    let names: Vec<String> = rc.model.modalities.iter().map(|m| m.name.clone()).collect();
    let available = match &a.drop {
        Some(drop) => {
            for d in drop {
                if !names.contains(d) {
                    bail!(
                        "--drop: unknown modality `{d}` (this model has {})",
                        names.join(", ")
                    );
                }
            }
            let row: Vec<bool> = names.iter().map(|n| !drop.contains(n)).collect();
            if !row.iter().any(|&x| x) {
                bail!("--drop: at least one modality must stay");
            }
            row
        }
        None => paths.read_mask("test")?.available(a.index).to_vec(),
    };
    let model = load_model(&rc, &paths.best(), &device)?;
    let batch = Batch::from_features(&splits.test, &[a.index], vec![available], &device);
    let (_, traces) = model.trace(&batch);
    let label = match &splits.test.targets {
        Targets::Classes { labels, .. } => json!(labels[a.index]),
        Targets::Values(v) => json!(v[a.index]),
    };
    let out = json!({"index": a.index, "label": label, "trace": traces[0]});
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `mgr export --format safetensors`: the run's best weights in PyTorch's names and layout
/// ([`mgr::persist::to_safetensors`]), the model config as `<stem>.json`, and the first
/// `--samples` test inputs with their availability as `<stem>.samples.safetensors`
/// (`input.<modality>` `[S, N_i, token_dim]`, `available` `[S, M]` 1.0 present, `index` `[S]`
/// the test indices), the batch `mgr trace --run R --index i` sees.
pub fn export_file(a: &ExportFileArgs) -> Result<()> {
    let ExportFormat::Safetensors = a.format;
    let (rc, paths) = finished_run(&a.run)?;
    let device = Device::flex();
    let model = load_model(&rc, &paths.best(), &device)?;
    let config = serde_json::to_string_pretty(&json!({
        "format": "mgr-safetensors/1",
        "dataset": rc.dataset,
        "model": rc.model,
    }))?;
    let weights = mgr::persist::to_safetensors(&model, &[("mgr_config", config.clone())])?;
    let stem = a
        .out
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("--out {}: needs a file name", a.out.display()))?
        .to_string();
    let sibling = |suffix: &str| a.out.with_file_name(format!("{stem}{suffix}"));
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut written = vec![a.out.clone(), sibling(".json")];
    if a.samples > 0 {
        let splits = dataset::load(&rc)?;
        let n = a.samples.min(splits.test.len());
        let samples = samples_safetensors(&splits.test, &paths.read_mask("test")?, n)?;
        let path = sibling(".samples.safetensors");
        write_atomic(&path, &samples)?;
        written.push(path);
    }
    write_atomic(&a.out, &weights)?;
    write_atomic(&sibling(".json"), config.as_bytes())?;
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    eprintln!("wrote {}", names.join(", "));
    Ok(())
}

/// The first `n` samples of `split` and their availability under `mask`, as safetensors.
fn samples_safetensors(
    split: &mgr::data::DataSplit,
    mask: &AbsenceMask,
    n: usize,
) -> Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    fn le_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
        values.flat_map(f32::to_le_bytes).collect()
    }
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (m, spec) in split.modalities.iter().enumerate() {
        let values = (0..n).flat_map(|i| split.sample_features(m, i).iter().copied());
        tensors.push((
            format!("input.{}", spec.name),
            vec![n, spec.n_tokens, spec.token_dim],
            le_bytes(values),
        ));
    }
    let available = (0..n).flat_map(|i| mask.available(i).iter().map(|&a| f32::from(u8::from(a))));
    tensors.push((
        "available".into(),
        vec![n, split.modalities.len()],
        le_bytes(available),
    ));
    tensors.push(("index".into(), vec![n], le_bytes((0..n).map(|i| i as f32))));
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| anyhow!("samples tensor {name}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| anyhow!("cannot serialise the samples: {e}"))
}

/// `mgr export-web`: weights (burnpack), the model config and a few test samples for the page:
/// generated ones for synthetic runs (`samples.json`, also regenerated by the page from the
/// config), real ones with their recordings for AV-MNIST (`samples.safetensors`).
pub fn export_web(a: &ExportArgs) -> Result<()> {
    let (rc, paths) = finished_run(&a.run)?;
    let page = datasets::find(&rc.dataset)?.page;
    // Everything is computed before anything is written: a failure leaves no half export.
    let (samples_file, samples, n, test) = exported_samples(a, &rc, page)?;
    let device = Device::flex();
    let model = load_model(&rc, &paths.best(), &device)?;
    let precision = mgr::persist::WeightPrecision::from(a.precision);
    let (bytes, check) = checked_weights(&rc, &model, precision, &test, n)?;
    let results = match paths.read_results() {
        Ok(results) => Some(serde_json::to_value(results)?),
        Err(_) => None,
    };
    let recordings = page == PageSamples::Recordings;
    let meta = mgr::persist::WebModelFile {
        format: mgr::persist::WEB_MODEL_FORMAT.into(),
        dataset: rc.dataset.clone(),
        model: rc.model.clone(),
        kappa: Some(rc.absence.kappa),
        weights: Some(mgr::persist::WebWeights {
            precision: precision.name().into(),
            check: check.clone(),
        }),
        results,
        synthetic: (!recordings).then(|| rc.synthetic.clone()),
        samples_file: recordings.then(|| samples_file.to_string()),
        credit: recordings.then(|| crate::avmnist::PAGE_CREDIT.to_string()),
    };
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    write_atomic(&a.out.join("model.bpk"), &bytes)?;
    write_atomic(&a.out.join(samples_file), &samples)?;
    write_atomic(
        &a.out.join("model.json"),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )?;
    eprintln!(
        "wrote {} ({} bytes of {} weights, {} samples, {} bytes of samples; outputs within {:.1e} of the f32 model's on {} views, every prediction the same)",
        a.out.display(),
        bytes.len(),
        precision.name(),
        n,
        samples.len(),
        check.max_output_diff,
        check.views
    );
    Ok(())
}

/// The samples `export-web` ships: (file name, its bytes, how many, the test split they come
/// from, whose first n they are).
fn exported_samples(
    a: &ExportArgs,
    rc: &RunConfig,
    page: PageSamples,
) -> Result<(&'static str, Vec<u8>, usize, DataSplit)> {
    Ok(match page {
        PageSamples::NotShown => bail!(
            "export-web: the page draws synthetic or AV-MNIST samples; {} was trained on {}",
            a.run.display(),
            rc.dataset
        ),
        PageSamples::Recordings => {
            let data = rc
                .data_dir
                .as_deref()
                .ok_or_else(|| anyhow!("{}: run config has no data_dir", a.run.display()))?;
            let (mnist, fsdd) =
                crate::avmnist::source_dirs(data, a.mnist_dir.as_deref(), a.fsdd_dir.as_deref())?;
            let test = dataset::load(rc)?.test;
            let n = a.samples.min(test.len());
            let samples = crate::avmnist::page_samples(data, &mnist, &fsdd, &test, n)?;
            ("samples.safetensors", samples, n, test)
        }
        PageSamples::Generated => {
            let n = a.samples.min(rc.synthetic.n_test);
            let samples: Vec<_> = (0..n)
                .map(|i| rc.synthetic.sample(SplitKind::Test, i))
                .collect();
            let test = rc.synthetic.first(SplitKind::Test, n);
            ("samples.json", serde_json::to_vec(&samples)?, n, test)
        }
    })
}

/// The model's weights at `precision`, and what the page will compute from them against the
/// model itself on the first `n` test samples under every absence pattern: a rounding that
/// changes a prediction is refused.
fn checked_weights(
    rc: &RunConfig,
    model: &mgr::Model,
    precision: mgr::persist::WeightPrecision,
    test: &DataSplit,
    n: usize,
) -> Result<(Vec<u8>, mgr::persist::PrecisionCheck)> {
    let device = Device::flex();
    let bytes = mgr::persist::to_burnpack_as(model, precision)?;
    let rounded = mgr::persist::from_burnpack(&rc.model, bytes.clone(), &device, "model.bpk")?;
    let indices: Vec<usize> = (0..n).collect();
    let check = mgr::persist::compare_outputs(model, &rounded, test, &indices, &device);
    if check.same_prediction != check.views {
        bail!(
            "export-web: with {} weights {} of {} (sample, absence pattern) views of the exported samples change their prediction; export with --precision f32",
            precision.name(),
            check.views - check.same_prediction,
            check.views
        );
    }
    Ok((bytes, check))
}
