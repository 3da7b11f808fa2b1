//! Re-encodes an exported page model's weights from an f32 burnpack file (an older export, or
//! `mgr export-web --precision f32`): writes MODEL_DIR/model.bpk at PRECISION (f16 by default)
//! after checking, as `mgr export-web` does, that the page's samples (synthetic: test samples
//! 0-63; AV-MNIST: every shipped one) keep their prediction under every absence pattern, and
//! records the precision and the check in MODEL_DIR/model.json. Nothing is written when a
//! prediction changes. This is how the shipped models were halved from web/reference/.
//!
//! usage: cargo run -p mgr-web --example reencode -- MODEL_DIR F32_WEIGHTS [f16|f32]

use std::path::Path;

use mgr::persist::{WeightPrecision, from_burnpack, to_burnpack_as};
use mgr_web::engine::{Engine, PageMeta, WebMeta};

fn main() {
    if let Err(e) = run() {
        eprintln!("reencode: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: reencode MODEL_DIR F32_WEIGHTS [f16|f32]".into());
    }
    let dir = Path::new(&args[1]);
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let meta_path = dir.join("model.json");
    let meta_text = String::from_utf8(read(&meta_path)?)
        .map_err(|e| format!("{}: {e}", meta_path.display()))?;
    let reference = read(Path::new(&args[2]))?;
    let precision = match args.get(3).map(String::as_str) {
        None | Some("f16") => WeightPrecision::F16,
        Some("f32") => WeightPrecision::F32,
        Some(other) => return Err(format!("precision `{other}`: f16 or f32")),
    };
    let samples = WebMeta::parse(&meta_text)?
        .samples_file
        .map(|f| read(&dir.join(f)))
        .transpose()?;
    let engine = Engine::load(&meta_text, reference, samples)?;
    let bytes = to_burnpack_as(&engine.model, precision).map_err(|e| e.to_string())?;
    let device = burn::tensor::Device::flex();
    let rounded = from_burnpack(&engine.meta.model, bytes.clone(), &device, "model.bpk")
        .map_err(|e| e.to_string())?;
    let check = engine.compare_models(&engine.model, &rounded);
    if check.same_prediction != check.views {
        return Err(format!(
            "{} of {} views change their prediction in {}; nothing written",
            check.views - check.same_prediction,
            check.views,
            precision.name()
        ));
    }
    let mut meta: serde_json::Value =
        serde_json::from_str(&meta_text).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    meta["weights"] = serde_json::json!({"precision": precision.name(), "check": check});
    let text = serde_json::to_string_pretty(&meta).map_err(|e| e.to_string())?;
    write_atomic(&dir.join("model.bpk"), &bytes)?;
    write_atomic(&meta_path, text.as_bytes())?;
    eprintln!(
        "wrote {} ({} bytes of {} weights; outputs within {:.1e} of the f32 model's on {} views, every prediction the same)",
        dir.join("model.bpk").display(),
        bytes.len(),
        precision.name(),
        check.max_output_diff,
        check.views
    );
    Ok(())
}

/// Writes beside the file, then renames: a failure leaves the old file whole.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
