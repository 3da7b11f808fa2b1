//! `mgr prepare avmnist`: AV-MNIST built from the raw MNIST and FSDD files (the recipe is in
//! the parent module's doc).

use anyhow::{Context, Result, anyhow, bail};
use flate2::read::GzDecoder;
use nalgebra::{DMatrix, SymmetricEigen};
use ndarray::{Array1, Array2, Array3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use realfft::RealFftPlanner;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::SPEC;

/// Gain of the noise mixed into every wave (MultiBench's recipe).
pub const NOISE_GAIN: f64 = 0.009;
/// Samples per wave after padding or cutting.
pub const WAVE_LEN: usize = 8000;
/// Window length and FFT size.
pub const NFFT: usize = 223;
/// Hop between windows.
pub const HOP: usize = 70;
/// Sample rate of the recordings.
pub const RATE: u32 = 8000;
/// The image PCA keeps the fewest components whose cumulative explained variance first exceeds
/// this (MultiBench's recipe).
pub const PCA_THRESHOLD: f64 = 0.25;
/// Training speakers.
pub const TRAIN_SPEAKERS: [&str; 3] = ["jackson", "nicolas", "theo"];
/// Test speaker.
pub const TEST_SPEAKER: &str = "yweweler";
/// The speakers MultiBench's recipe leaves unused: they speak the pretraining pool's digits
/// (`--pool`), so the backbone never hears a downstream recording.
pub const POOL_SPEAKERS: [&str; 2] = ["george", "lucas"];
/// The pool's own test split: its last tenth (its validation is, as for every folder, the
/// last tenth of the rest).
const POOL_TEST_SHARE: f64 = 0.1;

/// Reads an idx file (MNIST's format), gzip-compressed or not: (dims, bytes).
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: broken gzip stream", path.display()))?;
        out
    } else {
        raw
    };
    parse_idx(bytes, &path.display().to_string())
}

/// Parses idx bytes of unsigned bytes (`what` names the source in errors): the header's
/// dimensions must describe exactly the bytes that follow it.
pub fn parse_idx(bytes: Vec<u8>, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        bail!("{what}: not an idx file of unsigned bytes");
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        bail!("{what}: truncated idx header");
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    // Checked: four u32 dimensions can overflow a usize.
    let want = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if want != Some(bytes.len() - header) {
        bail!(
            "{what}: idx header says {dims:?} = {} values, the file holds {}",
            want.map_or("too many".to_string(), |n| n.to_string()),
            bytes.len() - header
        );
    }
    let mut bytes = bytes;
    Ok((dims, bytes.split_off(header)))
}

fn find_mnist(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{}: none of {} found", dir.display(), names.join(", ")))
}

/// MNIST images ([n, 784] pixels) and labels of one split.
pub(crate) fn read_mnist(dir: &Path, train: bool) -> Result<(Vec<u8>, Vec<u8>, usize)> {
    let (images, labels) = if train {
        (
            find_mnist(
                dir,
                &[
                    "train-images-idx3-ubyte.gz",
                    "train-images-idx3-ubyte",
                    "train10k-images-idx3-ubyte.gz",
                ],
            )?,
            find_mnist(
                dir,
                &[
                    "train-labels-idx1-ubyte.gz",
                    "train-labels-idx1-ubyte",
                    "train10k-labels-idx1-ubyte.gz",
                ],
            )?,
        )
    } else {
        (
            find_mnist(
                dir,
                &["t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"],
            )?,
            find_mnist(
                dir,
                &["t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte"],
            )?,
        )
    };
    let (idims, pixels) = read_idx(&images)?;
    let (ldims, labels_v) = read_idx(&labels)?;
    if idims.len() != 3 || idims[1] != 28 || idims[2] != 28 {
        bail!(
            "{}: expected n x 28 x 28 images, found {:?}",
            images.display(),
            idims
        );
    }
    if ldims != [idims[0]] {
        bail!(
            "{}: {} labels for {} images in {}",
            labels.display(),
            ldims.first().copied().unwrap_or(0),
            idims[0],
            images.display()
        );
    }
    if let Some(bad) = labels_v.iter().find(|&&l| l > 9) {
        bail!("{}: label {bad} is not a digit", labels.display());
    }
    Ok((pixels, labels_v, idims[0]))
}

/// PCA of the images: the fewest components whose cumulative explained variance first exceeds
/// `threshold`; returns (mean [784], components [784 x k]).
pub fn fit_pca(pixels: &[u8], n: usize, threshold: f64) -> (Vec<f64>, DMatrix<f64>) {
    let d = 784;
    let mut x = DMatrix::<f64>::from_fn(n, d, |i, j| pixels[i * d + j] as f64);
    let mean: Vec<f64> = (0..d).map(|j| x.column(j).sum() / n as f64).collect();
    for (j, m) in mean.iter().enumerate() {
        x.column_mut(j).add_scalar_mut(-m);
    }
    let cov = (x.transpose() * &x) / (n.max(2) - 1) as f64;
    let eig = SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| {
        eig.eigenvalues[b]
            .partial_cmp(&eig.eigenvalues[a])
            .expect("finite eigenvalues")
    });
    let total: f64 = eig.eigenvalues.iter().map(|v| v.max(0.0)).sum();
    let mut cumulative = 0.0;
    let mut k = 0;
    for &i in &order {
        cumulative += eig.eigenvalues[i].max(0.0);
        k += 1;
        if cumulative / total > threshold {
            break;
        }
    }
    let components = DMatrix::from_fn(d, k, |r, c| eig.eigenvectors[(r, order[c])]);
    (mean, components)
}

/// Each image replaced by its projection on the components, mean not added back: [n, 784].
pub fn project(pixels: &[u8], n: usize, mean: &[f64], components: &DMatrix<f64>) -> Vec<f32> {
    let d = 784;
    let x = DMatrix::<f64>::from_fn(n, d, |i, j| pixels[i * d + j] as f64 - mean[j]);
    let projected = (&x * components) * components.transpose(); // [n, 784]
    let mut out = Vec::with_capacity(n * d);
    for i in 0..n {
        for j in 0..d {
            out.push(projected[(i, j)] as f32);
        }
    }
    out
}

/// A recording: the wave scaled to [-1, 1].
fn read_wav(path: &Path) -> Result<Vec<f64>> {
    Ok(read_pcm(path)?
        .into_iter()
        .map(|s| s as f64 / 32768.0)
        .collect())
}

/// A recording's 16-bit samples, checked to be the dataset's format (mono, 16-bit, 8 kHz).
pub(super) fn read_pcm(path: &Path) -> Result<Vec<i16>> {
    let mut reader = hound::WavReader::open(path)
        .with_context(|| format!("{}: not a readable wav file", path.display()))?;
    let spec = reader.spec();
    if spec.channels != 1
        || spec.sample_format != hound::SampleFormat::Int
        || spec.bits_per_sample != 16
    {
        bail!(
            "{}: expected mono 16-bit PCM, found {} channels, {} bits",
            path.display(),
            spec.channels,
            spec.bits_per_sample
        );
    }
    if spec.sample_rate != RATE {
        bail!(
            "{}: expected {RATE} Hz, found {}",
            path.display(),
            spec.sample_rate
        );
    }
    let samples: Result<Vec<i16>, _> = reader.samples::<i16>().collect();
    let samples =
        samples.with_context(|| format!("{}: truncated or broken wav data", path.display()))?;
    if samples.is_empty() {
        bail!("{}: no samples", path.display());
    }
    Ok(samples)
}

/// The power spectrogram, [112 frequencies][112 frames], as scipy.signal.spectrogram(x,
/// fs=8000, window='boxcar', nperseg=223, noverlap=153) computes it.
pub fn spectrogram(wave: &[f64], planner: &mut RealFftPlanner<f64>) -> Vec<f32> {
    let fft = planner.plan_fft_forward(NFFT);
    let mut input = fft.make_input_vec();
    let mut output = fft.make_output_vec();
    let scale = 1.0 / (RATE as f64 * NFFT as f64); // density: 1 / (fs * sum(window^2)), boxcar
    let mut out = vec![0.0f32; SPEC * SPEC];
    for t in 0..SPEC {
        let start = t * HOP;
        let segment = &wave[start..start + NFFT];
        let mean = segment.iter().sum::<f64>() / NFFT as f64; // detrend='constant'
        for (dst, &v) in input.iter_mut().zip(segment) {
            *dst = v - mean;
        }
        fft.process(&mut input, &mut output)
            .expect("sizes from the plan");
        for (f, c) in output.iter().enumerate().take(SPEC) {
            let one_sided = if f == 0 { 1.0 } else { 2.0 }; // nfft odd: no Nyquist bin
            out[f * SPEC + t] = (c.norm_sqr() * scale * one_sided) as f32;
        }
    }
    out
}

/// The recordings of `speakers`, per digit, in speaker then index order.
fn recordings(fsdd: &Path, speakers: &[&str]) -> Result<BTreeMap<u8, Vec<PathBuf>>> {
    let dir = fsdd.join("recordings");
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut found: Vec<(u8, usize, usize, PathBuf)> = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let parts: Vec<&str> = stem.split('_').collect();
        if parts.len() != 3 || path.extension().and_then(|e| e.to_str()) != Some("wav") {
            continue;
        }
        let (Ok(digit), Some(speaker), Ok(index)) = (
            parts[0].parse::<u8>(),
            speakers.iter().position(|s| *s == parts[1]),
            parts[2].parse::<usize>(),
        ) else {
            continue;
        };
        found.push((digit, speaker, index, path));
    }
    found.sort();
    let mut by_digit: BTreeMap<u8, Vec<PathBuf>> = BTreeMap::new();
    for (digit, _, _, path) in found {
        by_digit.entry(digit).or_default().push(path);
    }
    for d in 0..10u8 {
        if by_digit.get(&d).is_none_or(|v| v.is_empty()) {
            bail!(
                "{}: no recording of digit {d} by {}",
                dir.display(),
                speakers.join(", ")
            );
        }
    }
    Ok(by_digit)
}

/// Spectrograms for `labels`, cycling through each digit's recordings; [n, 112, 112].
fn audio_for(
    labels: &[u8],
    recs: &BTreeMap<u8, Vec<PathBuf>>,
    rng: &mut ChaCha8Rng,
    sources: &mut String,
) -> Result<Vec<f32>> {
    let mut cache: BTreeMap<PathBuf, Vec<f64>> = BTreeMap::new();
    let mut next: BTreeMap<u8, usize> = BTreeMap::new();
    let mut planner = RealFftPlanner::<f64>::new();
    let mut out = Vec::with_capacity(labels.len() * SPEC * SPEC);
    for &label in labels {
        let list = &recs[&label];
        let counter = next.entry(label).or_insert(0);
        let path = &list[*counter % list.len()];
        *counter += 1;
        sources.push_str(&format!(
            "{label},{}\n",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("?")
        ));
        if !cache.contains_key(path) {
            cache.insert(path.clone(), read_wav(path)?);
        }
        let mut wave = cache[path].clone();
        wave.resize(WAVE_LEN, 0.0);
        for v in wave.iter_mut() {
            // Box-Muller white noise, unit variance, times the recipe's gain. Not
            // mgr::synthetic::standard_normal: the gain multiplies first here, and another order
            // of the products would change the prepared data's last bits.
            let (u, w): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
            *v += NOISE_GAIN * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * w).cos();
        }
        out.extend(spectrogram(&wave, &mut planner));
    }
    Ok(out)
}

/// What `mgr prepare avmnist` wrote.
pub struct Prepared {
    /// Downstream training samples (validation is their last tenth when loaded).
    pub n_train: usize,
    /// Test samples.
    pub n_test: usize,
    /// PCA components kept.
    pub pca_components: usize,
    /// The pretraining pool's (train, test) sizes, when `pool` > 0.
    pub pool: Option<(usize, usize)>,
}

/// `mgr prepare avmnist`: writes MultiBench's layout into `out`. With `pool` > 0, the first
/// `pool` training digits are paired with [`POOL_SPEAKERS`]' recordings and written to
/// `out/pretrain` (the same layout: its last tenth as its test split) for `mgr pretrain`; the
/// downstream training split is the remaining digits, so the two share no sample, no
/// recording and no speaker, and the downstream test split is unchanged.
pub fn prepare(
    mnist: &Path,
    fsdd: &Path,
    out: &Path,
    noise_seed: u64,
    pool: usize,
    quiet: bool,
) -> Result<Prepared> {
    let sources = Sources {
        mnist,
        fsdd,
        noise_seed,
    };
    let (built, pool_built) = build(&sources, pool, quiet)?;
    // The pool first, inside a temp copy of the downstream folder, so `out` appears whole.
    write_folder(&built, out, pool_built.as_ref())?;
    Ok(Prepared {
        n_train: built.n_train,
        n_test: built.n_test,
        pca_components: built.pca_components,
        pool: pool_built.map(|p| (p.n_train, p.n_test)),
    })
}

/// AV-MNIST built in memory, as [`write_folder`] writes it.
struct Built {
    n_train: usize,
    n_test: usize,
    pca_components: usize,
    /// PCA-projected images, `[n, 784]` row-major.
    train_img: Vec<f32>,
    test_img: Vec<f32>,
    /// Spectrograms, `[n, SPEC, SPEC]` row-major.
    train_audio: Vec<f32>,
    test_audio: Vec<f32>,
    train_labels: Vec<u8>,
    test_labels: Vec<u8>,
    /// `label,recording` per sample: which recording each sample got.
    train_sources: String,
    test_sources: String,
    recipe: serde_json::Value,
}

/// Reads MNIST and FSDD and builds both splits: the images through the training images' PCA,
/// each digit paired with a recording of the same digit (training speakers for the training
/// split, the test speaker for the test split), noise mixed in, as spectrograms.
fn build(sources: &Sources, pool: usize, quiet: bool) -> Result<(Built, Option<Built>)> {
    let Sources { mnist, fsdd, .. } = *sources;
    let (all_px, all_labels, n_all) = read_mnist(mnist, true)?;
    // At least 10 digits stay downstream and the pool holds at least 10 (a test tenth).
    if pool > 0 && (pool < 10 || pool + 10 > n_all) {
        bail!(
            "--pool {pool}: between 10 and {} of the {n_all} training digits",
            n_all.saturating_sub(10)
        );
    }
    let (test_px, test_labels, n_test) = read_mnist(mnist, false)?;
    let train_recs = recordings(fsdd, &TRAIN_SPEAKERS)?;
    let test_recs = recordings(fsdd, &[TEST_SPEAKER])?;
    let step = |s: &str| {
        if !quiet {
            eprintln!("prepare: {s}");
        }
    };
    step("fitting PCA on the training images");
    // On every training image, pool included: an input transform fitted without labels and
    // without the test split.
    let (mean, components) = fit_pca(&all_px, n_all, PCA_THRESHOLD);
    let (pool_px, train_px) = all_px.split_at(pool * 784);
    let (pool_labels, train_labels) = all_labels.split_at(pool);
    let (train_px, train_labels, n_train) =
        (train_px.to_vec(), train_labels.to_vec(), n_all - pool);
    step(&format!(
        "keeping {} components (cumulative explained variance > {PCA_THRESHOLD})",
        components.ncols()
    ));
    let train_img = project(&train_px, n_train, &mean, &components);
    let test_img = project(&test_px, n_test, &mean, &components);
    let mut rng = ChaCha8Rng::seed_from_u64(sources.noise_seed);
    step("training spectrograms");
    let (mut train_sources, mut test_sources) = (
        String::from("label,recording\n"),
        String::from("label,recording\n"),
    );
    let train_audio = audio_for(&train_labels, &train_recs, &mut rng, &mut train_sources)?;
    step("test spectrograms");
    let test_audio = audio_for(&test_labels, &test_recs, &mut rng, &mut test_sources)?;
    let mut recipe = downstream_recipe(sources, components.ncols(), n_train, n_test);
    let pool_built = if pool > 0 {
        step(&format!(
            "pretraining pool: training digits 0..{pool} with {}",
            POOL_SPEAKERS.join(", ")
        ));
        recipe["pretraining_pool"] = serde_json::json!({
            "folder": "pretrain", "mnist_training_digits": [0, pool], "speakers": POOL_SPEAKERS,
            "downstream_training_digits": [pool, n_all],
        });
        Some(build_pool(
            pool_px,
            pool_labels,
            sources,
            (&mean, &components),
            &mut rng,
        )?)
    } else {
        None
    };
    Ok((
        Built {
            n_train,
            n_test,
            pca_components: components.ncols(),
            train_img,
            test_img,
            train_audio,
            test_audio,
            train_labels,
            test_labels,
            train_sources,
            test_sources,
            recipe,
        },
        pool_built,
    ))
}

/// `p` as an absolute path for a recipe (as given where it cannot be resolved).
fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `recipe.json` of the downstream folder: how it was made, from what.
fn downstream_recipe(
    sources: &Sources,
    pca_components: usize,
    n_train: usize,
    n_test: usize,
) -> serde_json::Value {
    let Sources {
        mnist,
        fsdd,
        noise_seed,
    } = *sources;
    serde_json::json!({
        "recipe": "MultiBench AV-MNIST (MFAS generator), rebuilt by mgr prepare avmnist",
        "mnist_dir": absolute(mnist), "fsdd_dir": absolute(fsdd),
        "pca_components": pca_components,
        "pca_threshold": PCA_THRESHOLD,
        "train_speakers": TRAIN_SPEAKERS, "test_speaker": TEST_SPEAKER,
        "noise": format!("white Gaussian noise x {NOISE_GAIN} (ESC-50 not available), ChaCha8 seed {noise_seed}"),
        "spectrogram": {"nperseg": NFFT, "nfft": NFFT, "noverlap": NFFT - HOP, "window": "boxcar", "wave_len": WAVE_LEN, "fs": RATE},
        "n_train": n_train, "n_test": n_test,
        "fsdd_licence": "Free Spoken Digit Dataset, CC BY-SA 4.0",
    })
}

/// Where `prepare` read its inputs, for the recipes it writes.
struct Sources<'a> {
    mnist: &'a Path,
    fsdd: &'a Path,
    noise_seed: u64,
}

/// The pretraining pool (`--pool`): the first training digits (`pool_px`, `pool_labels`), each
/// with a recording of the same digit by a pool speaker, through the downstream PCA; its last
/// `POOL_TEST_SHARE` its test split. Its noise is drawn from `rng` after the downstream
/// splits': those are the same with any pool size but for which digits they hold.
fn build_pool(
    pool_px: &[u8],
    pool_labels: &[u8],
    sources: &Sources,
    (mean, components): (&[f64], &DMatrix<f64>),
    rng: &mut ChaCha8Rng,
) -> Result<Built> {
    let Sources {
        mnist,
        fsdd,
        noise_seed,
    } = *sources;
    let pool = pool_labels.len();
    let pool_recs = recordings(fsdd, &POOL_SPEAKERS)?;
    let mut sources = String::from("label,recording\n");
    let audio = audio_for(pool_labels, &pool_recs, rng, &mut sources)?;
    let img = project(pool_px, pool, mean, components);
    let n_test = ((pool as f64 * POOL_TEST_SHARE).round() as usize).max(1);
    let n_train = pool - n_test;
    let (img_train, img_test) = img.split_at(n_train * 784);
    let (audio_train, audio_test) = audio.split_at(n_train * SPEC * SPEC);
    let (labels_train, labels_test) = pool_labels.split_at(n_train);
    let mut lines = sources.lines();
    let header = lines.next().unwrap_or("label,recording").to_string();
    let rows: Vec<&str> = lines.collect();
    let join = |rows: &[&str]| format!("{header}\n{}\n", rows.join("\n"));
    let pool_recipe = serde_json::json!({
        "recipe": "AV-MNIST pretraining pool, rebuilt by mgr prepare avmnist --pool (the downstream folder is the parent)",
        "mnist_dir": absolute(mnist), "fsdd_dir": absolute(fsdd),
        "mnist_training_digits": [0, pool],
        "speakers": POOL_SPEAKERS,
        "pca": "the downstream folder's (fitted on every training image, pool included)",
        "pca_components": components.ncols(),
        "noise": format!("white Gaussian noise x {NOISE_GAIN}, ChaCha8 seed {noise_seed}, after the downstream splits' draws"),
        "n_train": n_train, "n_test": n_test,
        "fsdd_licence": "Free Spoken Digit Dataset, CC BY-SA 4.0",
    });
    Ok(Built {
        n_train,
        n_test,
        pca_components: components.ncols(),
        train_img: img_train.to_vec(),
        test_img: img_test.to_vec(),
        train_audio: audio_train.to_vec(),
        test_audio: audio_test.to_vec(),
        train_labels: labels_train.to_vec(),
        test_labels: labels_test.to_vec(),
        train_sources: join(&rows[..n_train]),
        test_sources: join(&rows[n_train..]),
        recipe: pool_recipe,
    })
}

/// Writes MultiBench's layout (and the pool's, in `pretrain/`) into a temp folder, then renames
/// it to `out`: a half-prepared dataset never looks complete.
fn write_folder(built: &Built, out: &Path, pool: Option<&Built>) -> Result<()> {
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    write_layout(built, &tmp)?;
    if let Some(pool) = pool {
        write_layout(pool, &tmp.join("pretrain"))?;
    }
    if out.exists() {
        std::fs::remove_dir_all(out)
            .with_context(|| format!("cannot replace {}", out.display()))?;
    }
    std::fs::rename(&tmp, out)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), out.display()))?;
    Ok(())
}

/// MultiBench's layout of `built` in `tmp`.
fn write_layout(built: &Built, tmp: &Path) -> Result<()> {
    std::fs::create_dir_all(tmp.join("image"))?;
    std::fs::create_dir_all(tmp.join("audio"))?;
    let write2 = |p: PathBuf, v: &[f32], n: usize| -> Result<()> {
        ndarray_npy::write_npy(&p, &Array2::from_shape_vec((n, 784), v.to_vec())?)
            .with_context(|| format!("cannot write {}", p.display()))
    };
    let write3 = |p: PathBuf, v: &[f32], n: usize| -> Result<()> {
        ndarray_npy::write_npy(&p, &Array3::from_shape_vec((n, SPEC, SPEC), v.to_vec())?)
            .with_context(|| format!("cannot write {}", p.display()))
    };
    let write_labels = |p: PathBuf, v: &[u8]| -> Result<()> {
        ndarray_npy::write_npy(&p, &Array1::from_iter(v.iter().map(|&l| l as i64)))
            .with_context(|| format!("cannot write {}", p.display()))
    };
    let (n_train, n_test) = (built.n_train, built.n_test);
    write2(tmp.join("image/train_data.npy"), &built.train_img, n_train)?;
    write2(tmp.join("image/test_data.npy"), &built.test_img, n_test)?;
    write3(
        tmp.join("audio/train_data.npy"),
        &built.train_audio,
        n_train,
    )?;
    write3(tmp.join("audio/test_data.npy"), &built.test_audio, n_test)?;
    write_labels(tmp.join("train_labels.npy"), &built.train_labels)?;
    write_labels(tmp.join("test_labels.npy"), &built.test_labels)?;
    std::fs::write(
        tmp.join("recipe.json"),
        serde_json::to_string_pretty(&built.recipe)?,
    )?;
    // Which recording each sample got, so the pairing can be checked.
    std::fs::write(tmp.join("audio/train_sources.csv"), &built.train_sources)?;
    std::fs::write(tmp.join("audio/test_sources.csv"), &built.test_sources)?;
    Ok(())
}
