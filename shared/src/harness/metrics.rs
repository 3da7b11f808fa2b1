//! Evaluation metrics of the paper: accuracy, F1 (binary: positive class; multi-class: macro),
//! MAE and Pearson correlation for regression, and mean / sample standard deviation over runs.

use serde::{Deserialize, Serialize};

/// Index of the largest value (the first one on ties).
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// Share of equal entries.
pub fn accuracy(predicted: &[usize], target: &[usize]) -> f64 {
    if target.is_empty() {
        return 0.0;
    }
    predicted.iter().zip(target).filter(|(p, t)| p == t).count() as f64 / target.len() as f64
}

fn f1_of_class(predicted: &[usize], target: &[usize], class: usize) -> f64 {
    let tp = predicted
        .iter()
        .zip(target)
        .filter(|(p, t)| **p == class && **t == class)
        .count() as f64;
    let fp = predicted
        .iter()
        .zip(target)
        .filter(|(p, t)| **p == class && **t != class)
        .count() as f64;
    let fn_ = predicted
        .iter()
        .zip(target)
        .filter(|(p, t)| **p != class && **t == class)
        .count() as f64;
    if tp == 0.0 {
        0.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fn_)
    }
}

/// F1 as the paper reports it: of the positive class (1) for two classes, macro-averaged over
/// the classes present in either the targets or the predictions (scikit-learn's rule) otherwise.
pub fn f1(predicted: &[usize], target: &[usize], n_classes: usize) -> f64 {
    if n_classes == 2 {
        return f1_of_class(predicted, target, 1);
    }
    let present: Vec<usize> = (0..n_classes)
        .filter(|c| target.contains(c) || predicted.contains(c))
        .collect();
    if present.is_empty() {
        return 0.0;
    }
    present
        .iter()
        .map(|&c| f1_of_class(predicted, target, c))
        .sum::<f64>()
        / present.len() as f64
}

/// F1 averaged over the classes weighted by their share of the targets (scikit-learn's
/// `average='weighted'`), over every class: the figure MAPs' and MSPs' tables report beside
/// macro-F1.
pub fn weighted_f1(predicted: &[usize], target: &[usize], n_classes: usize) -> f64 {
    if target.is_empty() {
        return 0.0;
    }
    (0..n_classes)
        .map(|c| {
            let support = target.iter().filter(|&&t| t == c).count() as f64;
            support * f1_of_class(predicted, target, c)
        })
        .sum::<f64>()
        / target.len() as f64
}

/// Mean absolute error.
pub fn mae(predicted: &[f32], target: &[f32]) -> f64 {
    if target.is_empty() {
        return 0.0;
    }
    predicted
        .iter()
        .zip(target)
        .map(|(p, t)| (p - t).abs() as f64)
        .sum::<f64>()
        / target.len() as f64
}

/// Pearson correlation (0 when either side is constant).
pub fn pearson(x: &[f32], y: &[f32]) -> f64 {
    let n = x.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let my = y.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (a as f64 - mx, b as f64 - my);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Mean and sample standard deviation (n - 1; 0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The metrics of one evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Accuracy (of the sign for regression).
    pub accuracy: f64,
    /// F1 (of the sign for regression).
    pub f1: f64,
    /// Samples evaluated.
    pub n: usize,
    /// F1 weighted by class support ([`weighted_f1`]; classification only; absent in results
    /// written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighted_f1: Option<f64>,
    /// Mean absolute error (regression only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Pearson correlation (regression only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corr: Option<f64>,
}

impl Metrics {
    /// Classification metrics from predicted and true classes.
    pub fn classification(predicted: &[usize], target: &[usize], n_classes: usize) -> Self {
        Self {
            accuracy: accuracy(predicted, target),
            f1: f1(predicted, target, n_classes),
            n: target.len(),
            weighted_f1: Some(weighted_f1(predicted, target, n_classes)),
            mae: None,
            corr: None,
        }
    }

    /// Regression metrics; accuracy and F1 are of the sign (value > 0), as for CMU-MOSI.
    pub fn regression(predicted: &[f32], target: &[f32]) -> Self {
        let sign = |v: &[f32]| v.iter().map(|&x| (x > 0.0) as usize).collect::<Vec<_>>();
        let (p, t) = (sign(predicted), sign(target));
        Self {
            accuracy: accuracy(&p, &t),
            f1: f1(&p, &t, 2),
            n: target.len(),
            weighted_f1: None,
            mae: Some(mae(predicted, target)),
            corr: Some(pearson(predicted, target)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_binary_and_macro_by_hand() {
        // positive class: tp=2, fp=1, fn=1 -> 4/6
        assert!((f1(&[1, 1, 1, 0, 0], &[1, 1, 0, 1, 0], 2) - 4.0 / 6.0).abs() < 1e-12);
        // classes 0,1,2: f1 = 1, 0, 2/3 -> mean 5/9
        let got = f1(&[0, 2, 2], &[0, 1, 2], 3);
        assert!((got - (1.0 + 0.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12, "{got}");
    }

    #[test]
    fn weighted_f1_by_hand() {
        // targets 0,1,2,2: supports 1, 1, 2; per-class F1 1, 0, 1/2 (class 2: tp 1, fp 1,
        // fn 1) -> (1 + 0 + 2 x 1/2) / 4, where macro-F1 is (1 + 0 + 1/2) / 3
        let got = weighted_f1(&[0, 2, 2, 1], &[0, 1, 2, 2], 3);
        assert!((got - 0.5).abs() < 1e-12, "{got}");
        assert!((f1(&[0, 2, 2, 1], &[0, 1, 2, 2], 3) - 0.5).abs() < 1e-12);
        let skewed = weighted_f1(&[0, 0, 0, 1], &[0, 0, 0, 2], 3);
        assert!((skewed - 0.75).abs() < 1e-12, "{skewed}");
        // Balanced classes: equal to macro-F1.
        let (p, t) = ([0, 1, 1, 2, 2, 0], [0, 0, 1, 1, 2, 2]);
        assert!((weighted_f1(&p, &t, 3) - f1(&p, &t, 3)).abs() < 1e-12);
    }

    #[test]
    fn mean_and_sample_std_on_known_numbers() {
        let (m, s) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((m - 5.0).abs() < 1e-12);
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn regression_metrics() {
        let m = Metrics::regression(&[1.0, -1.0, 2.0], &[2.0, -2.0, 1.0]);
        assert!((m.mae.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(m.accuracy, 1.0);
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
    }
}
