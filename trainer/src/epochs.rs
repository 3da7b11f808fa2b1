//! The epoch loop. Each step is [`mgr::train::train_step_sharded`]: the batch in shards over
//! several devices (data-parallel), over a CPU's cores, or whole on one GPU.

use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use mgr::absence::AbsenceMask;
use mgr::batch::{Batch, shard};
use mgr::data::DataSplit;
use mgr::train::{StepLosses, TrainConfig, shards_on, train_step_sharded};
use mgr::{MgrError, Model};

/// One pass over `split` in the order of `epoch`; returns the model and the mean losses.
///
/// Written out rather than burn-train's `Learner`: the batch order is a pure function of (seed,
/// epoch) ([`TrainConfig::epoch_order`]), so a resumed run repeats the uninterrupted one
/// exactly; a step needs the per-sample absence mask on the host (Eq. 4 selects the rows that
/// have each modality) and reports L_div beside the task loss; and `mgr protocol` trains several
/// runs at once in one process.
/// With several `devices` (autodiff devices), every batch is sharded over them, one shard per
/// device; with one, over the cores of a CPU device ([`TrainConfig::cpu_shards`]) or not at all
/// on a GPU. Either way the step's gradient is the whole batch's ([`train_step_sharded`]); the
/// model lives on the first device.
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
        let shards: Vec<Batch> = if devices.len() == 1 {
            let parts = shards_on(&devices[0], config.cpu_shards);
            Batch::shards_from_split(split, indices, mask, &devices[0], parts)
        } else {
            shard(indices, devices.len())
                .into_iter()
                .zip(devices)
                .map(|(part, device)| Batch::from_split(split, part, mask, device))
                .collect()
        };
        // Each epoch a new draw of the random ranking's scores (the others ignore it).
        let round = epoch as u64 + 1;
        let shards: Vec<Batch> = shards
            .into_iter()
            .map(|b| b.with_draw_round(round))
            .collect();
        let (next, losses) = train_step_sharded(model, optimizer, lr, &shards);
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
