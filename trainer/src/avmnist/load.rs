//! `--dataset avmnist`: a prepared folder (ours or MultiBench's npy layout) loaded as splits.

use anyhow::{Context, Result, anyhow, bail};
use mgr::ModalitySpec;
use mgr::data::{DataSplit, Targets};
use ndarray::{Array2, Array3};
use std::path::Path;

use super::SPEC;

/// Reads a float npy array of any float or integer dtype, naming the file on error.
fn read_f32<D: ndarray::Dimension>(path: &Path) -> Result<ndarray::Array<f32, D>> {
    if !path.is_file() {
        bail!("{}: file not found", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_npy_f32(&bytes, &path.display().to_string())
}

/// Parses npy bytes of f32, f64, u8 or i64 values into f32 (`what` names the source in errors).
pub fn parse_npy_f32<D: ndarray::Dimension>(
    bytes: &[u8],
    what: &str,
) -> Result<ndarray::Array<f32, D>> {
    use ndarray_npy::ReadNpyExt;
    if let Ok(a) = ndarray::Array::<f32, D>::read_npy(bytes) {
        return Ok(a);
    }
    if let Ok(a) = ndarray::Array::<f64, D>::read_npy(bytes) {
        return Ok(a.mapv(|v| v as f32));
    }
    if let Ok(a) = ndarray::Array::<u8, D>::read_npy(bytes) {
        return Ok(a.mapv(|v| v as f32));
    }
    match ndarray::Array::<i64, D>::read_npy(bytes) {
        Ok(a) => Ok(a.mapv(|v| v as f32)),
        Err(e) => bail!(
            "{what}: not a readable npy array of {} dimensions: {e}",
            D::NDIM.unwrap_or(0)
        ),
    }
}

fn read_any_image(path: &Path) -> Result<Array2<f32>> {
    if let Ok(a) = read_f32::<ndarray::Ix2>(path) {
        return Ok(a);
    }
    let a = read_f32::<ndarray::Ix3>(path).map_err(|_| {
        anyhow!(
            "{}: expected an (N, 784) or (N, 28, 28) array",
            path.display()
        )
    })?;
    let n = a.shape()[0];
    if a.shape()[1] * a.shape()[2] != 784 {
        bail!(
            "{}: images of {:?}, expected 28 x 28",
            path.display(),
            &a.shape()[1..]
        );
    }
    Ok(a.into_shape_with_order((n, 784))?)
}

/// The token grids of AV-MNIST.
/// The two modalities (the layout is [`mgr::avmnist_tokens`]'s, which the page draws back).
pub fn modalities() -> Vec<ModalitySpec> {
    mgr::avmnist_tokens::modalities()
}

struct Raw {
    image: Array2<f32>,
    audio: Array3<f32>,
    labels: Vec<usize>,
}

fn read_split(dir: &Path, split: &str) -> Result<Raw> {
    let image_path = dir.join(format!("image/{split}_data.npy"));
    let audio_path = dir.join(format!("audio/{split}_data.npy"));
    let label_path = dir.join(format!("{split}_labels.npy"));
    let image = read_any_image(&image_path)?;
    let audio = read_f32::<ndarray::Ix3>(&audio_path)?;
    let labels = read_f32::<ndarray::Ix1>(&label_path)?;
    let n = labels.len();
    if image.shape() != [n, 784] {
        bail!(
            "{}: shape {:?}, expected ({n}, 784) to match {}",
            image_path.display(),
            image.shape(),
            label_path.display()
        );
    }
    if audio.shape() != [n, SPEC, SPEC] {
        bail!(
            "{}: shape {:?}, expected ({n}, 112, 112) to match {}",
            audio_path.display(),
            audio.shape(),
            label_path.display()
        );
    }
    for (path, bad) in [
        (&image_path, image.iter().any(|v| !v.is_finite())),
        (&audio_path, audio.iter().any(|v| !v.is_finite())),
    ] {
        if bad {
            bail!("{}: contains NaN or infinite values", path.display());
        }
    }
    let labels: Vec<usize> = labels
        .iter()
        .map(|&l| {
            if (0.0..10.0).contains(&l) && l.fract() == 0.0 {
                Ok(l as usize)
            } else {
                Err(anyhow!(
                    "{}: label {l} is not a digit",
                    label_path.display()
                ))
            }
        })
        .collect::<Result<_>>()?;
    Ok(Raw {
        image,
        audio,
        labels,
    })
}

/// Tokens of one sample: 16 patches of 7 x 7, and 28 tokens of 4 frames x 112 frequencies
/// ([`mgr::avmnist_tokens`]'s layout).
fn tokens(raw: &Raw, i: usize, image_out: &mut Vec<f32>, audio_out: &mut Vec<f32>) {
    image_out.extend(mgr::avmnist_tokens::image_tokens(|p| raw.image[[i, p]]));
    audio_out.extend(mgr::avmnist_tokens::audio_tokens(|f, t| {
        raw.audio[[i, f, t]]
    }));
}

fn standardise(values: &mut [f32], mean: f64, std: f64) {
    for v in values.iter_mut() {
        *v = ((*v as f64 - mean) / std) as f32;
    }
}

fn moments(values: &[f32]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt().max(1e-12))
}

/// Loads MultiBench's AV-MNIST layout: (train, valid = last 10% of train, test).
pub fn load(dir: &Path) -> Result<(DataSplit, DataSplit, DataSplit)> {
    let mut splits = Vec::new();
    for split in ["train", "test"] {
        let raw = read_split(dir, split)?;
        let n = raw.labels.len();
        let (mut image, mut audio) = (
            Vec::with_capacity(n * 784),
            Vec::with_capacity(n * SPEC * SPEC),
        );
        for i in 0..n {
            tokens(&raw, i, &mut image, &mut audio);
        }
        image.iter_mut().for_each(|v| *v /= 255.0);
        audio
            .iter_mut()
            .for_each(|v| *v = (*v / 255.0 + 1e-10).max(1e-10).log10());
        splits.push(DataSplit {
            name: format!("{}/{split}", dir.display()),
            modalities: modalities(),
            features: vec![image, audio],
            targets: Targets::Classes {
                labels: raw.labels,
                n_classes: 10,
            },
            truth: None,
        });
    }
    let mut test = splits.pop().expect("two splits");
    let mut train = splits.pop().expect("two splits");
    for m in 0..2 {
        let (mean, std) = moments(&train.features[m]);
        standardise(&mut train.features[m], mean, std);
        standardise(&mut test.features[m], mean, std);
    }
    let n = train.len();
    let n_valid = (n / 10).max(1);
    if n < 2 {
        bail!(
            "{}: {n} training samples are too few to hold out a validation split",
            dir.display()
        );
    }
    let valid = train.subset(
        &((n - n_valid)..n).collect::<Vec<_>>(),
        format!("{}/valid", dir.display()),
    );
    let train = train.subset(
        &(0..n - n_valid).collect::<Vec<_>>(),
        format!("{}/train", dir.display()),
    );
    Ok((train, valid, test))
}
