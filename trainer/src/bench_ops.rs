//! `mgr bench --ops`: where the flex backend spends a training step of MGR at AV-MNIST's shapes
//! (B 64, N 44, d 64, 4 heads, FFN 256), each op alone, timed after warm-up, with Burn's own op
//! beside the fused kernel of `mgr::kernels` where there is one. `scripts/torch_ops.py` times the
//! same ops in PyTorch; run both on the same machine.

use burn::nn::{LayerNormConfig, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor};
use mgr::kernels::{self, Execution};
use std::time::Instant;

/// Burn's own op, and the project's kernel.
const BURN: Execution = Execution::BurnOps;
const FUSED: Execution = Execution::Kernels;

/// Median of 7 rounds of `reps` calls, in microseconds per call.
fn time(mut f: impl FnMut()) -> f64 {
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
    rounds[3]
}

/// One line of the table: Burn's op and, where there is one, the fused kernel.
fn line(name: &str, burn: f64, fused: Option<f64>) {
    match fused {
        Some(f) => println!("{name:<44} {burn:>9.1} {f:>9.1} {:>7.1}x", burn / f),
        None => println!("{name:<44} {burn:>9.1} {:>9} {:>8}", "-", "-"),
    }
}

/// Runs `mgr bench --ops` and prints microseconds per call.
pub fn run() {
    let device = Device::flex();
    let normal = Distribution::Normal(0.0, 1.0);
    println!(
        "{:<44} {:>9} {:>9} {:>8}",
        "op (flex, us per call)", "Burn", "fused", "speed-up"
    );
    let tokens = Tensor::<2>::random([2816, 64], normal, &device); // [B N, d]
    let hidden = Tensor::<2>::random([2816, 256], normal, &device); // [B N, 4 d]
    let w_qkv = LinearConfig::new(64, 64).init(&device);
    let w_ff = LinearConfig::new(64, 256).init(&device);
    let linear = |layer: &burn::nn::Linear, fused| {
        time(|| drop(kernels::linear_2d(layer, tokens.clone(), fused).into_data()))
    };
    line(
        "linear [2816,64] x [64,64]",
        linear(&w_qkv, BURN),
        Some(linear(&w_qkv, FUSED)),
    );
    line(
        "linear [2816,64] x [64,256]",
        linear(&w_ff, BURN),
        Some(linear(&w_ff, FUSED)),
    );
    let q = Tensor::<3>::random([256, 44, 16], normal, &device); // [B H, N, d_h]
    let k = Tensor::<3>::random([256, 16, 44], normal, &device); // [B H, d_h, N]
    line(
        "batched matmul [256,44,16] x [256,16,44]",
        time(|| drop(q.clone().matmul(k.clone()).into_data())),
        None,
    );
    let qkv = Tensor::<3>::random([64, 44, 64], normal, &device); // [B, N, d]
    let attention = |fused| {
        time(|| {
            let a = kernels::attention_weights(qkv.clone(), qkv.clone(), 4, fused);
            drop(kernels::attention_context(a, qkv.clone(), fused).into_data())
        })
    };
    line(
        "attention [64,44,64], 4 heads (A, then A V)",
        attention(BURN),
        Some(attention(FUSED)),
    );
    let scores = Tensor::<4>::random([64, 4, 44, 45], normal, &device); // [B, H, N, N + 1]
    let softmax = |fused| time(|| drop(kernels::softmax(scores.clone(), fused).into_data()));
    line(
        "softmax [64,4,44,45] over the last dim",
        softmax(BURN),
        Some(softmax(FUSED)),
    );
    let gelu = |fused| time(|| drop(kernels::gelu(hidden.clone(), fused).into_data()));
    line("gelu (erf) [2816,256]", gelu(BURN), Some(gelu(FUSED)));
    let norm = LayerNormConfig::new(64).init(&device);
    let x3 = tokens.reshape([64, 44, 64]); // [B, N, d]
    line(
        "layer norm [64,44,64]",
        time(|| drop(norm.forward(x3.clone()).into_data())),
        Some(time(|| {
            drop(kernels::layer_norm(&norm, x3.clone(), FUSED).into_data())
        })),
    );
    run_element_wise_backward(&device);
    run_backward();
}

/// Forward and backward of GELU, layer norm and softmax at the model's shapes.
fn run_element_wise_backward(device: &Device) {
    let normal = Distribution::Normal(0.0, 1.0);
    let ad = device.clone().autodiff();
    let hidden_ad = Tensor::<2>::random([2816, 256], normal, &ad).require_grad();
    let gelu_both = |fused| {
        time(|| {
            let grads = kernels::gelu(hidden_ad.clone(), fused).sum().backward();
            drop(hidden_ad.grad(&grads).expect("grad").into_data());
        })
    };
    line(
        "gelu forward + backward [2816,256]",
        gelu_both(BURN),
        Some(gelu_both(FUSED)),
    );
    let norm_ad = LayerNormConfig::new(64).init(&ad);
    let tokens_ad = Tensor::<3>::random([64, 44, 64], normal, &ad).require_grad();
    let weights_ad = Tensor::<3>::random([64, 44, 64], normal, &ad);
    let norm_both = |fused| {
        time(|| {
            let y = kernels::layer_norm(&norm_ad, tokens_ad.clone(), fused) * weights_ad.clone();
            let grads = y.sum().backward();
            drop(tokens_ad.grad(&grads).expect("grad").into_data());
            drop(norm_ad.gamma.val().grad(&grads).expect("grad").into_data());
        })
    };
    line(
        "layer norm forward + backward [64,44,64]",
        norm_both(BURN),
        Some(norm_both(FUSED)),
    );
    let scores_ad = Tensor::<4>::random([64, 4, 44, 45], normal, &ad).require_grad();
    let weights = Tensor::<4>::random([64, 4, 44, 45], normal, &ad);
    let softmax_both = |fused| {
        time(|| {
            let y = kernels::softmax(scores_ad.clone(), fused) * weights.clone();
            let grads = y.sum().backward();
            drop(scores_ad.grad(&grads).expect("grad").into_data());
        })
    };
    line(
        "softmax forward + backward [64,4,44,45]",
        softmax_both(BURN),
        Some(softmax_both(FUSED)),
    );
}

/// Forward and backward of one linear layer and of attention, at the model's shapes (the
/// second part of `mgr bench --ops`).
pub fn run_backward() {
    let ad = Device::flex().autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let tokens = Tensor::<2>::random([2816, 64], normal, &ad).require_grad(); // [B N, d]
    let w_ff = LinearConfig::new(64, 256).init(&ad);
    let linear_both = |fused| {
        time(|| {
            let grads = kernels::linear_2d(&w_ff, tokens.clone(), fused)
                .sum()
                .backward();
            drop(tokens.grad(&grads).expect("grad").into_data());
        })
    };
    line(
        "linear forward + backward [2816,64] x [64,256]",
        linear_both(BURN),
        Some(linear_both(FUSED)),
    );
    let qkv = Tensor::<3>::random([64, 44, 64], normal, &ad).require_grad(); // [B, N, d]
    let attention_both = |fused| {
        time(|| {
            let a = kernels::attention_weights(qkv.clone(), qkv.clone(), 4, fused);
            let grads = kernels::attention_context(a, qkv.clone(), fused)
                .sum()
                .backward();
            drop(qkv.grad(&grads).expect("grad").into_data());
        })
    };
    line(
        "attention forward + backward [64,44,64]",
        attention_both(BURN),
        Some(attention_both(FUSED)),
    );
}
