//! The training settings, one optimisation step, and evaluation: what the trainer, the
//! benchmarks and the tests share. The epoch loop and data-parallel steps (threads) live in the
//! trainer; this crate has no file system, threads or clocks, so it builds for the browser.

use burn::config::Config;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::absence::AbsenceMask;
use crate::batch::Batch;
use crate::config::{ModelConfig, Task};
use crate::data::{DataSplit, Targets};
use crate::error::MgrError;
use crate::metrics::{Metrics, argmax};
use crate::model::Model;

/// Optimisation settings.
#[derive(Config, Debug)]
pub struct TrainConfig {
    /// AdamW learning rate.
    #[config(default = 1e-3)]
    pub lr: f64,
    /// AdamW decoupled weight decay.
    #[config(default = 1e-4)]
    pub weight_decay: f64,
    /// Samples per step (the paper and the PyTorch peer use 64 on AV-MNIST).
    #[config(default = 64)]
    pub batch_size: usize,
    /// Passes over the training split.
    #[config(default = 10)]
    pub epochs: usize,
    /// Seed of the parameter initialisation and of the batch order.
    #[config(default = 0)]
    pub seed: u64,
    /// Learning-rate schedule over the whole run (see [`LrSchedule`]).
    #[config(default = "LrSchedule::Constant")]
    pub schedule: LrSchedule,
    /// Share of all steps spent warming up linearly from lr / warm-up steps to lr (MAPs: 0.1);
    /// only for the `warmup-cosine` schedule.
    #[config(default = 0.1)]
    pub warmup_frac: f64,
    /// A step whose loss exceeds this multiple of the reference loss (the first epoch's mean;
    /// within the first epoch, its first step's) stops training as diverged, so an exploding run
    /// is reported as such instead of finishing at chance accuracy (20 x a 10-class chance loss
    /// is a true-class probability of e^-46: no healthy run gets there); 0 turns this bound off
    /// (a non-finite loss always stops training).
    #[config(default = 20.0)]
    pub divergence_factor: f64,
}

/// How the learning rate moves over a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// `lr` at every step.
    #[default]
    Constant,
    /// Linear warm-up over `warmup_frac` of the steps, then cosine decay to 0 at the last step.
    WarmupCosine,
}

impl TrainConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), MgrError> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(MgrError::InvalidConfig {
                field: "lr".into(),
                reason: format!("{} must be positive", self.lr),
            });
        }
        if self.batch_size == 0 {
            return Err(MgrError::InvalidConfig {
                field: "batch_size".into(),
                reason: "must be at least 1".into(),
            });
        }
        if !(0.0..1.0).contains(&self.warmup_frac) {
            return Err(MgrError::InvalidConfig {
                field: "warmup_frac".into(),
                reason: format!("{} is outside [0, 1)", self.warmup_frac),
            });
        }
        if !(self.divergence_factor == 0.0 || self.divergence_factor > 1.0)
            || !self.divergence_factor.is_finite()
        {
            return Err(MgrError::InvalidConfig {
                field: "divergence_factor".into(),
                reason: format!(
                    "{} must be above 1 (or 0 to turn the bound off)",
                    self.divergence_factor
                ),
            });
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return Err(MgrError::InvalidConfig {
                field: "weight_decay".into(),
                reason: "must be >= 0".into(),
            });
        }
        Ok(())
    }

    /// The learning rate of step `step` (0-based) of `epoch`, with `steps_per_epoch` steps per
    /// epoch: a pure function of the position in the run, so a resumed run continues the same
    /// schedule.
    pub fn lr_at(&self, epoch: usize, step: usize, steps_per_epoch: usize) -> f64 {
        match self.schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::WarmupCosine => {
                let total = (self.epochs * steps_per_epoch).max(1) as f64;
                let t = (epoch * steps_per_epoch + step) as f64;
                let warmup = (self.warmup_frac * total).ceil().max(1.0);
                if t < warmup {
                    self.lr * (t + 1.0) / warmup
                } else {
                    let progress = ((t - warmup) / (total - warmup).max(1.0)).min(1.0);
                    self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
        }
    }

    /// Checks one step's loss (Eq. 13's total) against divergence: it must be finite and, with
    /// a positive `divergence_factor`, at most that multiple of `reference` (a loss at or below
    /// 1 counts as 1, so a reference near zero does not flag ordinary noise). `epoch` and `step`
    /// are 1-based, for the message.
    pub fn check_divergence(
        &self,
        loss: f64,
        reference: f64,
        epoch: usize,
        step: usize,
    ) -> Result<(), MgrError> {
        let diverged = |reason: String| MgrError::Diverged {
            epoch,
            step,
            loss,
            reason,
        };
        if !loss.is_finite() {
            return Err(diverged("is not finite".into()));
        }
        let bound = self.divergence_factor * reference.abs().max(1.0);
        if self.divergence_factor > 0.0 && loss > bound {
            return Err(diverged(format!(
                "is above {} x the reference loss {reference:.4} (train.divergence_factor)",
                self.divergence_factor
            )));
        }
        Ok(())
    }

    /// The AdamW optimiser these settings describe.
    pub fn optimizer(&self) -> ModuleOptimizer {
        AdamWConfig::new()
            .with_weight_decay(self.weight_decay as f32)
            .init()
    }

    /// The sample order of `epoch`: a permutation of 0..n from (seed, epoch).
    pub fn epoch_order(&self, n: usize, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut crate::seeds::rng(crate::seeds::epoch_stream(
            self.seed, epoch,
        )));
        order
    }
}

/// Losses of one step, on the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepLosses {
    /// Eq. 13's total.
    pub total: f64,
    /// L_task.
    pub task: f64,
    /// L_div (unweighted).
    pub div: f64,
}

/// Builds a model with a seeded initialisation on an autodiff version of `device`.
///
/// Burn initialises parameters lazily, on first use, from the device's random stream; left
/// lazy, a parameter's values would depend on which code touched it first (a forward pass, a
/// fork to another device, saving). Every parameter is drawn here, in module order, so a seed
/// always gives the same model. The device's random stream is shared by every thread (the
/// protocol trains several runs at once in one process), so seeding and drawing hold one lock.
pub fn init_model(config: &ModelConfig, seed: u64, device: &Device) -> Result<Model, MgrError> {
    static SEEDED_DRAWS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _draws = SEEDED_DRAWS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = device.clone().autodiff();
    device.seed(seed);
    let model = config.init(&device)?;
    model.visit(&mut Materialize);
    Ok(model)
}

/// Draws every lazily initialised parameter it visits.
struct Materialize;

impl ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// One optimisation step (forward, Eq. 13, backward, AdamW). `model` and `batch` live on an
/// autodiff device.
pub fn train_step(
    model: Model,
    optimizer: &mut ModuleOptimizer,
    lr: f64,
    batch: &Batch,
) -> (Model, StepLosses) {
    let (grads, losses) = weighted_gradients(&model, batch, 1.0);
    (optimizer.step(lr, model, grads), losses)
}

/// Forward, Eq. 13 scaled by `weight`, backward: the gradients of `weight * L` and the losses
/// (scaled alike) on the host. `model` and `batch` live on the same autodiff device.
pub fn weighted_gradients(
    model: &Model,
    batch: &Batch,
    weight: f64,
) -> (GradientsParams, StepLosses) {
    let output = model.forward(batch);
    let targets = batch
        .targets
        .as_ref()
        .expect("a training batch has targets");
    let parts = output.total_loss(targets, &model.config);
    let losses = StepLosses {
        total: parts.total.clone().into_scalar::<f32>() as f64 * weight,
        task: parts.task.into_scalar::<f32>() as f64 * weight,
        div: parts.div.into_scalar::<f32>() as f64 * weight,
    };
    let loss = parts.total.mul_scalar(weight);
    (GradientsParams::from_grads(loss.backward(), model), losses)
}

/// The result of evaluating a model on a split under a mask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Metrics over the whole split.
    pub overall: Metrics,
    /// Metrics per absence pattern (name: the available modalities joined by '+').
    pub per_pattern: BTreeMap<String, Metrics>,
    /// Mean task loss.
    pub loss: f64,
}

/// Batch size of test-set evaluation: large enough to keep the cores busy, small enough for any
/// device's memory.
pub const EVAL_BATCH: usize = 256;

/// Evaluates `model` (any device; it is switched to validation mode) on `split` under `mask`.
pub fn evaluate(
    model: &Model,
    split: &DataSplit,
    mask: &AbsenceMask,
    batch_size: usize,
    device: &Device,
) -> Evaluation {
    let model = model.valid();
    let n = split.len();
    let c = model.config.n_outputs;
    let mut outputs: Vec<f32> = Vec::with_capacity(n * c);
    let mut loss_sum = 0.0;
    let indices: Vec<usize> = (0..n).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = Batch::from_split(split, chunk, mask, device);
        let out = model.forward(&batch);
        let parts = out.total_loss(
            batch.targets.as_ref().expect("split has targets"),
            &model.config,
        );
        loss_sum += parts.task.into_scalar::<f32>() as f64 * chunk.len() as f64;
        outputs.extend(
            out.output
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32 output"),
        );
    }
    let groups = {
        let mut g: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for i in 0..n {
            g.entry(mask.pattern_name(i)).or_default().push(i);
        }
        g
    };
    let metrics_of = |rows: &[usize]| match (&split.targets, model.config.task) {
        (Targets::Classes { labels, n_classes }, Task::Classification) => {
            let predicted: Vec<usize> = rows
                .iter()
                .map(|&i| argmax(&outputs[i * c..(i + 1) * c]))
                .collect();
            let target: Vec<usize> = rows.iter().map(|&i| labels[i]).collect();
            Metrics::classification(&predicted, &target, *n_classes)
        }
        (Targets::Values(v), _) => {
            let predicted: Vec<f32> = rows.iter().map(|&i| outputs[i * c]).collect();
            let target: Vec<f32> = rows.iter().map(|&i| v[i]).collect();
            Metrics::regression(&predicted, &target)
        }
        (Targets::Classes { labels, .. }, Task::Regression) => {
            let predicted: Vec<f32> = rows.iter().map(|&i| outputs[i * c]).collect();
            let target: Vec<f32> = rows.iter().map(|&i| labels[i] as f32).collect();
            Metrics::regression(&predicted, &target)
        }
    };
    Evaluation {
        overall: metrics_of(&indices),
        per_pattern: groups
            .iter()
            .map(|(k, rows)| (k.clone(), metrics_of(rows)))
            .collect(),
        loss: loss_sum / n.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergence_is_a_non_finite_loss_or_one_above_the_bound() {
        let cfg = TrainConfig::new().with_divergence_factor(100.0);
        assert!(cfg.check_divergence(2.3, 2.3, 1, 1).is_ok());
        assert!(cfg.check_divergence(229.0, 2.3, 2, 5).is_ok());
        let err = cfg.check_divergence(231.0, 2.3, 2, 5).unwrap_err();
        assert_eq!(
            err,
            MgrError::Diverged {
                epoch: 2,
                step: 5,
                loss: 231.0,
                reason: "is above 100 x the reference loss 2.3000 (train.divergence_factor)".into()
            }
        );
        assert!(err.to_string().contains("epoch 2, step 5"), "{err}");
        // A reference below 1 counts as 1: a regression loss of 0.01 may grow to 100.
        assert!(cfg.check_divergence(99.0, 0.01, 1, 3).is_ok());
        assert!(cfg.check_divergence(101.0, 0.01, 1, 3).is_err());
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(cfg.check_divergence(bad, 2.3, 1, 1).is_err());
        }
        // The bound off: large losses pass, non-finite ones still stop.
        let off = TrainConfig::new().with_divergence_factor(0.0);
        assert!(off.check_divergence(1e30, 2.3, 1, 1).is_ok());
        assert!(off.check_divergence(f64::NAN, 2.3, 1, 1).is_err());
        for bad in [0.5, 1.0, -3.0, f64::NAN, f64::INFINITY] {
            assert!(
                TrainConfig::new()
                    .with_divergence_factor(bad)
                    .validate()
                    .is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn warmup_cosine_rises_linearly_then_decays_to_zero() {
        let cfg = TrainConfig::new()
            .with_lr(1.0)
            .with_epochs(2)
            .with_schedule(LrSchedule::WarmupCosine)
            .with_warmup_frac(0.2);
        // 2 epochs x 10 steps: 4 warm-up steps (1/4 .. 4/4), then cosine over the other 16.
        let lrs: Vec<f64> = (0..2)
            .flat_map(|e| (0..10).map(move |s| (e, s)))
            .map(|(e, s)| cfg.lr_at(e, s, 10))
            .collect();
        for (t, want) in [(0, 0.25), (1, 0.5), (3, 1.0), (4, 1.0)] {
            assert!((lrs[t] - want).abs() < 1e-12, "step {t}: {}", lrs[t]);
        }
        // halfway through the decay (t = 4 + 8) the cosine is at half the peak
        assert!((lrs[12] - 0.5).abs() < 1e-12, "{}", lrs[12]);
        assert!(lrs[19] > 0.0 && lrs[19] < 0.01, "{}", lrs[19]);
        assert!(lrs[4..].windows(2).all(|w| w[1] <= w[0]), "{lrs:?}");
        let constant = cfg.with_schedule(LrSchedule::Constant);
        assert_eq!(constant.lr_at(1, 7, 10), 1.0);
    }

    #[test]
    fn warmup_frac_outside_its_range_is_refused() {
        let err = TrainConfig::new()
            .with_warmup_frac(1.0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("warmup_frac"), "{err}");
    }
}
