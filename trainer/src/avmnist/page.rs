//! The page's AV-MNIST samples: test samples with the recordings they were made from, rebuilt
//! from the raw files for `mgr export-web`.

use anyhow::{Context, Result, anyhow, bail};
use mgr::data::{DataSplit, Targets};
use std::path::{Path, PathBuf};

use super::build::{RATE, read_mnist, read_pcm};

/// The page's credit line for AV-MNIST samples (the recordings are CC BY-SA 4.0: shared with
/// the page, so credited there).
pub const PAGE_CREDIT: &str = "Handwritten digits: MNIST (LeCun, Cortes and Burges). Spoken digits: the Free Spoken Digit Dataset (Jackson et al., github.com/Jakobovski/free-spoken-digit-dataset), CC BY-SA 4.0; the recordings played here are shared under the same licence.";

/// Where the MNIST and FSDD folders of a prepared dataset are: the flags if given, else what
/// `mgr prepare` wrote into its `recipe.json`.
pub fn source_dirs(
    data: &Path,
    mnist: Option<&Path>,
    fsdd: Option<&Path>,
) -> Result<(PathBuf, PathBuf)> {
    let recipe_path = data.join("recipe.json");
    let recipe: Option<serde_json::Value> = std::fs::read_to_string(&recipe_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let from_recipe = |key: &str| {
        recipe
            .as_ref()
            .and_then(|r| r[key].as_str())
            .map(PathBuf::from)
    };
    let pick = |flag: Option<&Path>, key: &str, what: &str| {
        flag.map(Path::to_path_buf)
            .or_else(|| from_recipe(key))
            .ok_or_else(|| {
                anyhow!(
                    "{}: does not say where the {what} files are (prepared by an older mgr); pass --{}",
                    recipe_path.display(),
                    key.replace('_', "-")
                )
            })
    };
    Ok((
        pick(mnist, "mnist_dir", "MNIST")?,
        pick(fsdd, "fsdd_dir", "FSDD")?,
    ))
}

/// The first `n` test samples of a prepared AV-MNIST folder `data`, for the page, as
/// safetensors: `input.vision` [n, 16, 49] and `input.audio` [n, 28, 448] (F16: the model's
/// inputs, standardised as `test` holds them), `label` [n] (U8), `pixels` [n, 784] (U8: the
/// original MNIST digit), `wave` (I16: every sample's FSDD recording, concatenated, 8 kHz) and
/// `wave_offset` [n + 1] (I64: where each one starts); metadata `format`
/// (`mgr-web-samples/1`), `recordings` (a JSON list of file names) and `sample_rate`.
pub fn page_samples(
    data: &Path,
    mnist: &Path,
    fsdd: &Path,
    test: &DataSplit,
    n: usize,
) -> Result<Vec<u8>> {
    use safetensors::Dtype;
    let n = n.min(test.len());
    let recordings = test_recordings(data, n)?;
    let (pixels, mnist_labels, n_mnist) = read_mnist(mnist, false)?;
    if n_mnist < n {
        bail!("{}: {n_mnist} test digits, fewer than {n}", mnist.display());
    }
    let Targets::Classes { labels, .. } = &test.targets else {
        bail!("{}: AV-MNIST has class labels", test.name);
    };
    let mut waves: Vec<i16> = Vec::new();
    let mut offsets: Vec<i64> = vec![0];
    for (i, name) in recordings.iter().enumerate() {
        if usize::from(mnist_labels[i]) != labels[i] || !name.starts_with(&labels[i].to_string()) {
            bail!(
                "test sample {i}: label {} in {}, digit {} in {}, recording {name}: the folders do not belong together",
                labels[i],
                data.display(),
                mnist_labels[i],
                mnist.display()
            );
        }
        waves.extend(read_pcm(&fsdd.join("recordings").join(name))?);
        offsets.push(waves.len() as i64);
    }
    let f16_bytes = |values: &[f32]| -> Vec<u8> {
        values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect()
    };
    let mut tensors: Vec<NamedTensor> = Vec::new();
    for (m, spec) in test.modalities.iter().enumerate() {
        let values: Vec<f32> = (0..n)
            .flat_map(|i| test.sample_features(m, i).iter().copied())
            .collect();
        tensors.push((
            format!("input.{}", spec.name),
            Dtype::F16,
            vec![n, spec.n_tokens, spec.token_dim],
            f16_bytes(&values),
        ));
    }
    tensors.extend([
        (
            "label".into(),
            Dtype::U8,
            vec![n],
            labels[..n].iter().map(|&l| l as u8).collect(),
        ),
        (
            "pixels".into(),
            Dtype::U8,
            vec![n, 784],
            pixels[..n * 784].to_vec(),
        ),
        (
            "wave".into(),
            Dtype::I16,
            vec![waves.len()],
            waves.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "wave_offset".into(),
            Dtype::I64,
            vec![n + 1],
            offsets.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    ]);
    samples_file(&tensors, &recordings)
}

/// A tensor of the page's samples file: name, dtype, shape, little-endian bytes.
type NamedTensor = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// The recording (FSDD file name) of each of the first `n` test samples, from the prepared
/// folder's `audio/test_sources.csv`.
fn test_recordings(data: &Path, n: usize) -> Result<Vec<String>> {
    let sources_path = data.join("audio/test_sources.csv");
    let sources = std::fs::read_to_string(&sources_path).with_context(|| {
        format!(
            "{}: cannot read which recording each test sample has (prepare the data again with mgr prepare avmnist)",
            sources_path.display()
        )
    })?;
    let recordings: Vec<String> = sources
        .lines()
        .skip(1)
        .take(n)
        .map(|row| row.split(',').nth(1).unwrap_or("").trim().to_string())
        .collect();
    if recordings.len() < n || recordings.iter().any(String::is_empty) {
        bail!(
            "{}: {} rows of `label,recording`, expected at least {n}",
            sources_path.display(),
            recordings.len()
        );
    }
    Ok(recordings)
}

/// The samples file: the tensors, and the format, recordings and sample rate as metadata.
fn samples_file(tensors: &[NamedTensor], recordings: &[String]) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| anyhow!("page samples tensor {name}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = std::collections::HashMap::from([
        (
            "format".to_string(),
            mgr::avmnist_tokens::WEB_SAMPLES_FORMAT.to_string(),
        ),
        ("recordings".to_string(), serde_json::to_string(recordings)?),
        ("sample_rate".to_string(), RATE.to_string()),
    ]);
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| anyhow!("cannot serialise the page samples: {e}"))
}
