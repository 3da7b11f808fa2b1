//! AdamW (Loshchilov & Hutter 2019) as Burn's `AdamW` computes it, in one pass per parameter on
//! flex (issue 12).
//!
//! Burn's AdamW updates each parameter tensor through about fifteen element-wise ops (the two
//! moments, their bias corrections, the square root, the division, the decay), each a pass
//! over the tensor into a fresh allocation: 2.5-6 ms of a 70 ms training step at batch 64 on
//! two cores, serially. Here the same arithmetic, in the same order and in f32, is one loop over
//! the parameter, its gradient and its two moments. The state is Burn's `AdamWState`, so
//! checkpoints written with either load into the other. Other backends (wgpu) and other dtypes
//! take Burn's own step.
//!
//! Dimension key: none (element-wise; any shape).

use burn::optim::{
    AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer,
};
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::on_flex;

/// AdamW with Burn's defaults for everything but the weight decay (beta_1 0.9, beta_2 0.999,
/// epsilon 1e-5, no AMSGrad, no cautious decay, no clipping): the optimiser of
/// `mgr::train::TrainConfig::optimizer`.
#[derive(Clone)]
pub struct FusedAdamW {
    /// Burn's AdamW with the same settings: the step on other backends and dtypes.
    burn: AdamW,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
}

impl FusedAdamW {
    /// AdamW with decoupled weight decay `weight_decay`, as a whole-module optimiser.
    pub fn module_optimizer(weight_decay: f32) -> ModuleOptimizer {
        ModuleOptimizer::from(Self::new(weight_decay))
    }

    fn new(weight_decay: f32) -> Self {
        Self {
            // Burn's defaults (its config keeps them private; the tests compare the two steps).
            burn: AdamWConfig::new().with_weight_decay(weight_decay).build(),
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-5,
            weight_decay,
        }
    }
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    /// One AdamW step of one parameter: with g the gradient and t the step count,
    /// m = beta_1 m + (1 - beta_1) g, v = beta_2 v + (1 - beta_2) g^2,
    /// theta = theta (1 - lr lambda) - lr (m / (1 - beta_1^t)) / (sqrt(v / (1 - beta_2^t)) + eps),
    /// m and v starting from zero.
    ///
    /// # Shapes
    /// - tensor, grad, the state's moments: any, the same
    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let fused = on_flex(&tensor.device())
            && [tensor.dtype(), grad.dtype()] == [DType::F32, DType::F32]
            && state.as_ref().is_none_or(|s| {
                s.momentum.max_moment_2.is_none()
                    && [s.momentum.moment_1.dtype(), s.momentum.moment_2.dtype()]
                        == [DType::F32, DType::F32]
            });
        if !fused {
            return self.burn.step(lr, tensor, grad, state);
        }
        let device = tensor.device();
        let shape = tensor.shape();
        let values = |t: Tensor<D>| {
            t.into_data()
                .try_into_vec::<f32>()
                .expect("f32 (checked above)")
        };
        let mut theta = values(tensor);
        let grad = values(grad);
        let (time, mut m, mut v) = match state {
            Some(s) => (
                s.momentum.time + 1,
                values(s.momentum.moment_1),
                values(s.momentum.moment_2),
            ),
            None => (1, vec![0.0; grad.len()], vec![0.0; grad.len()]),
        };
        let (beta_1, beta_2) = (self.beta_1, self.beta_2);
        let correction_1 = 1.0 - beta_1.powi(time as i32);
        let correction_2 = 1.0 - beta_2.powi(time as i32);
        let decay = (1.0 - lr * self.weight_decay as f64) as f32;
        let lr = lr as f32;
        for (((p, g), m), v) in theta.iter_mut().zip(&grad).zip(&mut m).zip(&mut v) {
            // Burn's order: beta m + (1 - beta) g, and its first step (1 - beta) g alone.
            *m = if time == 1 {
                g * (1.0 - beta_1)
            } else {
                *m * beta_1 + g * (1.0 - beta_1)
            };
            *v = if time == 1 {
                g * g * (1.0 - beta_2)
            } else {
                *v * beta_2 + g * g * (1.0 - beta_2)
            };
            let delta = (*m / correction_1) / ((*v / correction_2).sqrt() + self.epsilon);
            *p = *p * decay - delta * lr;
        }
        let tensor =
            |values: Vec<f32>| Tensor::from_data(TensorData::new(values, shape.clone()), &device);
        let momentum = AdaptiveMomentumState {
            time,
            moment_1: tensor(m),
            moment_2: tensor(v),
            max_moment_2: None,
        };
        (tensor(theta), Some(AdamWState { momentum }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdamW::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;

    /// Three steps of a linear layer under the loss sum(y * w) with a different w each step:
    /// the parameters after each step.
    fn steps(optimizer: &mut ModuleOptimizer, layer: Linear) -> Vec<Vec<f32>> {
        let device = Device::flex().autodiff();
        let x = Tensor::<2>::from_data(
            TensorData::new(
                // The first input feature is 0, so the first row of dW is zero at every step
                // (m = v = 0: the update must be 0 / (0 + eps), not NaN).
                (0..20)
                    .map(|i| {
                        if i % 4 == 0 {
                            0.0
                        } else {
                            ((i * 3) % 7) as f32 - 3.0
                        }
                    })
                    .collect(),
                [5, 4],
            ),
            &device,
        );
        let mut layer = layer;
        let mut after = Vec::new();
        for step in 0..3 {
            let w = Tensor::<2>::from_data(
                TensorData::new(
                    (0..15)
                        .map(|i| ((i * 7 + step * 5) % 11) as f32 / 5.0 - 1.0)
                        .collect(),
                    [5, 3],
                ),
                &device,
            );
            let grads = (layer.forward(x.clone()) * w).sum().backward();
            let grads = GradientsParams::from_grads(grads, &layer);
            layer = optimizer.step(1e-2, layer, grads);
            let mut params = layer
                .weight
                .val()
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32");
            params.extend(
                layer
                    .bias
                    .as_ref()
                    .expect("bias")
                    .val()
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("f32"),
            );
            after.push(params);
        }
        after
    }

    #[test]
    fn fused_adamw_takes_burns_steps() {
        let device = Device::flex().autodiff();
        let layer = LinearConfig::new(4, 3).init(&device);
        let ours = steps(&mut FusedAdamW::module_optimizer(0.05), layer.clone());
        let burns = steps(
            &mut AdamWConfig::new().with_weight_decay(0.05).init(),
            layer.clone(),
        );
        let start: Vec<f32> = layer
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32");
        for (step, (a, b)) in ours.iter().zip(&burns).enumerate() {
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-6 * (1.0 + q.abs()),
                    "step {step}, parameter {i}: {p} vs Burn's {q}"
                );
            }
        }
        // The steps moved the weights (about lr each), so equality above is not vacuous.
        let moved = ours[2]
            .iter()
            .zip(&start)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(moved > 1e-2, "the weights moved by {moved}");
    }

    #[test]
    fn checkpoints_of_either_optimiser_load_into_the_other() {
        let device = Device::flex().autodiff();
        let layer = LinearConfig::new(4, 3).init(&device);
        let mut ours = FusedAdamW::module_optimizer(0.05);
        steps(&mut ours, layer.clone());
        let record = ours.into_bytes().expect("record");
        let mut burns = AdamWConfig::new()
            .with_weight_decay(0.05)
            .init()
            .from_bytes(record)
            .expect("Burn's AdamW loads ours");
        let mut ours_again = FusedAdamW::module_optimizer(0.05)
            .from_bytes(burns.into_bytes().expect("record"))
            .expect("ours loads Burn's");
        // Both continue from step 3 alike.
        let [a, b] = [&mut ours_again, &mut burns].map(|o| steps(o, layer.clone()));
        for (p, q) in a.iter().flatten().zip(b.iter().flatten()) {
            assert!((p - q).abs() <= 1e-6 * (1.0 + q.abs()), "{p} vs {q}");
        }
    }
}
