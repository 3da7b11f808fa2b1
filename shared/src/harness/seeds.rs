//! Every random stream of the project, derived from the user's seeds in one place.
//!
//! Three derivations grew up separately (absence masks, batch order, synthetic samples). Each is
//! part of every published number: changing one redraws every mask, batch order or synthetic
//! sample made from it. So they are kept exactly as they are, named and documented here, and no
//! other file derives a stream seed of its own.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::absence::SplitKind;

/// The generator of one stream.
pub fn rng(stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(stream)
}

/// The absence masks of `split` under the absence seed: the seed xor a per-split constant, so
/// the three splits draw independent masks from one seed.
pub fn absence_stream(seed: u64, split: SplitKind) -> u64 {
    seed ^ split_constant(split)
}

/// The sample order of `epoch` (0-based) under the training seed.
pub fn epoch_stream(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9)
        .wrapping_add(epoch as u64 + 1)
}

/// Synthetic sample `index` of `split` under the data seed: SplitMix64 of each part, so every
/// sample is a pure function of (seed, split, index) and can be drawn alone.
pub fn sample_stream(seed: u64, split: SplitKind, index: usize) -> u64 {
    let split_id = SplitKind::ALL
        .iter()
        .position(|s| *s == split)
        .expect("SplitKind::ALL lists every split") as u64;
    splitmix64(splitmix64(seed) ^ splitmix64(split_id + 1) ^ (index as u64))
}

/// The random ranking's scores ([`crate::readings::SplitRanking::Random`]) for refinement layer
/// `layer` of the sample at `index` in its split, in pass `round` (the epoch + 1 in training, 0
/// in evaluation) under the training seed: SplitMix64 of each part, so a sample draws the same
/// scores whichever batch or shard it is in, and every pass draws new ones.
pub fn ranking_stream(seed: u64, round: u64, index: usize, layer: usize) -> u64 {
    splitmix64(
        splitmix64(seed ^ 0x7261_6e6b_0000_0000)
            ^ splitmix64(round.wrapping_add(1))
            ^ splitmix64((index as u64) << 8 | layer as u64),
    )
}

/// The decoy digits and the corrupt tokens' content of synthetic sample `index` of `split`
/// under [`crate::synthetic::SyntheticConfig::harmful_noise`]: a stream of its own, so the rest of
/// the sample is the one [`sample_stream`] draws without it.
pub fn decoy_stream(seed: u64, split: SplitKind, index: usize) -> u64 {
    splitmix64(sample_stream(seed, split, index) ^ 0x6465_636f_7900_0000)
}

/// The per-split constant of [`absence_stream`] (the split's name in ASCII, numbered).
fn split_constant(split: SplitKind) -> u64 {
    match split {
        SplitKind::Train => 0x7472_6169_6e00_0001,
        SplitKind::Valid => 0x7661_6c69_6400_0002,
        SplitKind::Test => 0x7465_7374_0000_0003,
    }
}

/// SplitMix64's output for state `z` (Steele, Lea and Flood 2014): a bijective finaliser that
/// turns nearby inputs into unrelated outputs.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // The reference generator seeded with 0 outputs these first (state 0, then 0 + gamma).
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn streams_of_different_splits_epochs_and_samples_differ() {
        let splits = SplitKind::ALL;
        for (i, a) in splits.iter().enumerate() {
            for b in &splits[i + 1..] {
                assert_ne!(absence_stream(5, *a), absence_stream(5, *b));
                assert_ne!(sample_stream(5, *a, 0), sample_stream(5, *b, 0));
            }
        }
        assert_ne!(epoch_stream(5, 0), epoch_stream(5, 1));
        assert_ne!(epoch_stream(5, 0), epoch_stream(6, 0));
        assert_ne!(
            sample_stream(5, SplitKind::Train, 0),
            sample_stream(5, SplitKind::Train, 1)
        );
    }
}
