//! Prints what the page must show, computed natively with the same engine: for one sample of
//! an exported model, the trace with every modality present and with `drop` removed, and the
//! ranking's AUC per layer against the ground-truth noise tokens (null for AV-MNIST, which has
//! none); for AV-MNIST also the sample's label and recording.
//!
//! usage: cargo run -p mgr-web --example expected -- MODEL_DIR SAMPLE [DROP,...]

use mgr_web::engine::Engine;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: expected MODEL_DIR SAMPLE [DROP,...]");
        std::process::exit(2);
    }
    let dir = std::path::Path::new(&args[1]);
    let meta = std::fs::read_to_string(dir.join("model.json")).expect("model.json");
    let weights = std::fs::read(dir.join("model.bpk")).expect("model.bpk");
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
    let result = engine.infer(&sample, &available, None, None);
    let ranking_auc = engine.ranking_auc(None, None);
    let recording = match &sample {
        mgr_web::sample::PageSample::Avmnist(s) => Some(s.recording.clone()),
        mgr_web::sample::PageSample::Synthetic(_) => None,
    };
    let out = serde_json::json!({"sample": index, "drop": drop, "label": sample.label(), "recording": recording, "trace": result.trace, "complete": result.complete, "ranking_auc": ranking_auc});
    println!("{out}");
}
