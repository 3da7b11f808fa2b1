//! AV-MNIST rebuilt from real recordings (`mgr prepare avmnist`) and loaded from MultiBench's
//! npy layout (`--dataset avmnist`).
//!
//! The recipe (MultiBench, from the MFAS generator; see `../shared/data/README.md`):
//! - image: PCA fitted on the training images (raw 0-255 pixels); keep the fewest components
//!   whose cumulative explained variance first exceeds 0.25; each image (train and test) is
//!   replaced by its projection on them, mean not added back, stored as 784 floats.
//! - audio: the Free Spoken Digit Dataset; speakers jackson, nicolas, theo for training and
//!   yweweler for test; each digit takes the next recording of that digit in turn (cycling, in
//!   speaker then index order); the wave (scaled to [-1, 1]) is mixed with noise at gain 0.009,
//!   then turned into a 112 x 112 power spectrogram (scipy.signal.spectrogram's defaults with a
//!   boxcar window and nfft = nperseg = 223: constant detrend, density scaling, one-sided).
//! - ESC-50's noise clips are not available here. Instead: white Gaussian noise (unit variance,
//!   times the recipe's gain 0.009), drawn from `--noise-seed` (ChaCha8), one clip per sample.
//! - The spectrogram needs 112 frames: every wave is zero-padded or cut to 8,000 samples (1 s at
//!   8 kHz) and the hop is 70 samples (noverlap 153): 1 + (8000 - 223) / 70 = 112 frames.
//!
//! Loading: MultiBench divides both modalities by 255; we then take log10(x + 1e-10) of the
//! (non-negative) audio power and standardise each modality by its training mean and standard
//! deviation, so both reach the tokenizers at unit scale. Tokens: the image as 28 x 28 in 16
//! patches of 7 x 7 (49 values); the spectrogram (frequency x time) as 28 tokens of 4 time
//! frames x 112 frequencies (448 values). Validation: the last 10% of the training samples.

/// Frequencies and frames of the spectrogram.
pub const SPEC: usize = 112;

mod build;
mod load;
mod page;

pub use build::prepare;
pub use load::load;
pub use page::{PAGE_CREDIT, page_samples, source_dirs};

#[cfg(test)]
mod tests {
    use super::build::parse_idx;
    use super::load::parse_npy_f32;
    use mgr::fuzz::mutate_bytes as mutate;
    use ndarray_npy::WriteNpyExt;
    use proptest::prelude::*;

    fn valid_idx() -> Vec<u8> {
        let mut bytes = vec![0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 2];
        bytes.extend(0..12u8);
        bytes
    }

    fn valid_npy() -> Vec<u8> {
        let mut bytes = Vec::new();
        ndarray::Array2::<f64>::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f64)
            .write_npy(&mut bytes)
            .unwrap();
        bytes
    }

    #[test]
    fn idx_header_and_body_must_agree() {
        let (dims, body) = parse_idx(valid_idx(), "x.idx").unwrap();
        assert_eq!((dims, body), (vec![2, 3, 2], (0..12).collect::<Vec<u8>>()));
        let mut short = valid_idx();
        short.pop();
        let err = parse_idx(short, "x.idx").unwrap_err().to_string();
        assert!(err.contains("x.idx") && err.contains("12 values") && err.contains("11"));
        // Four dimensions of 2^32 - 1 overflow a usize: an error, not an overflow panic.
        let mut huge = vec![0, 0, 0x08, 4];
        huge.extend([0xff; 16]);
        let err = parse_idx(huge, "x.idx").unwrap_err().to_string();
        assert!(err.contains("too many"), "{err}");
        let float_idx = vec![0, 0, 0x0d, 1, 0, 0, 0, 0];
        assert!(parse_idx(float_idx, "x.idx").is_err());
    }

    #[test]
    fn npy_of_any_numeric_dtype_reads_as_f32() {
        let a = parse_npy_f32::<ndarray::Ix2>(&valid_npy(), "a.npy").unwrap();
        assert_eq!(a.shape(), &[3, 4]);
        assert_eq!(a[[2, 3]], 11.0);
        let err = parse_npy_f32::<ndarray::Ix3>(&valid_npy(), "a.npy")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.npy") && err.contains("3 dimensions"),
            "{err}"
        );
    }

    proptest! {
        /// Random bytes and valid files with bytes overwritten, deleted or inserted: each
        /// reader returns its error or a value, never panics.
        #[test]
        fn idx_and_npy_readers_never_panic(
            random in proptest::collection::vec(any::<u8>(), 0..300),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
        ) {
            for bytes in [random.clone(), mutate(valid_idx(), &edits)] {
                if let Ok((dims, body)) = parse_idx(bytes, "x.idx") {
                    prop_assert_eq!(dims.iter().product::<usize>(), body.len());
                }
            }
            for bytes in [random, mutate(valid_npy(), &edits)] {
                let _ = parse_npy_f32::<ndarray::Ix2>(&bytes, "a.npy");
                let _ = parse_npy_f32::<ndarray::Ix3>(&bytes, "a.npy");
            }
        }
    }
}
