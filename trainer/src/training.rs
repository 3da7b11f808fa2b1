//! The epoch loop and data-parallel training: one batch sharded over several devices, one
//! thread per device. The model crate's step ([`mgr::train::train_step_sharded`]) is the
//! one-device case.

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::tensor::Device;
use mgr::absence::AbsenceMask;
use mgr::batch::{Batch, shard};
use mgr::data::DataSplit;
use mgr::train::{StepLosses, TrainConfig, shards_on, train_step_sharded, weighted_gradients};
use mgr::{MgrError, Model};

/// One data-parallel optimisation step over several devices (Burn's multi-device training:
/// a fork of the model per device, gradients summed per parameter by `MultiGradientsParams`,
/// one AdamW step with `step_multi`). `shards[i]` lives on `devices[i]` (autodiff devices);
/// the returned model lives on `devices[0]`.
///
/// Each shard's loss is weighted by its share of the samples, so the summed gradients are
/// those of the whole batch's mean task loss: the step equals `train_step` on the
/// concatenated batch for every method without L_div. L_div (Eq. 4) is a statistic of the
/// rows it sees, so with data parallelism it is estimated per shard (as PyTorch's DDP would).
pub fn train_step_parallel(
    model: Model,
    optimizer: &mut ModuleOptimizer,
    lr: f64,
    shards: &[Batch],
    devices: &[Device],
) -> (Model, StepLosses) {
    assert_eq!(shards.len(), devices.len(), "one shard per device");
    let total: usize = shards.iter().map(Batch::len).sum();
    let results: Vec<(GradientsParams, StepLosses)> = std::thread::scope(|scope| {
        let handles: Vec<_> = shards
            .iter()
            .zip(devices)
            .map(|(batch, device)| {
                let replica = model.clone().fork(device);
                let weight = batch.len() as f64 / total.max(1) as f64;
                scope.spawn(move || weighted_gradients(&replica, batch, weight))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a data-parallel worker panicked"))
            .collect()
    });
    let mut losses = StepLosses::default();
    let mut grads = MultiGradientsParams::default();
    for ((g, l), device) in results.into_iter().zip(devices) {
        losses.total += l.total;
        losses.task += l.task;
        losses.div += l.div;
        grads.grads.push((g, device.clone()));
    }
    let model = optimizer.step_multi(lr, model, grads).fork(&devices[0]);
    (model, losses)
}

/// One pass over `split` in the order of `epoch`; returns the model and the mean losses.
///
/// Written out rather than burn-train's `Learner`: the batch order is a pure function of (seed,
/// epoch) ([`TrainConfig::epoch_order`]), so a resumed run repeats the uninterrupted one
/// exactly; a step needs the per-sample absence mask on the host (Eq. 4 selects the rows that
/// have each modality) and reports L_div beside the task loss; and `mgr protocol` trains several
/// runs at once in one process.
/// With several `devices` (autodiff devices), every batch is sharded over them
/// ([`train_step_parallel`]); with one, over the cores of a CPU device
/// ([`TrainConfig::cpu_shards`], [`train_step_sharded`]) or not at all on a GPU.
/// `on_step` is called after every step with (steps done, steps total, losses).
///
/// Every step's loss is checked ([`TrainConfig::check_divergence`]) against `reference_loss`
/// (the run's first epoch mean; None in the first epoch, where the first step's loss is used):
/// a diverged step returns [`MgrError::Diverged`] and the epoch's model is dropped, so the
/// caller's last checkpoint stays the last good one.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch(
    mut model: Model,
    optimizer: &mut ModuleOptimizer,
    config: &TrainConfig,
    split: &DataSplit,
    mask: &AbsenceMask,
    epoch: usize,
    reference_loss: Option<f64>,
    devices: &[Device],
    mut on_step: impl FnMut(usize, usize, &StepLosses),
) -> Result<(Model, StepLosses), MgrError> {
    assert!(!devices.is_empty(), "train_epoch needs a device");
    let order = config.epoch_order(split.len(), epoch);
    let chunks: Vec<&[usize]> = order.chunks(config.batch_size).collect();
    let mut sum = StepLosses::default();
    let mut reference = reference_loss;
    for (step, indices) in chunks.iter().enumerate() {
        let lr = config.lr_at(epoch, step, chunks.len());
        let (next, losses) = if devices.len() == 1 {
            let parts = shards_on(&devices[0], config.cpu_shards);
            let shards = Batch::shards_from_split(split, indices, mask, &devices[0], parts);
            train_step_sharded(model, optimizer, lr, &shards)
        } else {
            let parts = shard(indices, devices.len());
            let shards: Vec<Batch> = parts
                .iter()
                .zip(devices)
                .map(|(part, device)| Batch::from_split(split, part, mask, device))
                .collect();
            train_step_parallel(model, optimizer, lr, &shards, &devices[..shards.len()])
        };
        model = next;
        let reference = *reference.get_or_insert(losses.total);
        config.check_divergence(losses.total, reference, epoch + 1, step + 1)?;
        sum.total += losses.total;
        sum.task += losses.task;
        sum.div += losses.div;
        on_step(step + 1, chunks.len(), &losses);
    }
    let n = chunks.len().max(1) as f64;
    Ok((
        model,
        StepLosses {
            total: sum.total / n,
            task: sum.task / n,
            div: sum.div / n,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::SgdConfig;
    use mgr::train::{init_model, train_step};
    use mgr::{Method, ModalitySpec, ModelConfig};

    /// Sharding the batch over two devices and summing the weighted gradients gives the same
    /// update as one step on the whole batch, for methods whose loss is a per-sample mean
    /// (L_div is a batch statistic, estimated per shard). SGD makes the parameter change
    /// proportional to the gradient, so equal parameters mean equal summed gradients.
    #[test]
    fn a_data_parallel_step_equals_the_whole_batch_step() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        for method in [Method::Baseline, Method::MgrNoDiv] {
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
            .with_prompt_len(2);
            let split = DataSplit::random_normal("dp", cfg.modalities.clone(), 7, 3, 11);
            // Some samples miss a modality, none misses both.
            let mask = AbsenceMask {
                modalities: vec!["v".into(), "a".into()],
                rows: (0..7)
                    .map(|i| (0..2).map(|j| (i + j) % 3 != 0).collect())
                    .collect(),
            };
            let all: Vec<usize> = (0..7).collect();
            let parts = shard(&all, 2);
            assert_eq!(parts, vec![&all[..4], &all[4..]]);

            let whole = init_model(&cfg, 5, &device).unwrap();
            let start = whole.clone();
            let parallel = whole.clone();
            let mut opt = SgdConfig::new().init();
            let batch = Batch::from_split(&split, &all, &mask, &ad);
            let (whole, l_whole) = train_step(whole, &mut opt, 0.5, &batch);

            let mut opt = SgdConfig::new().init();
            let shards: Vec<Batch> = parts
                .iter()
                .map(|p| Batch::from_split(&split, p, &mask, &ad))
                .collect();
            let (parallel, l_par) =
                train_step_parallel(parallel, &mut opt, 0.5, &shards, &[ad.clone(), ad.clone()]);

            assert!(
                (l_whole.total - l_par.total).abs() < 1e-5,
                "{method:?}: loss {} vs {}",
                l_whole.total,
                l_par.total
            );
            let eval = Batch::from_split(&split, &all, &mask, &device);
            let out = |m: &Model| m.valid().forward(&eval).output;
            let moved: f32 = (out(&whole) - out(&start)).abs().max().into_scalar();
            let diff: f32 = (out(&whole) - out(&parallel)).abs().max().into_scalar();
            assert!(
                moved > 1e-3,
                "{method:?}: the step must change the outputs ({moved})"
            );
            assert!(
                diff < 1e-4 * moved.max(1.0),
                "{method:?}: outputs differ by {diff}"
            );
        }
    }

    #[test]
    fn shards_differ_in_size_by_at_most_one_and_drop_empty_ones() {
        let all: Vec<usize> = (0..5).collect();
        assert_eq!(shard(&all, 3), vec![&all[..2], &all[2..4], &all[4..]]);
        assert_eq!(shard(&all[..2], 4), vec![&all[..1], &all[1..2]]);
        assert_eq!(shard(&all, 0), vec![&all[..]]);
    }
}
