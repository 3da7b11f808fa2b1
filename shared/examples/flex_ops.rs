//! Minimal reproduction of where Burn's flex CPU backend spends a training step of MGR at
//! AV-MNIST's shapes (B 64, N 44, d 64, 4 heads, FFN 256): each op alone, timed after warm-up.
//! `scripts/torch_ops.py` times the same ops in PyTorch; run both on the same machine:
//!
//! ```sh
//! cargo run -p mgr --example flex_ops; python3 scripts/torch_ops.py
//! ```

use burn::nn::{LayerNormConfig, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

/// Median of 7 rounds of `reps` calls, in microseconds per call.
fn time(name: &str, mut f: impl FnMut()) {
    let reps = 30;
    for _ in 0..3 {
        f();
    }
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / reps as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    println!("{name:<44} {:>9.1} us", rounds[3]);
}

fn main() {
    let device = Device::flex();
    let normal = Distribution::Normal(0.0, 1.0);
    let tokens = Tensor::<2>::random([2816, 64], normal, &device); // [B*N, d]
    let hidden = Tensor::<2>::random([2816, 256], normal, &device); // [B*N, 4d]
    let w_qkv = LinearConfig::new(64, 64).init(&device);
    let w_ff = LinearConfig::new(64, 256).init(&device);
    time("linear [2816,64] x [64,64]", || {
        w_qkv.forward(tokens.clone()).into_data();
    });
    time("linear [2816,64] x [64,256]", || {
        w_ff.forward(tokens.clone()).into_data();
    });
    let q = Tensor::<3>::random([256, 44, 16], normal, &device); // [B*H, N, d_h]
    let k = Tensor::<3>::random([256, 16, 44], normal, &device); // [B*H, d_h, N]
    time("batched matmul [256,44,16] x [256,16,44]", || {
        q.clone().matmul(k.clone()).into_data();
    });
    let scores = Tensor::<4>::random([64, 4, 44, 45], normal, &device);
    time("softmax [64,4,44,45] over the last dim", || {
        softmax(scores.clone(), 3).into_data();
    });
    time("gelu (erf) [2816,256]", || {
        gelu(hidden.clone()).into_data();
    });
    let norm = LayerNormConfig::new(64).init(&device);
    let x3 = tokens.clone().reshape([64, 44, 64]);
    time("layer norm [64,44,64]", || {
        norm.forward(x3.clone()).into_data();
    });
    let ad = device.autodiff();
    let hidden_ad = Tensor::<2>::random([2816, 256], normal, &ad).require_grad();
    time("gelu forward + backward [2816,256]", || {
        let grads = gelu(hidden_ad.clone()).sum().backward();
        hidden_ad.grad(&grads).expect("grad").into_data();
    });
}
