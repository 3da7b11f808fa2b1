//! The samples the page draws: synthetic ones, generated from the model's dataset config for any
//! index, or AV-MNIST test samples shipped with the model (`samples.safetensors`, written by
//! `mgr export-web`: the model's inputs, the original digit and the spoken recording).
//! Plain Rust, so it is tested natively.

use mgr::ModalitySpec;
use mgr::synthetic::{self, SyntheticSample};
use safetensors::{Dtype, SafeTensors};

/// One AV-MNIST test sample as exported for the page.
#[derive(Clone, Debug)]
pub struct AvSample {
    /// The digit.
    pub label: usize,
    /// The model's input per modality ([16 * 49] vision, [28 * 448] audio), standardised.
    pub features: Vec<Vec<f32>>,
    /// The original MNIST digit, 28 x 28 bytes (the model sees it PCA-reduced).
    pub pixels: Vec<u8>,
    /// The Free Spoken Digit Dataset recording paired with it (16-bit samples).
    pub wave: Vec<i16>,
    /// Its file name, `{digit}_{speaker}_{index}.wav`.
    pub recording: String,
}

impl AvSample {
    /// The speaker's name, from the recording's file name.
    pub fn speaker(&self) -> &str {
        self.recording.split('_').nth(1).unwrap_or("?")
    }
}

/// The AV-MNIST samples shipped with a model.
#[derive(Clone, Debug)]
pub struct AvSamples {
    /// In test-split order.
    pub samples: Vec<AvSample>,
    /// Of every recording (8,000 Hz for FSDD).
    pub sample_rate: u32,
}

fn tensor<'a>(
    st: &SafeTensors<'a>,
    file: &str,
    name: &str,
    dtype: Dtype,
    shape: Option<&[usize]>,
) -> Result<&'a [u8], String> {
    let view = st
        .tensor(name)
        .map_err(|_| format!("{file}: no tensor `{name}`"))?;
    if view.dtype() != dtype {
        return Err(format!(
            "{file}: `{name}` is {:?}, expected {dtype:?}",
            view.dtype()
        ));
    }
    if let Some(shape) = shape
        && view.shape() != shape
    {
        return Err(format!(
            "{file}: `{name}` has shape {:?}, expected {shape:?}",
            view.shape()
        ));
    }
    Ok(view.data())
}

/// The samples file's metadata: its format (checked), the recordings' names and the sample rate.
fn metadata(bytes: &[u8], file: &str) -> Result<(Vec<String>, u32), String> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("{file}: not a safetensors file: {e}"))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(mgr::avmnist_tokens::WEB_SAMPLES_FORMAT) {
        return Err(format!(
            "{file}: format {:?}, expected {}",
            meta.get("format"),
            mgr::avmnist_tokens::WEB_SAMPLES_FORMAT
        ));
    }
    let recordings: Vec<String> = meta
        .get("recordings")
        .and_then(|r| serde_json::from_str(r).ok())
        .ok_or_else(|| format!("{file}: metadata `recordings` is not a list of names"))?;
    let sample_rate: u32 = meta
        .get("sample_rate")
        .and_then(|r| r.parse().ok())
        .filter(|r| (3000..=192_000).contains(r))
        .ok_or_else(|| format!("{file}: metadata `sample_rate` is not a rate in Hz"))?;
    Ok((recordings, sample_rate))
}

/// Each modality's inputs of the `n` samples (`input.<name>`, F16), as f32; finite.
fn f16_inputs(
    st: &SafeTensors,
    file: &str,
    modalities: &[ModalitySpec],
    n: usize,
) -> Result<Vec<Vec<f32>>, String> {
    modalities
        .iter()
        .map(|m| {
            let name = format!("input.{}", m.name);
            let bytes = tensor(
                st,
                file,
                &name,
                Dtype::F16,
                Some(&[n, m.n_tokens, m.token_dim]),
            )?;
            let values: Vec<f32> = bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect();
            if values.iter().any(|v| !v.is_finite()) {
                return Err(format!("{file}: `{name}` holds NaN or infinite values"));
            }
            Ok(values)
        })
        .collect()
}

impl AvSamples {
    /// Reads `samples.safetensors` for a model with `modalities`; every problem is an error that
    /// names `file` and the tensor.
    pub fn parse(bytes: &[u8], modalities: &[ModalitySpec], file: &str) -> Result<Self, String> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| format!("{file}: not a safetensors file: {e}"))?;
        let (recordings, sample_rate) = metadata(bytes, file)?;
        let n = recordings.len();
        let labels = tensor(&st, file, "label", Dtype::U8, Some(&[n]))?;
        if let Some(bad) = labels.iter().find(|&&l| l > 9) {
            return Err(format!("{file}: label {bad} is not a digit"));
        }
        let pixels = tensor(&st, file, "pixels", Dtype::U8, Some(&[n, 784]))?;
        let inputs = f16_inputs(&st, file, modalities, n)?;
        let wave: Vec<i16> = tensor(&st, file, "wave", Dtype::I16, None)?
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let offsets: Vec<i64> = tensor(&st, file, "wave_offset", Dtype::I64, Some(&[n + 1]))?
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        if offsets[0] != 0
            || offsets.windows(2).any(|w| w[0] > w[1])
            || offsets[n] != wave.len() as i64
        {
            return Err(format!(
                "{file}: `wave_offset` does not cut `wave` ({} samples) into {n} recordings",
                wave.len()
            ));
        }
        let samples = (0..n)
            .map(|i| AvSample {
                label: usize::from(labels[i]),
                features: modalities
                    .iter()
                    .zip(&inputs)
                    .map(|(m, values)| {
                        let per = m.n_tokens * m.token_dim;
                        values[i * per..(i + 1) * per].to_vec()
                    })
                    .collect(),
                pixels: pixels[i * 784..(i + 1) * 784].to_vec(),
                wave: wave[offsets[i] as usize..offsets[i + 1] as usize].to_vec(),
                recording: recordings[i].clone(),
            })
            .collect();
        Ok(AvSamples {
            samples,
            sample_rate,
        })
    }
}

/// A sample the page draws.
#[derive(Clone, Debug)]
pub enum PageSample {
    /// Generated from the synthetic dataset's config.
    Synthetic(SyntheticSample),
    /// An AV-MNIST test sample shipped with the model.
    Avmnist(AvSample),
}

/// What the canvas draws of a sample: each value in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    /// The image, row-major, `image_side` x `image_side` (1 = ink).
    pub image: Vec<f32>,
    /// Its side in pixels.
    pub image_side: usize,
    /// The spectrogram, frame-major: `frames` x `bins` (1 = loudest).
    pub spectrogram: Vec<f32>,
    /// Time frames.
    pub frames: usize,
    /// Frequency bins.
    pub bins: usize,
    /// The sentence's words, if the data has text.
    pub words: Vec<String>,
    /// The original digit (28 x 28) when the model sees a reduced one (AV-MNIST's PCA image).
    pub original: Option<Vec<f32>>,
}

/// `values` scaled to [0, 1] by their own minimum and maximum (a constant input gives zeros).
pub fn min_max(values: &[f32]) -> Vec<f32> {
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let span = hi - lo;
    values
        .iter()
        .map(|&v| if span > 0.0 { (v - lo) / span } else { 0.0 })
        .collect()
}

impl PageSample {
    /// The class.
    pub fn label(&self) -> usize {
        match self {
            PageSample::Synthetic(s) => s.label,
            PageSample::Avmnist(s) => s.label,
        }
    }

    /// The model's input, per modality.
    pub fn features(&self) -> Vec<Vec<f32>> {
        match self {
            PageSample::Synthetic(s) => s.features(),
            PageSample::Avmnist(s) => s.features.clone(),
        }
    }

    /// What the data knows of each token (synthetic: its noise tokens and the digit each
    /// modality shows; [`mgr::truth`]); None for real data.
    pub fn truth(&self) -> Option<mgr::truth::SampleTruth> {
        match self {
            PageSample::Synthetic(s) => Some(s.truth()),
            PageSample::Avmnist(_) => None,
        }
    }

    /// What the canvas draws: the synthetic sample's own image, spectrogram and words; for
    /// AV-MNIST the model's inputs put back into an image and a spectrogram (as the model sees
    /// them: the PCA-reduced digit, the noisy spectrogram in log power), and the original digit.
    pub fn picture(&self) -> Picture {
        match self {
            PageSample::Synthetic(s) => Picture {
                image: s.image.clone(),
                image_side: synthetic::IMAGE_SIDE,
                spectrogram: s.spectrogram.clone(),
                frames: synthetic::FRAMES,
                bins: synthetic::BINS,
                words: s
                    .words
                    .iter()
                    .map(|&w| synthetic::VOCABULARY[w].to_string())
                    .collect(),
                original: None,
            },
            PageSample::Avmnist(s) => Picture {
                image: min_max(&mgr::avmnist_tokens::image_from_tokens(&s.features[0])),
                image_side: mgr::avmnist_tokens::IMAGE_SIDE,
                spectrogram: min_max(&mgr::avmnist_tokens::spectrogram_from_tokens(
                    &s.features[1],
                )),
                frames: mgr::avmnist_tokens::FRAMES,
                bins: mgr::avmnist_tokens::BINS,
                words: Vec::new(),
                original: Some(s.pixels.iter().map(|&p| f32::from(p) / 255.0).collect()),
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    /// A samples file of `n` samples as `mgr export-web` writes it (tiny waves).
    pub(crate) fn samples_file(n: usize, metadata_format: &str) -> Vec<u8> {
        let mods = mgr::avmnist_tokens::modalities();
        let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
        let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = mods
            .iter()
            .enumerate()
            .map(|(m, s)| {
                let count = n * s.n_tokens * s.token_dim;
                (
                    format!("input.{}", s.name),
                    Dtype::F16,
                    vec![n, s.n_tokens, s.token_dim],
                    (0..count)
                        .flat_map(|i| f16((i % 7) as f32 - m as f32))
                        .collect(),
                )
            })
            .collect();
        tensors.push((
            "label".into(),
            Dtype::U8,
            vec![n],
            (0..n as u8).map(|i| i % 10).collect(),
        ));
        tensors.push(("pixels".into(), Dtype::U8, vec![n, 784], vec![255; n * 784]));
        let wave: Vec<i16> = (0..3 * n as i16).collect();
        tensors.push((
            "wave".into(),
            Dtype::I16,
            vec![wave.len()],
            wave.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
        tensors.push((
            "wave_offset".into(),
            Dtype::I64,
            vec![n + 1],
            (0..=n as i64).flat_map(|i| (3 * i).to_le_bytes()).collect(),
        ));
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(name, d, shape, bytes)| {
                (
                    name.clone(),
                    TensorView::new(*d, shape.clone(), bytes).unwrap(),
                )
            })
            .collect();
        let names: Vec<String> = (0..n).map(|i| format!("{}_x_{i}.wav", i % 10)).collect();
        let meta = std::collections::HashMap::from([
            ("format".to_string(), metadata_format.to_string()),
            (
                "recordings".to_string(),
                serde_json::to_string(&names).unwrap(),
            ),
            ("sample_rate".to_string(), "8000".to_string()),
        ]);
        safetensors::serialize(views, Some(meta)).unwrap()
    }

    #[test]
    fn exported_samples_read_back_per_sample() {
        let mods = mgr::avmnist_tokens::modalities();
        let samples = AvSamples::parse(&samples_file(3, "mgr-web-samples/1"), &mods, "s").unwrap();
        assert_eq!(samples.samples.len(), 3);
        assert_eq!(samples.sample_rate, 8000);
        let second = &samples.samples[1];
        assert_eq!(second.label, 1);
        assert_eq!(second.wave, vec![3, 4, 5]);
        assert_eq!(second.recording, "1_x_1.wav");
        assert_eq!(second.speaker(), "x");
        // Vision values of sample 1 start at flat index 784: 784 % 7 = 0.
        assert_eq!(second.features[0][0], 0.0);
        assert_eq!(second.features[0][1], 1.0);
        assert_eq!(second.features[1][0], ((28 * 448) % 7) as f32 - 1.0);
        let picture = PageSample::Avmnist(second.clone()).picture();
        assert_eq!(picture.image.len(), 784);
        assert_eq!(picture.spectrogram.len(), 112 * 112);
        assert!(picture.image.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(picture.original.as_ref().unwrap()[0], 1.0);
    }

    #[test]
    fn a_bad_samples_file_is_an_error_that_names_it() {
        let mods = mgr::avmnist_tokens::modalities();
        let wrong = AvSamples::parse(&samples_file(2, "other/1"), &mods, "s.st").unwrap_err();
        assert!(
            wrong.contains("s.st") && wrong.contains("format"),
            "{wrong}"
        );
        let mut cut = samples_file(2, "mgr-web-samples/1");
        cut.truncate(cut.len() / 2);
        let err = AvSamples::parse(&cut, &mods, "s.st").unwrap_err();
        assert!(err.starts_with("s.st: "), "{err}");
        // A model with other modalities asks for tensors the file does not have.
        let other = mgr::synthetic::modalities();
        let err =
            AvSamples::parse(&samples_file(2, "mgr-web-samples/1"), &other, "s.st").unwrap_err();
        assert!(err.contains("input.vision"), "{err}");
    }

    #[test]
    fn min_max_spans_zero_to_one() {
        assert_eq!(min_max(&[2.0, 4.0, 3.0]), vec![0.0, 1.0, 0.5]);
        assert_eq!(min_max(&[5.0, 5.0]), vec![0.0, 0.0]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// A damaged samples file is an error or samples, never a panic.
        #[test]
        fn a_damaged_samples_file_never_panics(
            edits in proptest::collection::vec(
                (proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>(), 0u8..3), 1..6),
        ) {
            let bytes = mgr::fuzz::mutate_bytes(samples_file(2, "mgr-web-samples/1"), &edits);
            let _ = AvSamples::parse(&bytes, &mgr::avmnist_tokens::modalities(), "s");
        }
    }
}
