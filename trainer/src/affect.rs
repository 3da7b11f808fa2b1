//! MultiBench's affect pickles (CMU-MOSI, CMU-MOSEI, UR-FUNNY): a dict of `train`, `valid`,
//! `test`, each a dict with `vision`, `audio`, `text` arrays of shape (N, T, D_i) and `labels`.
//!
//! The pickles hold numpy arrays, which only numpy itself can unpickle faithfully (their dtype
//! lives in a reconstructor that generic pickle readers drop), so the loader asks Python's
//! `pickle` with numpy (which every MultiBench user has) to write each array as a `.npy` file
//! into a temp folder, and reads those with `ndarray-npy`.
//!
//! A pickle is a program: unpickled without limits, a file can call any Python function (its
//! `__reduce__` names `os.system`, say). MultiBench's pickles come from third parties, so the
//! unpickler is restricted as `torch.load(weights_only=True)` is: `find_class` resolves only the
//! globals numpy arrays and plain containers need ([`ALLOWED_GLOBALS`]) and refuses anything
//! else, naming the file and the global, before any of it runs. As MultiBench: `-inf` in audio is set
//! to 0; labels (N, 1, 1) in [-3, 3] are regression targets (accuracy and F1 of `label > 0`);
//! UR-FUNNY's 0/1 labels are classes. Each modality is standardised per feature by the training
//! split's mean and standard deviation.

use anyhow::{Context, Result, anyhow, bail};
use mgr::ModalitySpec;
use mgr::data::{DataSplit, Targets};
use ndarray::{Array1, Array3};
use std::path::Path;
use std::process::Command;

const CONVERT: &str = r#"
import sys, os, pickle
try:
    import numpy as np
except ImportError:
    sys.exit("numpy is needed to read MultiBench pickles: pip install numpy")
src, out, allowed = sys.argv[1], sys.argv[2], sys.argv[3]
ALLOWED = {tuple(g.rsplit(".", 1)) for g in allowed.split(",")}

class Refused(Exception):
    pass

class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise Refused(f"refused to load the global `{module}.{name}`: only numpy arrays and plain containers are read from a pickle, so no code in it runs")

    def persistent_load(self, pid):
        raise Refused("refused a persistent id: only numpy arrays and plain containers are read from a pickle")

try:
    with open(src, "rb") as f:
        data = RestrictedUnpickler(f).load()
except Refused as e:
    sys.exit(str(e))
except Exception as e:
    sys.exit(f"not a readable pickle ({type(e).__name__}: {e})")
if not isinstance(data, dict):
    sys.exit(f"expected a dict of splits, found {type(data).__name__}")
for split in ("train", "valid", "test"):
    if split not in data or not isinstance(data[split], dict):
        sys.exit(f"missing split `{split}` (keys: {sorted(map(str, data))})")
    for key in ("vision", "audio", "text", "labels"):
        if key not in data[split]:
            sys.exit(f"split `{split}` has no `{key}` (keys: {sorted(map(str, data[split]))})")
        try:
            arr = np.asarray(data[split][key], dtype=np.float64)
        except Exception as e:
            sys.exit(f"`{split}/{key}` is not a numeric array ({e})")
        np.save(os.path.join(out, f"{split}_{key}.npy"), arr)
"#;

/// The only globals a pickle may name: numpy's array and scalar reconstructors (numpy 1 and 2
/// module paths), `ndarray`, `dtype`, the buffer reader of protocol 5, the bytes helper of
/// protocol 2 (`_codecs.encode`) and `OrderedDict`. Each builds data; none runs a command.
pub const ALLOWED_GLOBALS: [&str; 10] = [
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.numeric._frombuffer",
    "numpy._core.numeric._frombuffer",
    "numpy.ndarray",
    "numpy.dtype",
    "_codecs.encode",
    "collections.OrderedDict",
];

/// Reads a MultiBench affect pickle; `dataset` is mosi, mosei or urfunny.
pub fn load(file: &Path, dataset: &str) -> Result<(DataSplit, DataSplit, DataSplit)> {
    if !file.is_file() {
        bail!("{}: file not found", file.display());
    }
    let tmp = std::env::temp_dir().join(format!("mgr-affect-{}-{}", std::process::id(), dataset));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let result = (|| {
        let output = Command::new("python3")
            .arg("-c")
            .arg(CONVERT)
            .arg(file)
            .arg(&tmp)
            .arg(ALLOWED_GLOBALS.join(","))
            .output()
            .context("cannot run python3 (needed to unpickle numpy arrays)")?;
        if !output.status.success() {
            let msg = String::from_utf8_lossy(&output.stderr);
            let last = msg.lines().last().unwrap_or("unknown error");
            bail!("{}: {last}", file.display());
        }
        let mut splits = Vec::new();
        for split in ["train", "valid", "test"] {
            splits.push(read_split(file, &tmp, split, dataset)?);
        }
        Ok(splits)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    let mut splits = result?;
    let mut test = splits.pop().expect("3");
    let mut valid = splits.pop().expect("3");
    let mut train = splits.pop().expect("3");
    for m in 0..3 {
        let d = train.modalities[m].token_dim;
        let (mean, std) = feature_moments(&train.features[m], d);
        for s in [&mut train, &mut valid, &mut test] {
            for (i, v) in s.features[m].iter_mut().enumerate() {
                *v = ((*v as f64 - mean[i % d]) / std[i % d]) as f32;
            }
        }
    }
    Ok((train, valid, test))
}

fn feature_moments(values: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
    let rows = (values.len() / d.max(1)).max(1) as f64;
    let mut mean = vec![0.0; d];
    for (i, &v) in values.iter().enumerate() {
        mean[i % d] += v as f64 / rows;
    }
    let mut var = vec![0.0; d];
    for (i, &v) in values.iter().enumerate() {
        var[i % d] += (v as f64 - mean[i % d]).powi(2) / rows;
    }
    (mean, var.into_iter().map(|v| v.sqrt().max(1e-6)).collect())
}

fn read_split(file: &Path, dir: &Path, split: &str, dataset: &str) -> Result<DataSplit> {
    let what = |key: &str| format!("{} [{split}/{key}]", file.display());
    let read3 = |key: &str| -> Result<Array3<f64>> {
        ndarray_npy::read_npy::<_, Array3<f64>>(dir.join(format!("{split}_{key}.npy")))
            .map_err(|e| anyhow!("{}: expected an (N, T, D) array: {e}", what(key)))
    };
    let mut arrays = Vec::new();
    for key in ["vision", "audio", "text"] {
        let mut a = read3(key)?;
        if key == "audio" {
            a.mapv_inplace(|v| if v == f64::NEG_INFINITY { 0.0 } else { v });
        }
        if a.iter().any(|v| !v.is_finite()) {
            bail!("{}: contains NaN or infinite values", what(key));
        }
        arrays.push((key, a));
    }
    let labels = read_labels(&dir.join(format!("{split}_labels.npy")), &what("labels"))?;
    let n = arrays[0].1.shape()[0];
    if labels.len() != n {
        bail!(
            "{}: {} labels for {n} samples",
            what("labels"),
            labels.len()
        );
    }
    if labels.iter().any(|v| !v.is_finite()) {
        bail!("{}: contains NaN or infinite values", what("labels"));
    }
    let mut modalities = Vec::new();
    let mut features = Vec::new();
    for (key, a) in arrays {
        if a.shape()[0] != n {
            bail!(
                "{}: {} samples, the other modalities have {n}",
                what(key),
                a.shape()[0]
            );
        }
        modalities.push(ModalitySpec::new(
            key.into(),
            a.shape()[1].max(1),
            a.shape()[2].max(1),
        ));
        features.push(a.iter().map(|&v| v as f32).collect::<Vec<f32>>());
    }
    let targets = targets(&labels, dataset, &what("labels"))?;
    Ok(DataSplit {
        name: format!("{} [{split}]", file.display()),
        modalities,
        features,
        targets,
        truth: None,
    })
}

/// A split's labels, any shape (MOSI's are `(N, 1, 1)`), flattened; `what` names them in errors.
fn read_labels(path: &Path, what: &str) -> Result<Array1<f64>> {
    Ok(match ndarray_npy::read_npy::<_, Array3<f64>>(path) {
        Ok(a) => a.iter().copied().collect(),
        Err(_) => ndarray_npy::read_npy::<_, ndarray::Array<f64, ndarray::IxDyn>>(path)
            .map_err(|e| anyhow!("{what}: {e}"))?
            .iter()
            .copied()
            .collect(),
    })
}

/// The targets of `dataset`: UR-FUNNY's labels are classes 0 / 1, the others' sentiment values.
fn targets(labels: &Array1<f64>, dataset: &str, what: &str) -> Result<Targets> {
    if dataset != "urfunny" {
        return Ok(Targets::Values(labels.iter().map(|&v| v as f32).collect()));
    }
    let classes = labels
        .iter()
        .map(|&l| {
            if l == 0.0 || l == 1.0 {
                Ok(l as usize)
            } else {
                Err(anyhow!("{what}: UR-FUNNY label {l} is not 0 or 1"))
            }
        })
        .collect::<Result<Vec<usize>>>()?;
    Ok(Targets::Classes {
        labels: classes,
        n_classes: 2,
    })
}
