use burn::tensor::activation::{gelu, gelu_approximate, sigmoid, softmax};
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

fn time<F: FnMut()>(name: &str, mut f: F) {
    for _ in 0..5 {
        f();
    }
    let n = 100;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{name}: {:.1} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}

fn main() {
    let dev = Device::flex();
    let ad = dev.clone().autodiff();
    let x = Tensor::<2>::random([2816, 256], Distribution::Normal(0.0, 1.0), &dev);
    time("gelu fwd", || {
        gelu(x.clone()).into_data();
    });
    time("gelu_approx fwd", || {
        gelu_approximate(x.clone()).into_data();
    });
    time("x*sigmoid(1.702x) fwd", || {
        (x.clone() * sigmoid(x.clone().mul_scalar(1.702))).into_data();
    });
    let xa = Tensor::<2>::random([2816, 256], Distribution::Normal(0.0, 1.0), &ad).require_grad();
    let _ = ad;
    time("gelu fwd+bwd", || {
        let g = gelu(xa.clone()).sum().backward();
        xa.grad(&g).unwrap().into_data();
    });
    time("gelu_approx fwd+bwd", || {
        let g = gelu_approximate(xa.clone()).sum().backward();
        xa.grad(&g).unwrap().into_data();
    });
    time("quick fwd+bwd", || {
        let g = (xa.clone() * sigmoid(xa.clone().mul_scalar(1.702)))
            .sum()
            .backward();
        xa.grad(&g).unwrap().into_data();
    });
    let s = Tensor::<4>::random([64, 4, 44, 45], Distribution::Normal(0.0, 1.0), &dev);
    time("softmax [64,4,44,45]", || {
        softmax(s.clone(), 3).into_data();
    });
    let q = Tensor::<4>::random([64, 4, 44, 16], Distribution::Normal(0.0, 1.0), &dev);
    let k = Tensor::<4>::random([64, 4, 16, 44], Distribution::Normal(0.0, 1.0), &dev);
    time("scores [64,4,44,16]x[64,4,16,44]", || {
        q.clone().matmul(k.clone()).into_data();
    });
    let q3 = q.clone().reshape([256, 44, 16]);
    let k3 = k.clone().reshape([256, 16, 44]);
    time("scores 3d [256,44,16]x[256,16,44]", || {
        q3.clone().matmul(k3.clone()).into_data();
    });
    let t = Tensor::<3>::random([64, 44, 64], Distribution::Normal(0.0, 1.0), &dev);
    time(
        "swap_dims+reshape [64,44,4,16]->[64,4,44,16] contiguous",
        || {
            t.clone()
                .reshape([64, 44, 4, 16])
                .swap_dims(1, 2)
                .reshape([256, 44, 16])
                .into_data();
        },
    );
    let ln = burn::nn::LayerNormConfig::new(64).init(&dev);
    time("layernorm [64,44,64]", || {
        ln.forward(t.clone()).into_data();
    });
}
