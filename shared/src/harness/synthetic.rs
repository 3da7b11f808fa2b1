//! The embedded synthetic dataset: ten digits shown three ways a person can look at.
//!
//! - **vision**: the digit drawn in a 5x7 pixel font, scaled to a 16 x 16 image with a random
//!   shift and pixel noise; tokens are the 16 patches of 4 x 4 pixels (16 values each).
//! - **audio**: a four-note melody (one per digit) as a 16-frame x 16-bin spectrogram; tokens are
//!   the 16 frames (16 values each).
//! - **text**: an 8-word sentence with the digit's name at a random place among filler words;
//!   tokens are the words, one-hot over the 20-word vocabulary.
//!
//! Each modality shows the wrong digit with probability `flip_prob`, independently, so no
//! modality alone can reach a perfect score, but together they mostly agree. Some tokens are
//! pure noise by construction: image patches and spectrogram frames replaced by uniform noise
//! with probability `noise_token_prob`, and every filler word. Each sample carries this ground
//! truth ([`SyntheticSample::noise_tokens`]) so the ranking's quality can be measured.
//!
//! Sample `i` of a split is a pure function of (seed, split, i) through ChaCha8, so the browser
//! draws exactly the samples the trainer saw.

use burn::config::Config;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::absence::SplitKind;
use crate::config::ModalitySpec;
use crate::data::{DataSplit, Targets};
use crate::truth::SampleTruth;

/// Image side in pixels.
pub const IMAGE_SIDE: usize = 16;
/// Patch side in pixels (the image has (16/4)^2 = 16 patch tokens).
pub const PATCH_SIDE: usize = 4;
/// Spectrogram frames (audio tokens).
pub const FRAMES: usize = 16;
/// Spectrogram frequency bins (values per audio token).
pub const BINS: usize = 16;
/// Words per sentence (text tokens).
pub const WORDS: usize = 8;
/// Number of classes.
pub const N_CLASSES: usize = 10;
/// The digit names, then the filler words; a text token is one-hot over this list.
pub const VOCABULARY: [&str; 20] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "the", "a",
    "this", "is", "number", "shows", "i", "see", "maybe", "it",
];
/// Modality names, in token order.
pub const MODALITY_NAMES: [&str; 3] = ["vision", "audio", "text"];

/// 5 x 7 bitmap font, one row per string.
const FONT: [[&str; 7]; 10] = [
    [
        "01110", "10001", "10011", "10101", "11001", "10001", "01110",
    ],
    [
        "00100", "01100", "00100", "00100", "00100", "00100", "01110",
    ],
    [
        "01110", "10001", "00001", "00010", "00100", "01000", "11111",
    ],
    [
        "11111", "00010", "00100", "00010", "00001", "10001", "01110",
    ],
    [
        "00010", "00110", "01010", "10010", "11111", "00010", "00010",
    ],
    [
        "11111", "10000", "11110", "00001", "00001", "10001", "01110",
    ],
    [
        "00110", "01000", "10000", "11110", "10001", "10001", "01110",
    ],
    [
        "11111", "00001", "00010", "00100", "01000", "01000", "01000",
    ],
    [
        "01110", "10001", "10001", "01110", "10001", "10001", "01110",
    ],
    [
        "01110", "10001", "10001", "01111", "00001", "00010", "01100",
    ],
];

/// Each digit's melody: four notes (frequency bins), each held for four frames.
const MELODIES: [[usize; 4]; 10] = [
    [3, 3, 3, 3],
    [3, 6, 9, 12],
    [12, 9, 6, 3],
    [3, 12, 3, 12],
    [6, 6, 12, 12],
    [12, 12, 6, 6],
    [9, 3, 9, 3],
    [3, 9, 12, 6],
    [12, 12, 12, 12],
    [6, 12, 9, 3],
];

/// Settings of the synthetic dataset.
#[derive(Config, Debug, PartialEq)]
pub struct SyntheticConfig {
    /// Seed of every sample (with the split and the index).
    #[config(default = 0)]
    pub seed: u64,
    /// Training samples.
    #[config(default = 3000)]
    pub n_train: usize,
    /// Validation samples.
    #[config(default = 600)]
    pub n_valid: usize,
    /// Test samples.
    #[config(default = 600)]
    pub n_test: usize,
    /// Probability that a modality shows a wrong digit (so none alone is perfect).
    #[config(default = 0.2)]
    pub flip_prob: f64,
    /// Standard deviation of the Gaussian noise on pixels and spectrogram bins.
    #[config(default = 0.3)]
    pub pixel_noise: f64,
    /// Probability that an image patch or spectrogram frame is replaced by uniform noise.
    #[config(default = 0.15)]
    pub noise_token_prob: f64,
    /// Corrupt tokens carry another digit's evidence instead of uniform noise: each noise patch
    /// shows the same patch of another digit's glyph, each noise frame plays another digit's
    /// note, and each filler word is, with `noise_token_prob`, that other digit's name (one
    /// decoy digit per modality and sample). The same samples otherwise: the same labels,
    /// shown digits and noise positions as without it. Default false (uniform noise, harmless).
    #[config(default = "HarmfulNoise(false)")]
    pub harmful_noise: HarmfulNoise,
}

/// [`SyntheticConfig::harmful_noise`], a bool in the files; a file written before it existed
/// (a run's `config.json`, the page's `model.json`) reads as false, the data it was made from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "Option<bool>", into = "bool")]
pub struct HarmfulNoise(pub bool);

impl From<Option<bool>> for HarmfulNoise {
    fn from(value: Option<bool>) -> Self {
        HarmfulNoise(value.unwrap_or(false))
    }
}

impl From<HarmfulNoise> for bool {
    fn from(value: HarmfulNoise) -> bool {
        value.0
    }
}

/// One synthetic sample, as a person sees it, with its ground truth.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SyntheticSample {
    /// The digit.
    pub label: usize,
    /// The digit each modality shows (differs from `label` where it was flipped).
    pub shown: [usize; 3],
    /// 16 x 16 pixels in [0, 1], row-major.
    pub image: Vec<f32>,
    /// 16 frames x 16 bins in [0, 1], frame-major (row = time).
    pub spectrogram: Vec<f32>,
    /// Word indices into [`VOCABULARY`].
    pub words: Vec<usize>,
    /// Per modality, per token: true where the token is pure noise by construction.
    pub noise_tokens: [Vec<bool>; 3],
}

/// The three modalities' token grids.
pub fn modalities() -> Vec<ModalitySpec> {
    let patches = (IMAGE_SIDE / PATCH_SIDE) * (IMAGE_SIDE / PATCH_SIDE);
    vec![
        ModalitySpec::new(MODALITY_NAMES[0].into(), patches, PATCH_SIDE * PATCH_SIDE),
        ModalitySpec::new(MODALITY_NAMES[1].into(), FRAMES, BINS),
        ModalitySpec::new(MODALITY_NAMES[2].into(), WORDS, VOCABULARY.len()),
    ]
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; 1 - u keeps the logarithm finite.
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn shown_digit(rng: &mut ChaCha8Rng, label: usize, flip_prob: f64) -> usize {
    if rng.random::<f64>() < flip_prob {
        (label + rng.random_range(1..N_CLASSES)) % N_CLASSES
    } else {
        label
    }
}

impl SyntheticConfig {
    /// Samples in `split`.
    pub fn len(&self, split: SplitKind) -> usize {
        match split {
            SplitKind::Train => self.n_train,
            SplitKind::Valid => self.n_valid,
            SplitKind::Test => self.n_test,
        }
    }

    /// Sample `index` of `split`: a pure function of (seed, split, index).
    pub fn sample(&self, split: SplitKind, index: usize) -> SyntheticSample {
        let mut rng = crate::seeds::rng(crate::seeds::sample_stream(self.seed, split, index));
        let label = rng.random_range(0..N_CLASSES);
        let shown = [
            shown_digit(&mut rng, label, self.flip_prob),
            shown_digit(&mut rng, label, self.flip_prob),
            shown_digit(&mut rng, label, self.flip_prob),
        ];
        let (image, image_noise, shift) = self.draw_image(&mut rng, shown[0]);
        let (spectrogram, audio_noise) = self.draw_melody(&mut rng, shown[1]);
        let (words, text_noise) = draw_sentence(&mut rng, shown[2]);
        let mut sample = SyntheticSample {
            label,
            shown,
            image,
            spectrogram,
            words,
            noise_tokens: [image_noise, audio_noise, text_noise],
        };
        if self.harmful_noise.0 {
            let stream = crate::seeds::decoy_stream(self.seed, split, index);
            self.make_noise_harmful(&mut sample, shift, &mut crate::seeds::rng(stream));
        }
        sample
    }

    /// [`SyntheticConfig::harmful_noise`]: the sample's corrupt tokens rewritten to show a decoy
    /// digit per modality, drawn from `rng` (a stream of its own, so the rest of the sample is
    /// the one drawn without it); `shift` is the glyph's (dx, dy).
    fn make_noise_harmful(
        &self,
        sample: &mut SyntheticSample,
        shift: (usize, usize),
        rng: &mut ChaCha8Rng,
    ) {
        let decoys: Vec<usize> = sample
            .shown
            .iter()
            .map(|&d| (d + rng.random_range(1..N_CLASSES)) % N_CLASSES)
            .collect();
        let per_side = IMAGE_SIDE / PATCH_SIDE;
        for (p, _) in sample.noise_tokens[0]
            .iter()
            .enumerate()
            .filter(|(_, n)| **n)
        {
            let (py, px) = (p / per_side, p % per_side);
            for y in py * PATCH_SIDE..(py + 1) * PATCH_SIDE {
                for x in px * PATCH_SIDE..(px + 1) * PATCH_SIDE {
                    let ink = if glyph_on(decoys[0], shift, x, y) {
                        1.0
                    } else {
                        0.0
                    };
                    let value = ink + self.pixel_noise * normal(rng);
                    sample.image[y * IMAGE_SIDE + x] = value.clamp(0.0, 1.0) as f32;
                }
            }
        }
        for (t, _) in sample.noise_tokens[1]
            .iter()
            .enumerate()
            .filter(|(_, n)| **n)
        {
            let note = MELODIES[decoys[1]][t * 4 / FRAMES];
            for (bin, v) in sample.spectrogram[t * BINS..(t + 1) * BINS]
                .iter_mut()
                .enumerate()
            {
                let value = tone(bin, note) + self.pixel_noise * normal(rng);
                *v = value.clamp(0.0, 1.0) as f32;
            }
        }
        for (w, _) in sample.noise_tokens[2]
            .iter()
            .enumerate()
            .filter(|(_, n)| **n)
        {
            if rng.random::<f64>() < self.noise_token_prob {
                sample.words[w] = decoys[2];
            }
        }
    }

    /// The image of `digit`, its noise patches and the glyph's shift (dx, dy).
    fn draw_image(
        &self,
        rng: &mut ChaCha8Rng,
        digit: usize,
    ) -> (Vec<f32>, Vec<bool>, (usize, usize)) {
        let dx = rng.random_range(0..3usize) + 2; // glyph 10 px wide at x in 2..=4
        let dy = rng.random_range(0..3usize); // glyph 14 px tall at y in 0..=2
        let mut image = vec![0.0f32; IMAGE_SIDE * IMAGE_SIDE];
        for (y, px) in image.chunks_mut(IMAGE_SIDE).enumerate() {
            for (x, p) in px.iter_mut().enumerate() {
                let on = glyph_on(digit, (dx, dy), x, y);
                let value = if on { 1.0 } else { 0.0 } + self.pixel_noise * normal(rng);
                *p = value.clamp(0.0, 1.0) as f32;
            }
        }
        let per_side = IMAGE_SIDE / PATCH_SIDE;
        let mut noise = vec![false; per_side * per_side];
        for (p, is_noise) in noise.iter_mut().enumerate() {
            if rng.random::<f64>() < self.noise_token_prob {
                *is_noise = true;
                let (py, px) = (p / per_side, p % per_side);
                for y in 0..PATCH_SIDE {
                    for x in 0..PATCH_SIDE {
                        image[(py * PATCH_SIDE + y) * IMAGE_SIDE + px * PATCH_SIDE + x] =
                            rng.random::<f32>();
                    }
                }
            }
        }
        (image, noise, (dx, dy))
    }

    fn draw_melody(&self, rng: &mut ChaCha8Rng, digit: usize) -> (Vec<f32>, Vec<bool>) {
        let mut spec = vec![0.0f32; FRAMES * BINS];
        let mut noise = vec![false; FRAMES];
        for (t, frame) in spec.chunks_mut(BINS).enumerate() {
            let note = MELODIES[digit][t * 4 / FRAMES];
            if rng.random::<f64>() < self.noise_token_prob {
                noise[t] = true;
                frame.iter_mut().for_each(|v| *v = rng.random::<f32>());
                continue;
            }
            for (bin, v) in frame.iter_mut().enumerate() {
                *v = (tone(bin, note) + self.pixel_noise * normal(rng)).clamp(0.0, 1.0) as f32;
            }
        }
        (spec, noise)
    }

    /// The whole split as token features.
    pub fn split(&self, split: SplitKind) -> DataSplit {
        self.first(split, self.len(split))
    }

    /// The first `n` samples of `split` (at most all of them) as token features, without
    /// generating the rest.
    pub fn first(&self, split: SplitKind, n: usize) -> DataSplit {
        let n = n.min(self.len(split));
        let specs = modalities();
        let mut features: Vec<Vec<f32>> = specs
            .iter()
            .map(|s| Vec::with_capacity(n * s.n_tokens * s.token_dim))
            .collect();
        let mut labels = Vec::with_capacity(n);
        let mut truth = Vec::with_capacity(n);
        for i in 0..n {
            let sample = self.sample(split, i);
            for (m, f) in sample.features().into_iter().enumerate() {
                features[m].extend(f);
            }
            labels.push(sample.label);
            truth.push(sample.truth());
        }
        DataSplit {
            name: format!("synthetic/{}", split.name()),
            modalities: specs,
            features,
            targets: Targets::Classes {
                labels,
                n_classes: N_CLASSES,
            },
            truth: Some(truth),
        }
    }
}

/// Whether pixel (x, y) is ink of `digit`'s glyph drawn 2x at `shift` = (dx, dy).
fn glyph_on(digit: usize, (dx, dy): (usize, usize), x: usize, y: usize) -> bool {
    x >= dx
        && y >= dy
        && (x - dx) / 2 < 5
        && (y - dy) / 2 < 7
        && FONT[digit][(y - dy) / 2].as_bytes()[(x - dx) / 2] == b'1'
}

/// A spectrogram bin's level for a note: the note's bin 1, its neighbours 0.4.
fn tone(bin: usize, note: usize) -> f64 {
    match bin.abs_diff(note) {
        0 => 1.0,
        1 => 0.4,
        _ => 0.0,
    }
}

fn draw_sentence(rng: &mut ChaCha8Rng, digit: usize) -> (Vec<usize>, Vec<bool>) {
    let at = rng.random_range(0..WORDS);
    let words: Vec<usize> = (0..WORDS)
        .map(|w| {
            if w == at {
                digit
            } else {
                N_CLASSES + rng.random_range(0..VOCABULARY.len() - N_CLASSES)
            }
        })
        .collect();
    let noise = (0..WORDS).map(|w| w != at).collect();
    (words, noise)
}

impl SyntheticSample {
    /// What the sample knows of its tokens: its label, the digit each modality shows and the
    /// noise tokens ([`crate::truth`]).
    pub fn truth(&self) -> SampleTruth {
        SampleTruth {
            label: self.label,
            shown: self.shown.to_vec(),
            noise: self.noise_tokens.to_vec(),
        }
    }

    /// Token features per modality: image patches (raster inside each patch), spectrogram
    /// frames, one-hot words.
    pub fn features(&self) -> Vec<Vec<f32>> {
        let per_side = IMAGE_SIDE / PATCH_SIDE;
        let mut patches = Vec::with_capacity(IMAGE_SIDE * IMAGE_SIDE);
        for p in 0..per_side * per_side {
            let (py, px) = (p / per_side, p % per_side);
            for y in 0..PATCH_SIDE {
                let row = (py * PATCH_SIDE + y) * IMAGE_SIDE + px * PATCH_SIDE;
                patches.extend_from_slice(&self.image[row..row + PATCH_SIDE]);
            }
        }
        let mut words = vec![0.0f32; WORDS * VOCABULARY.len()];
        for (w, &idx) in self.words.iter().enumerate() {
            words[w * VOCABULARY.len() + idx] = 1.0;
        }
        vec![patches, self.spectrogram.clone(), words]
    }

    /// The sentence as text.
    pub fn sentence(&self) -> String {
        self.words
            .iter()
            .map(|&w| VOCABULARY[w])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deterministic_and_differ_across_index_and_split() {
        let cfg = SyntheticConfig::new();
        assert_eq!(
            cfg.sample(SplitKind::Train, 5),
            cfg.sample(SplitKind::Train, 5)
        );
        assert_ne!(
            cfg.sample(SplitKind::Train, 5),
            cfg.sample(SplitKind::Train, 6)
        );
        assert_ne!(
            cfg.sample(SplitKind::Train, 5),
            cfg.sample(SplitKind::Test, 5)
        );
    }

    #[test]
    fn split_has_the_declared_shapes_and_valid_values() {
        let cfg = SyntheticConfig::new().with_n_valid(40);
        let split = cfg.split(SplitKind::Valid);
        split.validate().unwrap();
        assert_eq!(split.len(), 40);
        assert!(
            split
                .features
                .iter()
                .flatten()
                .all(|v| (0.0..=1.0).contains(v))
        );
    }

    /// Each modality alone is imperfect by construction, and noise tokens exist.
    #[test]
    fn each_modality_alone_is_imperfect_and_some_tokens_are_noise() {
        let cfg = SyntheticConfig::new();
        let samples: Vec<_> = (0..500).map(|i| cfg.sample(SplitKind::Train, i)).collect();
        for m in 0..3 {
            let agree = samples.iter().filter(|s| s.shown[m] == s.label).count() as f64 / 500.0;
            assert!(
                agree > 0.7 && agree < 0.9,
                "modality {m} shows the label {agree}"
            );
            let noisy = samples
                .iter()
                .map(|s| s.noise_tokens[m].iter().filter(|&&b| b).count())
                .sum::<usize>();
            assert!(noisy > 0, "modality {m} has noise tokens");
        }
        // The digit name is in the sentence exactly where the ground truth says it is.
        for s in &samples {
            let at = s.noise_tokens[2].iter().position(|&b| !b).unwrap();
            assert_eq!(s.words[at], s.shown[2]);
        }
    }

    /// Harmful noise rewrites only the corrupt tokens, each to another digit than its
    /// modality shows: the same labels, shown digits and noise positions, the same signal
    /// tokens, and every noise patch the glyph of one decoy digit (not uniform noise).
    #[test]
    fn harmful_noise_rewrites_only_the_corrupt_tokens_with_another_digits_evidence() {
        let plain = SyntheticConfig::new();
        let harmful = SyntheticConfig::new().with_harmful_noise(HarmfulNoise(true));
        let mut decoy_words = 0;
        for i in 0..200 {
            let (a, b) = (
                plain.sample(SplitKind::Test, i),
                harmful.sample(SplitKind::Test, i),
            );
            assert_eq!(
                (a.label, a.shown, &a.noise_tokens),
                (b.label, b.shown, &b.noise_tokens)
            );
            let (fa, fb) = (a.features(), b.features());
            for m in 0..2 {
                let width = fa[m].len() / a.noise_tokens[m].len();
                for (t, noise) in a.noise_tokens[m].iter().enumerate() {
                    let same =
                        fa[m][t * width..(t + 1) * width] == fb[m][t * width..(t + 1) * width];
                    assert_eq!(same, !noise, "sample {i} modality {m} token {t}");
                }
            }
            for (w, noise) in a.noise_tokens[2].iter().enumerate() {
                if !noise {
                    assert_eq!(a.words[w], b.words[w]);
                } else if b.words[w] < N_CLASSES {
                    assert_ne!(b.words[w], b.shown[2], "a decoy word names another digit");
                    decoy_words += 1;
                }
            }
        }
        assert!(decoy_words > 0);
        // A harmful audio frame is a clean tone: one bin at 1 before noise, not uniform.
        let clean = harmful.with_pixel_noise(0.0);
        let s = (0..200)
            .map(|i| clean.sample(SplitKind::Test, i))
            .find(|s| s.noise_tokens[1].iter().any(|&n| n))
            .unwrap();
        let t = s.noise_tokens[1].iter().position(|&n| n).unwrap();
        let frame = &s.spectrogram[t * BINS..(t + 1) * BINS];
        assert_eq!(frame.iter().filter(|&&v| v == 1.0).count(), 1, "{frame:?}");
        assert_eq!(
            frame.iter().filter(|&&v| v == 0.0).count(),
            BINS - 3,
            "{frame:?}"
        );
    }

    /// A config written before `harmful_noise` existed reads as the uniform noise it was made
    /// with; the key round-trips as a plain bool.
    #[test]
    fn a_config_without_harmful_noise_reads_as_false() {
        let mut json = serde_json::to_value(SyntheticConfig::new()).unwrap();
        assert_eq!(json["harmful_noise"], false);
        json.as_object_mut().unwrap().remove("harmful_noise");
        let old: SyntheticConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(old, SyntheticConfig::new());
        json["harmful_noise"] = true.into();
        let set: SyntheticConfig = serde_json::from_value(json).unwrap();
        assert_eq!(set.harmful_noise, HarmfulNoise(true));
    }
}
