//! The wgpu backend against flex: one training step from the same weights on the same batch
//! gives the same loss, before and after the AdamW update, within float tolerance.
//!
//! CI installs mesa-vulkan-drivers, so wgpu finds lavapipe (a CPU Vulkan device). Without any
//! adapter this test fails, unless MGR_SKIP_WGPU=1 says the machine has none on purpose.

use burn::tensor::{Device, Tensor};
use mgr::absence::{AbsenceConfig, AbsenceMask, SplitKind};
use mgr::batch::Batch;
use mgr::persist::{from_burnpack, to_burnpack};
use mgr::synthetic::SyntheticConfig;
use mgr::train::{TrainConfig, train_step};
use mgr::{Method, ModelConfig};

fn wgpu_available() -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = std::panic::catch_unwind(|| {
        let device = Device::wgpu(Default::default());
        Tensor::<1>::ones([2], &device).sum().into_scalar::<f32>() == 2.0
    })
    .unwrap_or(false);
    std::panic::set_hook(hook);
    ok
}

#[test]
fn one_training_step_on_wgpu_matches_flex() {
    if !wgpu_available() {
        if std::env::var("MGR_SKIP_WGPU").as_deref() == Ok("1") {
            eprintln!("no wgpu adapter; skipped because MGR_SKIP_WGPU=1");
            return;
        }
        panic!("no wgpu adapter: install mesa-vulkan-drivers (lavapipe) or set MGR_SKIP_WGPU=1");
    }
    let data = SyntheticConfig::new()
        .with_n_train(16)
        .split(SplitKind::Train);
    let names: Vec<String> = data.modalities.iter().map(|m| m.name.clone()).collect();
    let mask =
        AbsenceMask::generate(&AbsenceConfig::new(0.7), &names, 16, 0, SplitKind::Train).unwrap();
    let indices: Vec<usize> = (0..16).collect();
    let tc = TrainConfig::new().with_lr(1e-3);
    for method in [Method::Mgr, Method::Maps] {
        let cfg = ModelConfig::new(data.modalities.clone(), 10)
            .with_method(method)
            .with_d_model(16)
            .with_n_heads(2);
        let flex = Device::flex().autodiff();
        let wgpu = Device::wgpu(Default::default()).autodiff();
        let start = cfg.init(&Device::flex()).unwrap();
        let bytes = to_burnpack(&start).unwrap();
        let mut losses = Vec::new();
        for device in [&flex, &wgpu] {
            let model = from_burnpack(&cfg, bytes.clone(), device, "weights").unwrap();
            let batch = Batch::from_split(&data, &indices, &mask, device);
            let mut optimizer = tc.optimizer();
            let (model, first) = train_step(model, &mut optimizer, tc.lr, &batch);
            let (_, second) = train_step(model, &mut optimizer, tc.lr, &batch);
            losses.push((first.total, second.total));
        }
        let (f, w) = (losses[0], losses[1]);
        assert!(
            (f.0 - w.0).abs() < 1e-3 * f.0.abs().max(1.0),
            "{method}: first loss flex {} vs wgpu {}",
            f.0,
            w.0
        );
        assert!(
            (f.1 - w.1).abs() < 2e-3 * f.1.abs().max(1.0),
            "{method}: loss after one AdamW step flex {} vs wgpu {}",
            f.1,
            w.1
        );
        assert!(
            f.1 < f.0,
            "{method}: one step on the same batch lowers the loss"
        );
    }
}
