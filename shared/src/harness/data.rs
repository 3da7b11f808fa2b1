//! In-memory datasets: one split's token features per modality and its targets.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::{ModalitySpec, Task};
use crate::error::MgrError;
use crate::truth::SampleTruth;

/// The targets of one split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Targets {
    /// Class indices in `0..n_classes`.
    Classes {
        labels: Vec<usize>,
        n_classes: usize,
    },
    /// Real values (regression); classification metrics use `value > 0`.
    Values(Vec<f32>),
}

impl Targets {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes { labels, .. } => labels.len(),
            Targets::Values(v) => v.len(),
        }
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The task these targets define.
    pub fn task(&self) -> Task {
        match self {
            Targets::Classes { .. } => Task::Classification,
            Targets::Values(_) => Task::Regression,
        }
    }

    /// Outputs the head needs: classes, or 1.
    pub fn n_outputs(&self) -> usize {
        match self {
            Targets::Classes { n_classes, .. } => *n_classes,
            Targets::Values(_) => 1,
        }
    }
}

/// One split (train, validation or test) of a dataset, held in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSplit {
    /// What the data is called in messages ("synthetic/train", a file name).
    pub name: String,
    /// The modalities, in token order.
    pub modalities: Vec<ModalitySpec>,
    /// Per modality, the samples' tokens flattened: `n * N_i * D_i` values.
    pub features: Vec<Vec<f32>>,
    /// The targets.
    pub targets: Targets,
    /// Per sample, what the data knows of each token (the synthetic data; None for real data):
    /// the ranking's grades and the oracle rankings read it.
    pub truth: Option<Vec<SampleTruth>>,
}

impl DataSplit {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the split has no samples.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// A split of standard-normal features with labels `i mod n_classes`, drawn from `seed`:
    /// the inputs of benchmarks and shape tests, where only the shapes matter.
    pub fn random_normal(
        name: &str,
        modalities: Vec<ModalitySpec>,
        n: usize,
        n_classes: usize,
        seed: u64,
    ) -> DataSplit {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut normal = move || {
            // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
            let (u, v): (f32, f32) = (rng.random(), rng.random());
            (-2.0 * (1.0 - u).ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        };
        DataSplit {
            name: name.into(),
            features: modalities
                .iter()
                .map(|s| {
                    (0..n * s.n_tokens * s.token_dim)
                        .map(|_| normal())
                        .collect()
                })
                .collect(),
            modalities,
            targets: Targets::Classes {
                labels: (0..n).map(|i| i % n_classes.max(1)).collect(),
                n_classes: n_classes.max(1),
            },
            truth: None,
        }
    }

    /// Checks shapes, finiteness and label ranges; the error names the split and the problem.
    pub fn validate(&self) -> Result<(), MgrError> {
        let n = self.len();
        if self.features.len() != self.modalities.len() {
            return Err(MgrError::data(
                &self.name,
                format!(
                    "{} feature blocks for {} modalities",
                    self.features.len(),
                    self.modalities.len()
                ),
            ));
        }
        for (spec, values) in self.modalities.iter().zip(&self.features) {
            let want = n * spec.n_tokens * spec.token_dim;
            if values.len() != want {
                return Err(MgrError::data(
                    &self.name,
                    format!(
                        "modality `{}` has {} values, expected {n} x {} x {} = {want}",
                        spec.name,
                        values.len(),
                        spec.n_tokens,
                        spec.token_dim
                    ),
                ));
            }
            if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
                let per = spec.n_tokens * spec.token_dim;
                return Err(MgrError::data(
                    &self.name,
                    format!(
                        "modality `{}` has a non-finite value ({}) in sample {}",
                        spec.name,
                        values[pos],
                        pos / per
                    ),
                ));
            }
        }
        match &self.targets {
            Targets::Classes { labels, n_classes } => {
                if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| **l >= *n_classes) {
                    return Err(MgrError::data(
                        &self.name,
                        format!("label {l} of sample {i} is not below {n_classes} classes"),
                    ));
                }
            }
            Targets::Values(v) => {
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(MgrError::data(
                        &self.name,
                        format!("target of sample {i} is not finite"),
                    ));
                }
            }
        }
        self.validate_truth()
    }

    /// The ground truth, where there is one, has a row per sample that fits the token grid.
    fn validate_truth(&self) -> Result<(), MgrError> {
        let Some(truth) = &self.truth else {
            return Ok(());
        };
        if truth.len() != self.len() {
            let reason = format!(
                "{} ground-truth rows for {} samples",
                truth.len(),
                self.len()
            );
            return Err(MgrError::data(&self.name, reason));
        }
        for (s, row) in truth.iter().enumerate() {
            let fits = row.shown.len() == self.modalities.len()
                && row.noise.len() == self.modalities.len()
                && row
                    .noise
                    .iter()
                    .zip(&self.modalities)
                    .all(|(r, m)| r.len() == m.n_tokens);
            if !fits {
                let reason = format!("sample {s}: the ground truth does not match the token grid");
                return Err(MgrError::data(&self.name, reason));
            }
        }
        Ok(())
    }

    /// The tokens of one sample and modality, `N_i * D_i` values.
    pub fn sample_features(&self, modality: usize, index: usize) -> &[f32] {
        let spec = &self.modalities[modality];
        let per = spec.n_tokens * spec.token_dim;
        &self.features[modality][index * per..(index + 1) * per]
    }

    /// A new split with the samples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize], name: impl Into<String>) -> DataSplit {
        let features = self
            .modalities
            .iter()
            .enumerate()
            .map(|(m, _)| {
                indices
                    .iter()
                    .flat_map(|&i| self.sample_features(m, i).iter().copied())
                    .collect()
            })
            .collect();
        let targets = match &self.targets {
            Targets::Classes { labels, n_classes } => Targets::Classes {
                labels: indices.iter().map(|&i| labels[i]).collect(),
                n_classes: *n_classes,
            },
            Targets::Values(v) => Targets::Values(indices.iter().map(|&i| v[i]).collect()),
        };
        DataSplit {
            name: name.into(),
            modalities: self.modalities.clone(),
            features,
            targets,
            truth: self.truth_rows(indices),
        }
    }

    /// The ground truth of the samples at `indices`, in that order, where the split has one.
    pub fn truth_rows(&self, indices: &[usize]) -> Option<Vec<SampleTruth>> {
        let truth = self.truth.as_ref()?;
        Some(indices.iter().map(|&i| truth[i].clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_normal_is_standard_normal_valid_and_seeded() {
        let specs = vec![
            ModalitySpec::new("a".into(), 4, 25),
            ModalitySpec::new("b".into(), 2, 3),
        ];
        let split = DataSplit::random_normal("r", specs.clone(), 100, 3, 7);
        split.validate().unwrap();
        let a = &split.features[0];
        assert_eq!(a.len(), 100 * 4 * 25);
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.06, "variance {var}");
        assert_eq!(
            split,
            DataSplit::random_normal("r", specs.clone(), 100, 3, 7)
        );
        assert_ne!(
            split.features,
            DataSplit::random_normal("r", specs, 100, 3, 8).features
        );
        assert_eq!(split.targets.len(), 100);
    }
}
