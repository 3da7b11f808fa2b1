//! `cargo bench -p mgr`: the refinement layer alone (rank, split, redistribute; Eqs. 5-12) and
//! one full training step (forward, Eq. 13, backward, AdamW) at AV-MNIST's shapes on the flex
//! CPU backend. Criterion prints time per iteration and throughput in samples/s.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mgr::absence::AbsenceMask;
use mgr::batch::Batch;
use mgr::data::DataSplit;
use mgr::refinement::RefinementLayerConfig;
use mgr::train::{TrainConfig, init_model, train_step};
use mgr::{ModalitySpec, ModelConfig};

const B: usize = 64;

fn refinement(c: &mut Criterion) {
    let device = Device::flex();
    let layer = RefinementLayerConfig::new(2, 64, 4).init(&device);
    let tokens = Tensor::<3>::random([B, 44, 64], Distribution::Normal(0.0, 1.0), &device);
    let available = Tensor::<2>::ones([B, 2], &device);
    let mut group = c.benchmark_group("refinement_layer");
    group.throughput(Throughput::Elements(B as u64));
    group.bench_function("forward_b64_n44_d64", |b| {
        b.iter(|| {
            layer
                .forward(tokens.clone(), available.clone(), None)
                .tokens
                .into_data()
        })
    });
    group.finish();
}

fn training_step(c: &mut Criterion) {
    let device = Device::flex();
    let cfg = ModelConfig::new(
        vec![
            ModalitySpec::new("vision".into(), 16, 49),
            ModalitySpec::new("audio".into(), 28, 448),
        ],
        10,
    );
    let split = DataSplit::random_normal("bench", cfg.modalities.clone(), B, 10, 0);
    let rows = (0..B)
        .map(|i| vec![i >= B / 3, !(B / 3..2 * B / 3).contains(&i)])
        .collect();
    let mask = AbsenceMask {
        modalities: vec!["vision".into(), "audio".into()],
        rows,
    };
    let indices: Vec<usize> = (0..B).collect();
    let ad = device.clone().autodiff();
    let batch = Batch::from_split(&split, &indices, &mask, &ad);
    let tc = TrainConfig::new();
    let mut model = Some(init_model(&cfg, 0, &device).unwrap());
    let mut optimizer = tc.optimizer();
    let mut group = c.benchmark_group("training_step");
    group.throughput(Throughput::Elements(B as u64));
    group.sample_size(20);
    group.bench_function("mgr_avmnist_shapes_b64", |b| {
        b.iter(|| {
            let (next, losses) = train_step(model.take().unwrap(), &mut optimizer, tc.lr, &batch);
            model = Some(next);
            losses.total
        })
    });
    let inference = model.as_ref().unwrap().valid();
    let plain = Batch::from_split(&split, &indices, &mask, &device);
    group.bench_function("mgr_avmnist_shapes_b64_inference", |b| {
        b.iter(|| inference.forward(&plain).output.into_data())
    });
    group.finish();
}

criterion_group!(benches, refinement, training_step);
criterion_main!(benches);
