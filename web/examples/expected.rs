//! Prints what the page must show, computed natively with the same engine: for one sample of
//! an exported model, the trace with every modality present and with `drop` removed, and the
//! ranking's AUC per layer against the ground-truth noise tokens (null for AV-MNIST, which has
//! none), and what the page says of it per layer ([`mgr_web::honesty`]); for AV-MNIST also the
//! sample's label and recording.
//!
//! `--weights FILE` runs other weights of the same model instead of MODEL_DIR/model.bpk (the
//! f32 reference of a half-precision export, web/reference/). `--ranking NAME` splits by
//! another ranking than the learned one (the page's `#ranking=NAME`), and adds that ranking's
//! grades per layer.
//!
//! usage: cargo run -p mgr-web --example expected -- [--weights FILE] [--ranking NAME] MODEL_DIR SAMPLE [DROP,...]

use mgr_web::engine::{Engine, PageMeta, Settings};

/// Removes `--flag VALUE` from `args`, returning VALUE.
fn take_flag(args: &mut Vec<String>, flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).map(|i| {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        args.drain(i..(i + 2).min(args.len()));
        value
    })
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let weights_file = take_flag(&mut args, "--weights");
    let ranking: mgr::SplitRanking = take_flag(&mut args, "--ranking")
        .map(|r| r.parse().unwrap_or_else(|e| panic!("--ranking: {e}")))
        .unwrap_or_default();
    if args.len() < 3 {
        eprintln!("usage: expected [--weights FILE] MODEL_DIR SAMPLE [DROP,...]");
        std::process::exit(2);
    }
    let dir = std::path::Path::new(&args[1]);
    let meta = std::fs::read_to_string(dir.join("model.json")).expect("model.json");
    let weights_path = weights_file.map_or_else(|| dir.join("model.bpk"), Into::into);
    let weights =
        std::fs::read(&weights_path).unwrap_or_else(|e| panic!("{}: {e}", weights_path.display()));
    let samples = mgr_web::engine::WebMeta::parse(&meta)
        .unwrap_or_else(|e| panic!("{e}"))
        .samples_file
        .map(|f| std::fs::read(dir.join(&f)).unwrap_or_else(|e| panic!("{f}: {e}")));
    let engine = Engine::load(&meta, weights, samples).unwrap_or_else(|e| panic!("{e}"));
    let index: usize = args[2].parse().expect("sample index");
    let drop: Vec<&str> = args
        .get(3)
        .map(|d| d.split(',').collect())
        .unwrap_or_default();
    let limits = engine.limits();
    let available: Vec<bool> = limits
        .modalities
        .iter()
        .map(|m| !drop.contains(&m.as_str()))
        .collect();
    let sample = engine.sample(index);
    let settings = Settings {
        ranking,
        ..Settings::default()
    };
    let result = engine.infer_with(&sample, index, &available, settings);
    let ranking_auc = engine.ranking_auc(None, None);
    let (grades, drivers) = engine.ranking_grades(settings).unzip();
    let recording = match &sample {
        mgr_web::sample::PageSample::Avmnist(s) => Some(s.recording.clone()),
        mgr_web::sample::PageSample::Synthetic(_) => None,
    };
    let test_ranking = engine.meta.test_ranking();
    let honesty =
        mgr_web::honesty::read_layers(&result.trace, ranking_auc.as_deref(), test_ranking.as_ref());
    let out = serde_json::json!({"sample": index, "drop": drop, "label": sample.label(), "recording": recording, "trace": result.trace, "complete": result.complete, "ranking_auc": ranking_auc, "ranking": ranking.name(), "ranking_grades": grades, "ranking_drivers": drivers, "honesty": honesty});
    println!("{out}");
}
