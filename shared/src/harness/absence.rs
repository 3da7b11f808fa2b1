//! The absence protocol: which samples miss which modalities (kappa, absence types, seeds).
//!
//! kappa is the share of samples that miss at least one modality, in every split alike; the
//! count is exact (round(kappa n)). Masks are drawn per split from (seed, split), independently
//! for each split, deterministically on every platform (ChaCha8), and never miss everything.

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::MgrError;

/// Which split a mask is for; part of the mask's seed so the splits are independent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitKind {
    /// Training split.
    Train,
    /// Validation split.
    Valid,
    /// Test split.
    Test,
}

impl SplitKind {
    /// All splits.
    pub const ALL: [SplitKind; 3] = [SplitKind::Train, SplitKind::Valid, SplitKind::Test];

    /// Name used in files ("train", "valid", "test").
    pub fn name(self) -> &'static str {
        match self {
            SplitKind::Train => "train",
            SplitKind::Valid => "valid",
            SplitKind::Test => "test",
        }
    }
}

/// The absence setting: kappa and the absence type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbsenceConfig {
    /// Share of samples missing at least one modality, in [0, 1].
    pub kappa: f64,
    /// Modalities that may be missing (indices); empty means all may be.
    pub missable: Vec<usize>,
    /// At most this many modalities missing at once (capped at M - 1: never all).
    pub max_missing: usize,
}

impl AbsenceConfig {
    /// Any modality may be missing, at most M - 1 at once.
    pub fn new(kappa: f64) -> Self {
        Self {
            kappa,
            missable: Vec::new(),
            max_missing: usize::MAX,
        }
    }

    /// kappa, the share of samples missing at least one modality, lies in [0, 1]; every reader
    /// of a kappa (config, command line, protocol, this setting) checks it here.
    pub fn check_kappa(kappa: f64) -> Result<(), MgrError> {
        if (0.0..=1.0).contains(&kappa) {
            Ok(())
        } else {
            Err(MgrError::InvalidAbsence(format!(
                "kappa {kappa} is outside [0, 1]"
            )))
        }
    }

    /// The absence patterns this setting can draw for an incomplete sample, each a row of
    /// availability flags, in a fixed order.
    pub fn incomplete_patterns(&self, n_modalities: usize) -> Result<Vec<Vec<bool>>, MgrError> {
        Self::check_kappa(self.kappa)?;
        if let Some(&bad) = self.missable.iter().find(|&&i| i >= n_modalities) {
            return Err(MgrError::InvalidAbsence(format!(
                "modality index {bad} does not exist ({n_modalities} modalities)"
            )));
        }
        let missable: Vec<usize> = if self.missable.is_empty() {
            (0..n_modalities).collect()
        } else {
            self.missable.clone()
        };
        let cap = self.max_missing.min(n_modalities.saturating_sub(1));
        let mut patterns = Vec::new();
        for bits in 1usize..(1 << n_modalities) {
            let missing: Vec<usize> = (0..n_modalities).filter(|i| bits >> i & 1 == 1).collect();
            if missing.len() <= cap && missing.iter().all(|i| missable.contains(i)) {
                patterns.push((0..n_modalities).map(|i| bits >> i & 1 == 0).collect());
            }
        }
        if patterns.is_empty() && self.kappa > 0.0 {
            return Err(MgrError::InvalidAbsence(format!(
                "kappa {} needs incomplete samples, but with {n_modalities} modalities, missable {:?} and at most {} missing none can be made (all missing is never allowed)",
                self.kappa, missable, cap
            )));
        }
        Ok(patterns)
    }
}

/// The availability of every modality for every sample of one split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbsenceMask {
    /// Modality names, in order (CSV header).
    pub modalities: Vec<String>,
    /// `rows[i][m]`: modality m is available for sample i.
    pub rows: Vec<Vec<bool>>,
}

impl AbsenceMask {
    /// Every modality available for `n` samples.
    pub fn complete(modalities: &[String], n: usize) -> Self {
        Self {
            modalities: modalities.to_vec(),
            rows: vec![vec![true; modalities.len()]; n],
        }
    }

    /// Draws the mask of one split: exactly round(kappa n) samples, chosen at random, get a
    /// pattern drawn uniformly among the setting's incomplete patterns; the rest are complete.
    /// The same (config, n, seed, split) gives the same mask on every platform.
    pub fn generate(
        config: &AbsenceConfig,
        modalities: &[String],
        n: usize,
        seed: u64,
        split: SplitKind,
    ) -> Result<Self, MgrError> {
        let patterns = config.incomplete_patterns(modalities.len())?;
        let mut rng = crate::seeds::rng(crate::seeds::absence_stream(seed, split));
        let n_incomplete = (config.kappa * n as f64).round() as usize;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut rows = vec![vec![true; modalities.len()]; n];
        for &i in &order[..n_incomplete] {
            rows[i] = patterns[rng.random_range(0..patterns.len())].clone();
        }
        Ok(Self {
            modalities: modalities.to_vec(),
            rows,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the mask has no samples.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Availability of sample `i`.
    pub fn available(&self, i: usize) -> &[bool] {
        &self.rows[i]
    }

    /// Samples missing at least one modality.
    pub fn n_incomplete(&self) -> usize {
        self.rows.iter().filter(|r| r.iter().any(|a| !a)).count()
    }

    /// The pattern's name: the available modalities joined by '+', e.g. "vision+text".
    pub fn pattern_name(&self, i: usize) -> String {
        pattern_name(&self.modalities, &self.rows[i])
    }

    /// CSV: a header `index,<modality>...`, then one row per sample with 1 (available) / 0.
    pub fn to_csv(&self) -> String {
        let mut out = format!("index,{}\n", self.modalities.join(","));
        for (i, row) in self.rows.iter().enumerate() {
            let cells: Vec<&str> = row.iter().map(|&a| if a { "1" } else { "0" }).collect();
            out.push_str(&format!("{i},{}\n", cells.join(",")));
        }
        out
    }

    /// Parses [`AbsenceMask::to_csv`]'s format; `what` names the source in errors.
    pub fn from_csv(text: &str, what: &str) -> Result<Self, MgrError> {
        let mut lines = text.lines();
        let header = lines
            .next()
            .ok_or_else(|| MgrError::data(what, "empty mask file"))?;
        let mut cols = header.split(',');
        if cols.next() != Some("index") {
            return Err(MgrError::data(what, "header must start with `index`"));
        }
        let modalities: Vec<String> = cols.map(str::to_string).collect();
        let mut rows = Vec::new();
        for (line_no, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() != modalities.len() + 1 || cells[0].parse::<usize>() != Ok(rows.len()) {
                return Err(MgrError::data(
                    what,
                    format!("line {} is not `{},<0|1>...`", line_no + 2, rows.len()),
                ));
            }
            let row: Result<Vec<bool>, MgrError> = cells[1..]
                .iter()
                .map(|c| match *c {
                    "1" => Ok(true),
                    "0" => Ok(false),
                    other => Err(MgrError::data(
                        what,
                        format!("line {}: `{other}` is not 0 or 1", line_no + 2),
                    )),
                })
                .collect();
            let row = row?;
            if !row.iter().any(|&a| a) {
                return Err(MgrError::data(
                    what,
                    format!("line {}: a sample cannot miss every modality", line_no + 2),
                ));
            }
            rows.push(row);
        }
        Ok(Self { modalities, rows })
    }
}

/// Name of an availability pattern: the available modalities joined by '+'.
pub fn pattern_name(modalities: &[String], available: &[bool]) -> String {
    let names: Vec<&str> = modalities
        .iter()
        .zip(available)
        .filter(|(_, a)| **a)
        .map(|(m, _)| m.as_str())
        .collect();
    names.join("+")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(m: usize) -> Vec<String> {
        ["vision", "audio", "text"][..m]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn same_seed_same_mask_other_seed_or_split_other_mask() {
        let cfg = AbsenceConfig::new(0.7);
        let a = AbsenceMask::generate(&cfg, &names(3), 200, 3, SplitKind::Train).unwrap();
        let b = AbsenceMask::generate(&cfg, &names(3), 200, 3, SplitKind::Train).unwrap();
        assert_eq!(a, b);
        assert_ne!(
            a,
            AbsenceMask::generate(&cfg, &names(3), 200, 4, SplitKind::Train).unwrap()
        );
        assert_ne!(
            a,
            AbsenceMask::generate(&cfg, &names(3), 200, 3, SplitKind::Test).unwrap()
        );
    }

    #[test]
    fn absence_type_restricts_modalities_and_count() {
        let cfg = AbsenceConfig {
            kappa: 1.0,
            missable: vec![1],
            max_missing: 1,
        };
        let mask = AbsenceMask::generate(&cfg, &names(3), 50, 0, SplitKind::Valid).unwrap();
        assert!(mask.rows.iter().all(|r| r == &vec![true, false, true]));
        let two = AbsenceConfig {
            kappa: 1.0,
            missable: vec![],
            max_missing: 1,
        };
        let mask = AbsenceMask::generate(&two, &names(3), 50, 0, SplitKind::Valid).unwrap();
        assert!(
            mask.rows
                .iter()
                .all(|r| r.iter().filter(|a| !**a).count() == 1)
        );
    }

    #[test]
    fn impossible_settings_are_errors() {
        assert!(
            AbsenceMask::generate(&AbsenceConfig::new(0.5), &names(1), 10, 0, SplitKind::Train)
                .is_err()
        );
        assert!(
            AbsenceMask::generate(&AbsenceConfig::new(1.5), &names(2), 10, 0, SplitKind::Train)
                .is_err()
        );
        let bad = AbsenceConfig {
            kappa: 0.5,
            missable: vec![7],
            max_missing: 1,
        };
        assert!(AbsenceMask::generate(&bad, &names(2), 10, 0, SplitKind::Train).is_err());
        // kappa = 0 with one modality is fine: nothing has to be missing.
        assert!(
            AbsenceMask::generate(&AbsenceConfig::new(0.0), &names(1), 10, 0, SplitKind::Train)
                .is_ok()
        );
    }

    #[test]
    fn csv_round_trips_and_bad_csv_is_named() {
        let mask =
            AbsenceMask::generate(&AbsenceConfig::new(0.5), &names(2), 9, 1, SplitKind::Test)
                .unwrap();
        let back = AbsenceMask::from_csv(&mask.to_csv(), "m.csv").unwrap();
        assert_eq!(mask, back);
        let err = AbsenceMask::from_csv("index,vision,audio\n0,0,0\n", "m.csv")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.csv") && err.contains("every modality"),
            "{err}"
        );
        assert!(AbsenceMask::from_csv("index,vision\n0,2\n", "m.csv").is_err());
    }

    proptest! {
        #[test]
        fn kappa_is_respected_to_the_count_and_nobody_misses_everything(
            kappa in 0.0f64..=1.0, n in 1usize..300, m in 2usize..=3, seed in any::<u64>()
        ) {
            let mask = AbsenceMask::generate(&AbsenceConfig::new(kappa), &names(m), n, seed, SplitKind::Train).unwrap();
            prop_assert_eq!(mask.n_incomplete(), (kappa * n as f64).round() as usize);
            prop_assert!(mask.rows.iter().all(|r| r.iter().any(|&a| a)));
        }

        /// Any text, random or a valid mask with bytes flipped, deleted or inserted: an error
        /// or a mask, never a panic, and a mask that is read writes back to the same text.
        #[test]
        fn any_mask_text_is_read_or_refused_without_a_panic(
            seed in any::<u64>(),
            n in 1usize..20,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..6),
            random in ".{0,200}",
        ) {
            let valid = AbsenceMask::generate(&AbsenceConfig::new(0.5), &names(3), n, seed, SplitKind::Train)
                .unwrap()
                .to_csv();
            let bytes = crate::fuzz::mutate_bytes(valid.into_bytes(), &edits);
            for text in [String::from_utf8_lossy(&bytes).into_owned(), random] {
                if let Ok(mask) = AbsenceMask::from_csv(&text, "m.csv") {
                    let again = AbsenceMask::from_csv(&mask.to_csv(), "m.csv").unwrap();
                    prop_assert_eq!(again, mask);
                }
            }
        }
    }
}
