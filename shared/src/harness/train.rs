//! The training settings, one optimisation step, and evaluation: what the trainer, the
//! benchmarks and the tests share. The epoch loop and data-parallel steps (threads) live in the
//! trainer; this crate has no file system, threads or clocks, so it builds for the browser.

use burn::config::Config;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::absence::AbsenceMask;
use crate::batch::Batch;
use crate::config::{ModelConfig, Task};
use crate::data::{DataSplit, Targets};
use crate::error::MgrError;
use crate::kernels::Execution;
use crate::metrics::{Metrics, argmax};
use crate::model::{DiversityInputs, Model, ModelOutput, PooledPair};

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
    /// Shards each batch is split into on a CPU device, computed side by side on the cores
    /// ([`train_step_sharded`]): Burn runs most element-wise ops on one core, two samples'
    /// halves of a batch keep two busy. The step's gradient is the whole batch's (L_div over
    /// every shard's rows), so this changes speed and float rounding only; a fixed number, not
    /// the machine's core count, so a seed gives the same run everywhere. 1 turns it off; other
    /// devices ignore it.
    #[config(default = "CPU_SHARDS")]
    pub cpu_shards: usize,
    /// How the model's operations run: `kernels` (the project's; None, as in a config written
    /// before this field, means the same) or `burn-ops` (Burn's own, the reference the kernels
    /// are tested against). Speed and float rounding only; not saved with the model.
    #[config(default = "None")]
    pub execution: Option<Execution>,
}

impl TrainConfig {
    /// The execution policy this config asks for ([`TrainConfig::execution`]).
    pub fn execution_policy(&self) -> Execution {
        self.execution.unwrap_or_default()
    }
}

/// The default of [`TrainConfig::cpu_shards`] and the shards of evaluation on a CPU device.
pub const CPU_SHARDS: usize = 2;

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
        if self.cpu_shards == 0 {
            return Err(MgrError::InvalidConfig {
                field: "cpu_shards".into(),
                reason: "must be at least 1".into(),
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

    /// The AdamW optimiser these settings describe (Burn's AdamW, one pass per parameter on
    /// flex: [`crate::optimizer::FusedAdamW`]).
    pub fn optimizer(&self) -> ModuleOptimizer {
        crate::optimizer::FusedAdamW::module_optimizer(self.weight_decay as f32)
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
/// fork to another device, saving). Every parameter is drawn here, in module order, on flex,
/// and the model then moves to `device`, so a seed always gives the same model, on every
/// backend. The device's random stream is shared by every thread (the
/// protocol trains several runs at once in one process), so seeding and drawing hold one lock.
pub fn init_model(config: &ModelConfig, seed: u64, device: &Device) -> Result<Model, MgrError> {
    static SEEDED_DRAWS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _draws = SEEDED_DRAWS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = device.clone().autodiff();
    device.seed(seed);
    // Drawn on flex whatever the device, then moved: each backend's generator draws other
    // numbers from the same seed, and a seed should start a GPU run where it starts a CPU one.
    let host = Device::flex().autodiff();
    host.seed(seed);
    let model = config.init(&host)?.with_ranking_seed(seed);
    model.visit(&mut Materialize);
    Ok(if crate::kernels::on_flex(&device) {
        model
    } else {
        model.fork(&device)
    })
}

/// Draws every lazily initialised parameter it visits.
struct Materialize;

impl ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// One optimisation step (forward, Eq. 13, backward, AdamW) on the whole batch: the one-shard
/// [`train_step_sharded`]. `model` and `batch` live on an autodiff device.
pub fn train_step(
    model: Model,
    optimizer: &mut ModuleOptimizer,
    lr: f64,
    batch: &Batch,
) -> (Model, StepLosses) {
    train_step_sharded(model, optimizer, lr, std::slice::from_ref(batch))
}

/// The shards a batch is split into on `device`: [`TrainConfig::cpu_shards`] (or
/// [`CPU_SHARDS`] for evaluation) on a CPU device, 1 on others (a GPU runs each op on all its
/// cores already).
pub fn shards_on(device: &Device, cpu_shards: usize) -> usize {
    match crate::kernels::on_flex(device) {
        true => cpu_shards.max(1),
        false => 1,
    }
}

/// One optimisation step on a batch given as contiguous `shards` (in batch order): the
/// gradients of [`sharded_gradients`], then AdamW.
pub fn train_step_sharded(
    model: Model,
    optimizer: &mut ModuleOptimizer,
    lr: f64,
    shards: &[Batch],
) -> (Model, StepLosses) {
    let (grads, losses) = sharded_gradients(&model, shards);
    (optimizer.step(lr, model, grads), losses)
}

/// The gradients of Eq. 13 on a batch given as contiguous `shards` (in batch order), each
/// computed on its own copy of the parameters (its own autodiff graph) on its batch's device,
/// side by side (a CPU's cores, or several devices), and the losses on the host.
///
/// - L_task is a mean over samples: each shard's is weighted by its share of them.
/// - L_div (Eq. 4) couples the samples: it is computed once, from every shard's pooled rows
///   (detached), and its gradient with respect to each shard's rows, G, goes back through that
///   shard's graph as the surrogate lambda_div sum(P G), whose gradient is lambda_div G dP/dtheta.
/// - L_orth (MSPs) depends on the parameters only: the first shard carries it.
///
/// The shards' gradients are summed in shard order on the first shard's device (where `model`
/// lives): the whole batch's gradient up to float rounding, the same for the same shards on
/// every run.
pub fn sharded_gradients(model: &Model, shards: &[Batch]) -> (GradientsParams, StepLosses) {
    assert!(!shards.is_empty(), "a step needs a batch");
    if let [batch] = shards {
        return whole_batch_gradients(model, batch);
    }
    let config = &model.config;
    let total: usize = shards.iter().map(Batch::len).sum();
    // Each shard's copy of the parameters is made on its own core too.
    let mut replicas = Vec::with_capacity(shards.len());
    let mut outputs = Vec::with_capacity(shards.len());
    let mut pooled = Vec::with_capacity(shards.len());
    for (replica, output, shard_pooled) in map_shards(shards.iter().collect(), |batch| {
        let replica = model.clone().fork(&batch.available.device());
        let output = replica.forward_shard(batch);
        let shard_pooled: Vec<PooledPair> = output
            .diversity
            .iter()
            .map(DiversityInputs::pooled)
            .collect();
        (replica, output, shard_pooled)
    }) {
        replicas.push(replica);
        outputs.push(output);
        pooled.push(shard_pooled);
    }
    let (l_div, row_grads) = diversity_across_shards(model, &outputs, &pooled);
    let weights = config.loss_weights();
    let (lambda_div, lambda_orth) = (weights.div, weights.orth);
    let work: Vec<_> = replicas
        .iter()
        .zip(shards)
        .zip(outputs)
        .zip(pooled)
        .zip(row_grads)
        .enumerate()
        .collect();
    let results = map_shards(
        work,
        |(s, ((((replica, batch), output), pooled), grads))| {
            let targets = batch
                .targets
                .as_ref()
                .expect("a training batch has targets");
            let weight = batch.len() as f64 / total as f64;
            let task = output.task_loss(targets);
            let task_value = task.clone().into_scalar::<f32>() as f64 * weight;
            let mut surrogate = task.mul_scalar(weight);
            for (pooled, (g_u, g_h)) in pooled.into_iter().zip(grads) {
                surrogate = surrogate + (pooled.u * g_u).sum().mul_scalar(lambda_div);
                surrogate = surrogate + (pooled.h * g_h).sum().mul_scalar(lambda_div);
            }
            let mut orth_value = 0.0;
            if s == 0 {
                orth_value = output.l_orth.clone().into_scalar::<f32>() as f64;
                surrogate = surrogate + output.l_orth.mul_scalar(lambda_orth);
            }
            let grads = GradientsParams::from_grads(surrogate.backward(), replica);
            (grads, task_value, orth_value)
        },
    );
    let mut task = 0.0;
    let mut orth = 0.0;
    let mut per_shard = Vec::with_capacity(results.len());
    for (grads, task_value, orth_value) in results {
        task += task_value;
        orth += orth_value;
        per_shard.push(grads);
    }
    let mut sum = SumGradients {
        shards: per_shard,
        sum: GradientsParams::new(),
    };
    model.visit(&mut sum);
    let losses = StepLosses {
        total: weights.total_of(task, l_div, orth),
        task,
        div: l_div,
    };
    (sum.sum, losses)
}

/// L_div over every shard's rows (Eq. 4's inputs of each modality joined in shard order, which
/// is batch order), and its gradient with respect to each shard's rows: per shard, per entry of
/// its `diversity`, (dL_div/dP_u, dL_div/dP_h) on the shard's device (zeros where a modality has
/// fewer than 2 rows in the whole batch and so no term).
///
/// Computed on the host with the closed-form gradient
/// ([`crate::kernels::dcor::squared_distance_correlation_with_gradient`]): the rows are few (at most the batch,
/// d wide), and Burn's ops with autodiff spent about 5 ms of a 70 ms step on them, serially.
#[allow(clippy::type_complexity)]
fn diversity_across_shards(
    model: &Model,
    outputs: &[ModelOutput],
    pooled: &[Vec<PooledPair>],
) -> (f64, Vec<Vec<(Tensor<2>, Tensor<2>)>>) {
    // Per shard, per entry of its `diversity`: P_u and P_h on the host.
    let rows: Vec<Vec<[HostMatrix; 2]>> = pooled
        .iter()
        .map(|shard| {
            shard
                .iter()
                .map(|pair| [&pair.u, &pair.h].map(HostMatrix::of))
                .collect()
        })
        .collect();
    let (value, grads) = diversity_on_host(model, outputs, &rows);
    let row_grads = grads
        .into_iter()
        .zip(&rows)
        .zip(outputs)
        .map(|((shard_grads, shard_rows), out)| {
            let device = out.output.device();
            shard_grads
                .into_iter()
                .zip(shard_rows)
                .map(|([g_u, g_h], [u, h])| {
                    (u.with_values(g_u, &device), h.with_values(g_h, &device))
                })
                .collect()
        })
        .collect();
    (value, row_grads)
}

/// L_div over the joined rows of every modality, and its gradient in `rows`' layout (per
/// shard, per entry: dL_div/dP_u, dL_div/dP_h), zero where a modality has no term.
#[allow(clippy::type_complexity)]
fn diversity_on_host(
    model: &Model,
    outputs: &[ModelOutput],
    rows: &[Vec<[HostMatrix; 2]>],
) -> (f64, Vec<Vec<[Vec<f32>; 2]>>) {
    // dL_div/dP_u and dL_div/dP_h, in the same layout, zero until a term gives them values.
    let mut grads: Vec<Vec<[Vec<f32>; 2]>> = rows
        .iter()
        .map(|shard| {
            shard
                .iter()
                .map(|pair| pair.each_ref().map(|m| vec![0.0; m.values.len()]))
                .collect()
        })
        .collect();
    let mut value = 0.0;
    for modality in 0..model.config.modalities.len() {
        // (shard, entry) of this modality's rows, in batch order.
        let parts: Vec<(usize, usize)> = outputs
            .iter()
            .enumerate()
            .flat_map(|(s, out)| {
                out.diversity
                    .iter()
                    .enumerate()
                    .filter(move |(_, inputs)| inputs.modality == modality)
                    .map(move |(e, _)| (s, e))
            })
            .collect();
        let n: usize = parts.iter().map(|&(s, e)| rows[s][e][0].rows).sum();
        if !DiversityInputs::rows_give_a_term(n) {
            continue;
        }
        let joined = |which: usize| -> Vec<f32> {
            parts
                .iter()
                .flat_map(|&(s, e)| rows[s][e][which].values.iter().copied())
                .collect()
        };
        let (term, grad_u, grad_h) =
            crate::kernels::dcor::squared_distance_correlation_with_gradient(
                &joined(0),
                &joined(1),
                n,
                model.config.dcor_eps,
            );
        value += term;
        // Each part's rows of the joined gradients, in the same order.
        for (which, joined_grad) in [grad_u, grad_h].iter().enumerate() {
            let mut at = 0;
            for &(s, e) in &parts {
                let part = &mut grads[s][e][which];
                let len = part.len();
                part.copy_from_slice(&joined_grad[at..at + len]);
                at += len;
            }
        }
    }
    (value, grads)
}

/// A `[rows, cols]` f32 matrix on the host.
struct HostMatrix {
    rows: usize,
    cols: usize,
    values: Vec<f32>,
}

impl HostMatrix {
    fn of(t: &Tensor<2>) -> Self {
        let [rows, cols] = t.dims();
        let values = t.to_data().convert::<f32>().try_to_vec::<f32>();
        Self {
            rows,
            cols,
            values: values.expect("converted to f32"),
        }
    }

    /// A tensor of this shape on `device` holding `values`.
    fn with_values(&self, values: Vec<f32>, device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values, [self.rows, self.cols]), device)
    }
}

/// Sums the shards' gradients of each parameter it visits, in shard order, on the device of
/// the first shard's.
struct SumGradients {
    shards: Vec<GradientsParams>,
    sum: GradientsParams,
}

impl ModuleVisitor for SumGradients {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let summed = self
            .shards
            .iter_mut()
            .filter_map(|grads| grads.remove::<D>(param.id))
            .reduce(|acc, g| {
                let device = acc.device();
                acc + g.to_device(&device)
            });
        if let Some(g) = summed {
            self.sum.register(param.id, g);
        }
    }
}

/// `f` on every item, side by side on the cores natively (rayon tasks: the kernels' own
/// parallel loops nest in the same pool), one after another in the browser.
fn map_shards<I: Send, T: Send>(items: Vec<I>, f: impl Fn(I) -> T + Sync + Send) -> Vec<T> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        items.into_par_iter().map(f).collect()
    }
    #[cfg(target_arch = "wasm32")]
    {
        items.into_iter().map(f).collect()
    }
}

/// The forward pass of `model` on a batch given as `shards`, side by side on the cores, in
/// shard order. Without L_div ([`Model::forward_shard`]): everything else of the output is per
/// sample, so the shards' outputs are the whole batch's.
pub fn infer_outputs(model: &Model, shards: &[Batch]) -> Vec<ModelOutput> {
    map_shards(shards.iter().collect(), |batch| model.forward_shard(batch))
}

/// Forward, Eq. 13, backward on one batch: the gradients of L and the losses on the host.
/// `model` and `batch` live on the same autodiff device.
fn whole_batch_gradients(model: &Model, batch: &Batch) -> (GradientsParams, StepLosses) {
    let output = model.forward(batch);
    let targets = batch
        .targets
        .as_ref()
        .expect("a training batch has targets");
    let parts = output.total_loss(targets, &model.config);
    let losses = StepLosses {
        total: parts.total.clone().into_scalar::<f32>() as f64,
        task: parts.task.into_scalar::<f32>() as f64,
        div: parts.div.into_scalar::<f32>() as f64,
    };
    (
        GradientsParams::from_grads(parts.total.backward(), model),
        losses,
    )
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
    let shards = shards_on(device, CPU_SHARDS);
    for chunk in indices.chunks(batch_size.max(1)) {
        let batches = Batch::shards_from_split(split, chunk, mask, device, shards);
        for (batch, out) in batches.iter().zip(infer_outputs(&model, &batches)) {
            let task = out.task_loss(batch.targets.as_ref().expect("split has targets"));
            loss_sum += task.into_scalar::<f32>() as f64 * batch.len() as f64;
            outputs.extend(
                out.output
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .expect("f32 output"),
            );
        }
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
    use crate::batch::shard;
    use crate::config::{Method, ModalitySpec};
    use burn::optim::SgdConfig;

    /// A step on the batch in three shards (3, 2 and 2 samples) gives the same losses and the
    /// same update as one step on the whole batch, for every kind of loss: L_div, a statistic
    /// over the batch's rows (MGR; the last shard has a single sample with vision), L_orth, a
    /// function of the parameters (MSPs), and the plain per-sample mean (baseline, MAPs). SGD
    /// makes the parameter change proportional to the gradient, so equal outputs after the
    /// step mean equal gradients.
    #[test]
    fn a_sharded_step_equals_the_whole_batch_step() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        for method in [Method::Mgr, Method::Msps, Method::Maps, Method::Baseline] {
            let cfg = ModelConfig::new(
                vec![
                    ModalitySpec::new("v".into(), 5, 3),
                    ModalitySpec::new("a".into(), 4, 6),
                ],
                3,
            )
            .with_method(method)
            .with_d_model(8)
            .with_n_heads(2)
            .with_prompt_len(2)
            .with_lambda_div(0.5);
            let split = DataSplit::random_normal("shards", cfg.modalities.clone(), 7, 3, 11);
            // Vision missing from samples 0, 3 and 6, audio from 2 and 5.
            let rows = (0..7).map(|i| vec![i % 3 != 0, i % 3 != 2]).collect();
            let mask = AbsenceMask {
                modalities: vec!["v".into(), "a".into()],
                rows,
            };
            let all: Vec<usize> = (0..7).collect();
            let start = init_model(&cfg, 5, &device).unwrap();

            let batch = Batch::from_split(&split, &all, &mask, &ad);
            let mut opt = SgdConfig::new().init();
            let (whole, l_whole) = train_step(start.clone(), &mut opt, 0.5, &batch);
            let shards = Batch::shards_from_split(&split, &all, &mask, &ad, 3);
            let sizes: Vec<usize> = shards.iter().map(Batch::len).collect();
            assert_eq!(sizes, vec![3, 2, 2]);
            let mut opt = SgdConfig::new().init();
            let (sharded, l_sharded) = train_step_sharded(start.clone(), &mut opt, 0.5, &shards);

            if method == Method::Mgr {
                assert!(l_whole.div > 1e-3, "L_div must take part ({})", l_whole.div);
            }
            for (what, a, b) in [
                ("total", l_whole.total, l_sharded.total),
                ("task", l_whole.task, l_sharded.task),
                ("div", l_whole.div, l_sharded.div),
            ] {
                assert!((a - b).abs() < 1e-5, "{method:?}: {what} loss {a} vs {b}");
            }
            let eval = Batch::from_split(&split, &all, &mask, &device);
            let out = |m: &Model| m.valid().forward(&eval).output;
            let moved: f32 = (out(&whole) - out(&start)).abs().max().into_scalar();
            let diff: f32 = (out(&whole) - out(&sharded)).abs().max().into_scalar();
            assert!(
                moved > 1e-3,
                "{method:?}: the step must move the outputs ({moved})"
            );
            assert!(
                diff < 1e-4 * moved.max(1.0),
                "{method:?}: outputs differ by {diff} (the step moved them by {moved})"
            );
        }
    }

    /// Evaluation in shards: the outputs are per sample, so any shard count gives the same.
    #[test]
    fn sharded_inference_gives_the_whole_batch_outputs() {
        let device = Device::flex();
        let cfg = ModelConfig::new(vec![ModalitySpec::new("v".into(), 5, 3)], 3)
            .with_d_model(8)
            .with_n_heads(2);
        let split = DataSplit::random_normal("infer", cfg.modalities.clone(), 9, 3, 2);
        let mask = AbsenceMask {
            modalities: vec!["v".into()],
            rows: vec![vec![true]; 9],
        };
        let model = init_model(&cfg, 1, &device).unwrap().valid();
        let all: Vec<usize> = (0..9).collect();
        let whole = model.forward(&Batch::from_split(&split, &all, &mask, &device));
        let shards = Batch::shards_from_split(&split, &all, &mask, &device, 4);
        assert_eq!(shard(&all, 4).len(), shards.len());
        let outputs: Vec<Tensor<2>> = infer_outputs(&model, &shards)
            .into_iter()
            .map(|o| o.output)
            .collect();
        let diff: f32 = (whole.output - Tensor::cat(outputs, 0))
            .abs()
            .max()
            .into_scalar();
        assert!(diff < 1e-5, "outputs differ by {diff}");
    }

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
