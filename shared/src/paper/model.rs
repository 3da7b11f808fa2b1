//! The complete model: every method of the comparison, selected by [`ModelConfig::method`].
//!
//! Dimension key: see the crate root (`B`, `M`, `N`, `N_i`, `K`, `d`, `L`, `C`).
//!
//! ```text
//! X^i --Eq.1--> x^i --cat--> x --Eq.2--> h --Eq.3--> h_e --(Eqs.5-12) x L_T--> z --f_task--> Y'
//!                 \--content--> unimodal encoders --> h_u --Eq.4--> L_div           (Eq. 13)
//! ```

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor, TensorData};

use crate::batch::{Batch, BatchTargets, PresentRows, RowLayout};
use crate::config::{EncoderPrompts, Method, ModelConfig, Task};
use crate::encoder::{Encoder, EncoderConfig};
use crate::error::MgrError;
use crate::head::{TaskHead, TaskHeadConfig};
use crate::kernels::{Execution, HeadLayout};
use crate::loss;
use crate::readings::SplitRanking;
use crate::refinement::{RefinementLayer, RefinementLayerConfig, RefinementOutput};
use crate::seeds;
use crate::tokenizer::{ModalityTokenizer, ModalityTokenizerConfig};
use crate::unimodal::{UnimodalEnhancement, UnimodalEnhancementConfig};

/// Baseline, MAPs, MSPs, MGR and its ablations in one module; absent parts are `None`.
#[derive(Module, Debug)]
pub struct Model {
    /// f_theta^i with E_avail^i / E_miss^i, one per modality (Eq. 1).
    pub tokenizers: Vec<ModalityTokenizer>,
    /// The multimodal transformer (Eq. 2).
    pub encoder: Encoder,
    /// Unimodal transformers and alpha_u (Eq. 3); MGR and its ablations except `mgr-no-hu`.
    pub unimodal: Option<UnimodalEnhancement>,
    /// L_T refinement layers (Eqs. 5-12); MGR and its ablations.
    pub refinement: Vec<RefinementLayer>,
    /// MAPs: one prompt per absence pattern and prompted layer, `[depth, 2^M - 1, L d]`
    /// ([`EncoderPrompts::PerPattern`]). Two fields rather than one because their names are the
    /// keys of saved checkpoints; [`Model::encoder_prompts`] is the one view of them.
    pub pattern_prompts: Option<Param<Tensor<3>>>,
    /// MSPs: one prompt per modality and prompted layer, `[depth, M, L d]`
    /// ([`EncoderPrompts::PerModality`]).
    pub modality_prompts: Option<Param<Tensor<3>>>,
    /// f_task.
    pub head: TaskHead,
    /// The configuration this model was built from.
    #[module(skip)]
    pub config: ModelConfig,
    /// How its operations run ([`Model::set_execution`]): the project's kernels unless set.
    #[module(skip)]
    pub execution: Execution,
    /// Which layout a modality's rows are computed in ([`Model::with_row_layout`]): the device's
    /// own unless set.
    #[module(skip)]
    pub row_layout: RowLayout,
    /// The training seed the random ranking draws its scores from
    /// ([`crate::readings::SplitRanking::Random`], [`crate::seeds::ranking_stream`]); set by
    /// [`crate::train::init_model`] and by whoever loads a run's model.
    #[module(skip)]
    pub ranking_seed: u64,
}

impl ModelConfig {
    /// Builds the model on `device` after [`ModelConfig::validate`].
    pub fn init(&self, device: &Device) -> Result<Model, MgrError> {
        self.validate()?;
        let d = self.d_model;
        let m = self.modalities.len();
        let encoder = EncoderConfig::new(d, self.n_heads, self.n_layers).with_ff_mult(self.ff_mult);
        let prompts = |rows: usize| {
            Initializer::Normal {
                mean: 0.0,
                std: self.init_std,
            }
            .init([self.prompt_depth, rows, self.prompt_len * d], device)
        };
        Ok(Model {
            tokenizers: self
                .modalities
                .iter()
                .map(|s| {
                    ModalityTokenizerConfig::new(s.n_tokens, s.token_dim, d)
                        .with_init_std(self.init_std)
                        .init(device)
                })
                .collect(),
            encoder: encoder.init(device),
            unimodal: self.init_unimodal(device),
            refinement: self.init_refinement(device),
            pattern_prompts: (self.encoder_prompts() == EncoderPrompts::PerPattern)
                .then(|| prompts(self.n_patterns())),
            modality_prompts: (self.encoder_prompts() == EncoderPrompts::PerModality)
                .then(|| prompts(m)),
            head: TaskHeadConfig::new(d, self.n_outputs)
                .with_hidden(self.head_hidden())
                .init(device),
            config: self.clone(),
            execution: Execution::default(),
            row_layout: RowLayout::default(),
            ranking_seed: 0,
        })
    }

    /// The unimodal encoders of Eq. 3, where the method has them.
    fn init_unimodal(&self, device: &Device) -> Option<UnimodalEnhancement> {
        self.uses_unimodal().then(|| {
            UnimodalEnhancementConfig::new(
                self.modalities.len(),
                EncoderConfig::new(self.d_model, self.n_heads, self.unimodal_layers)
                    .with_ff_mult(self.ff_mult),
            )
            .with_alpha_u(self.alpha_u)
            .init(device)
        })
    }

    /// The L_T refinement layers (Eqs. 5-12), none for the methods without them.
    fn init_refinement(&self, device: &Device) -> Vec<RefinementLayer> {
        let layer = RefinementLayerConfig::new(self.modalities.len(), self.d_model, self.n_heads)
            .with_readings(self.refinement)
            .with_mixed_context(self.mixed_context())
            .with_prompt_len(self.prompt_len)
            .with_init_std(self.init_std);
        (0..self.refine_layers_effective())
            .map(|_| layer.init(device))
            .collect()
    }

    /// Width H of the hidden layer of the task head: 0 (a linear head) for every method but
    /// `baseline-wide`, whose H makes its head train as many parameters as MGR adds to a frozen
    /// backbone with the same sizes: MGR's unimodal encoders U, refinement layers R and output
    /// layer (d C + C) against the wide head's d H + H + H C + C, so
    /// H = round((U + R + d C) / (d + 1 + C)) (both share the head's LayerNorm and Eq. 1's
    /// embeddings). Counted from MGR's modules as [`ModelConfig::init`] builds them (lazily:
    /// nothing is drawn or allocated).
    pub fn head_hidden(&self) -> usize {
        if self.method != Method::BaselineWide {
            return 0;
        }
        let mgr = self.clone().with_method(Method::Mgr);
        let device = Device::flex();
        let unimodal = mgr.init_unimodal(&device).map_or(0, |u| u.num_params());
        let refinement: usize = mgr
            .init_refinement(&device)
            .iter()
            .map(Module::num_params)
            .sum();
        let (d, c) = (self.d_model, self.n_outputs);
        let h = (unimodal + refinement + d * c) as f64 / (d + 1 + c) as f64;
        (h.round() as usize).max(1)
    }
}

/// A model's encoder prompts, as [`EncoderPrompts`] with the parameters.
#[derive(Clone, Copy, Debug)]
pub enum Prompts<'a> {
    /// No prompts.
    None,
    /// MAPs' per-pattern table, `[depth, 2^M - 1, L d]`.
    PerPattern(&'a Param<Tensor<3>>),
    /// MSPs' per-modality table, `[depth, M, L d]`.
    PerModality(&'a Param<Tensor<3>>),
}

/// What one forward pass computed.
#[derive(Clone, Debug)]
pub struct ModelOutput {
    /// Logits (classification) or predictions (regression). [B, C]
    pub output: Tensor<2>,
    /// L_div of Eq. 4 summed over modalities (0 where the method has no unimodal branch). [1]
    pub l_div: Tensor<1>,
    /// MSPs' prompt orthogonality loss (0 for other methods). [1]
    pub l_orth: Tensor<1>,
    /// Each refinement layer's scores, split and redistribution weights (empty for non-MGR).
    pub layers: Vec<RefinementOutput>,
    /// What L_div is computed from, per modality that some sample of the batch has (empty for
    /// methods without the unimodal branch).
    pub diversity: Vec<DiversityInputs>,
}

/// Eq. 4's inputs for one modality i: the mean-pooled unimodal features h_u^i and shared
/// features h^i of the batch's samples that have modality i, in batch order. L_div is a
/// statistic over these rows (a distance correlation), so it couples the samples of a batch:
/// [`Model::diversity_loss`] computes it from one batch's rows, and a batch computed in shards
/// gets it from every shard's rows at once ([`crate::train::sharded_gradients`]).
///
/// The pooling is done when asked for ([`DiversityInputs::pooled`]): inference, which has no
/// L_div, never records it (on a GPU, 6 kernels fewer per AV-MNIST batch).
#[derive(Clone, Debug)]
pub struct DiversityInputs {
    /// The modality i.
    pub modality: usize,
    /// h_u^i, in the rows the unimodal branch computed ([`PresentRows::computed`]).
    /// [computed_rows, N_i, d]
    pub h_u: Tensor<3>,
    /// h^i, every sample's (detached when `div_detach_shared`). [B, N_i, d]
    pub h: Tensor<3>,
    /// Which samples hold modality i, and the layout of `h_u`'s rows.
    pub present: PresentRows,
}

/// Eq. 4's two pooled inputs for one modality: a row per sample that holds it, in batch order.
#[derive(Clone, Debug)]
pub struct PooledPair {
    /// Mean-pooled h_u^i. [n_i, d]
    pub u: Tensor<2>,
    /// Mean-pooled h^i. [n_i, d]
    pub h: Tensor<2>,
}

impl DiversityInputs {
    /// Whether these rows add a term to L_div: a distance correlation needs at least 2.
    pub fn has_term(&self) -> bool {
        Self::rows_give_a_term(self.present.len())
    }

    /// The mean-pooled h_u^i and h^i of the samples that hold modality i.
    ///
    /// # Shapes
    /// - output: each `[n_i, d]`
    pub fn pooled(&self) -> PooledPair {
        let n = self.present.len();
        let d = self.h.dims()[2];
        let u = self.present.take_computed(self.h_u.clone().mean_dim(1)); // [n_i, 1, d]
        // Masked: pool every row, then take the few pooled ones (a smaller selection).
        let h = if self.present.is_masked() {
            self.present.take(self.h.clone().mean_dim(1)) // [n_i, 1, d]
        } else {
            self.present.take(self.h.clone()).mean_dim(1) // [n_i, 1, d]
        };
        PooledPair {
            u: u.reshape([n, d]),
            h: h.reshape([n, d]),
        }
    }

    /// Whether `rows` rows of a modality add a term to L_div (at least 2).
    pub fn rows_give_a_term(rows: usize) -> bool {
        rows >= 2
    }
}

/// The parts of Eq. 13's total loss.
#[derive(Clone, Debug)]
pub struct LossParts {
    /// L = L_task + lambda_div L_div (+ lambda_orth L_orth for MSPs). [1]
    pub total: Tensor<1>,
    /// L_task. [1]
    pub task: Tensor<1>,
    /// L_div (unweighted). [1]
    pub div: Tensor<1>,
}

impl ModelOutput {
    /// L_task: cross-entropy (classification) or L1 (regression), a mean over the samples.
    ///
    /// # Shapes
    /// - output: `[1]`
    pub fn task_loss(&self, targets: &BatchTargets) -> Tensor<1> {
        match targets {
            BatchTargets::Classes(t) => loss::cross_entropy(self.output.clone(), t.clone()),
            BatchTargets::Values(v) => loss::l1(self.output.clone(), v.clone()),
        }
    }

    /// Eq. 13: L = L_task + lambda_div L_div, with cross-entropy (classification) or L1
    /// (regression) as L_task; MSPs add lambda_orth times their orthogonality loss.
    pub fn total_loss(&self, targets: &BatchTargets, config: &ModelConfig) -> LossParts {
        let task = self.task_loss(targets);
        let total =
            config
                .loss_weights()
                .total(task.clone(), self.l_div.clone(), self.l_orth.clone());
        LossParts {
            total,
            task,
            div: self.l_div.clone(),
        }
    }
}

impl Model {
    /// Runs every operation as `execution` says from now on: the project's kernels or Burn's
    /// own ops (the same values to float rounding). The one place the choice is made; each
    /// component keeps a copy, so its forward needs no extra argument.
    pub fn set_execution(&mut self, execution: Execution) {
        self.execution = execution;
        self.encoder.execution = execution;
        self.head.execution = execution;
        for tokenizer in &mut self.tokenizers {
            tokenizer.execution = execution;
        }
        if let Some(unimodal) = &mut self.unimodal {
            for encoder in &mut unimodal.encoders {
                encoder.execution = execution;
            }
        }
        for layer in &mut self.refinement {
            layer.execution = execution;
            layer.prompt.execution = execution;
            layer.attention.execution = execution;
            layer.ranking.execution = execution;
            layer.redistribution.execution = execution;
        }
    }

    /// This model, computing each modality's rows in `layout` ([`RowLayout`]; the same values to
    /// float rounding): to compare the two layouts' speed on one device.
    pub fn with_row_layout(mut self, layout: RowLayout) -> Self {
        self.row_layout = layout;
        self
    }

    /// This model, its attentions laying out Q, K and V in `layout` ([`HeadLayout`]; the same
    /// values to float rounding): to compare the layouts' speed on one device.
    pub fn with_head_layout(mut self, layout: HeadLayout) -> Self {
        self.encoder.head_layout = layout;
        if let Some(unimodal) = &mut self.unimodal {
            for encoder in &mut unimodal.encoders {
                encoder.head_layout = layout;
            }
        }
        for layer in &mut self.refinement {
            layer.attention.head_layout = layout;
        }
        self
    }

    /// This model with `execution` ([`Model::set_execution`]).
    pub fn with_execution(mut self, execution: Execution) -> Self {
        self.set_execution(execution);
        self
    }

    /// Runs the refinement layers with `rho` (Eq. 10) from now on, and says so in
    /// [`Model::config`]: what the page's rho slider changes.
    pub fn set_rho(&mut self, rho: f64) {
        self.config.refinement.rho = rho;
        self.refinement
            .iter_mut()
            .for_each(|layer| layer.readings.rho = rho);
    }

    /// Keeps the first `layers` refinement layers (at most L_T; at least one where the method
    /// refines), in the modules and in [`Model::config`]: the page's L_T control.
    pub fn keep_refinement_layers(&mut self, layers: usize) {
        if self.refinement.is_empty() {
            return;
        }
        let kept = layers.clamp(1, self.refinement.len());
        self.refinement.truncate(kept);
        self.config.refine_layers = kept;
    }

    /// The forward pass of the configured method.
    ///
    /// # Shapes
    /// - batch.inputs: each `[B, N_i, D_i]`; batch.available: `[B, M]`
    /// - output: `[B, C]`; per refinement layer, scores `[B, N]` and weights `[B, N, N]`
    pub fn forward(&self, batch: &Batch) -> ModelOutput {
        let mut out = self.forward_shard(batch);
        out.l_div = self.diversity_loss(&out.diversity);
        out
    }

    /// [`Model::forward`] without L_div (its `l_div` is 0, its `diversity` holds the rows L_div
    /// needs): for one shard of a batch whose L_div is computed over every shard's rows
    /// ([`crate::train::sharded_gradients`]). Everything else of the output is per sample.
    ///
    /// # Shapes
    /// - as [`Model::forward`]
    pub fn forward_shard(&self, batch: &Batch) -> ModelOutput {
        let cfg = &self.config;
        let device = batch.available.device();
        let m = batch.available.dims()[1];
        let d = cfg.d_model;
        let zero = || zero_loss(&device);
        // By default GPU backends compute a modality's rows for every sample and mask the
        // absent ones (fewer kernels); flex computes the present samples' rows alone (less
        // arithmetic).
        let every_row = self.row_layout.resolved(&device) == RowLayout::Masked;
        let present: Vec<PresentRows> = (0..m)
            .map(|i| match every_row {
                true => batch.present_rows(i).masked(&device),
                false => batch.present_rows(i),
            })
            .collect();
        let mut tokens = Vec::with_capacity(m);
        let mut contents = Vec::with_capacity(m);
        for (i, tokenizer) in self.tokenizers.iter().enumerate() {
            let t = tokenizer.forward(batch.inputs[i].clone(), &present[i]); // [B, N_i, d]  Eq. 1
            tokens.push(t.tokens);
            contents.push(t.content); // [P_i or B, N_i, d]: PresentRows::computed
        }
        let x = Tensor::cat(tokens, 1); // [B, N, d]

        let (h, l_orth) = self.encode(x, batch); // [B, N, d]  Eq. 2

        let mut diversity = Vec::new();
        let current = match &self.unimodal {
            Some(unimodal) => {
                let mut enhanced = Vec::with_capacity(m);
                let mut offset = 0;
                for (i, content) in contents.into_iter().enumerate() {
                    let n_i = cfg.modalities[i].n_tokens;
                    let h_i = h.clone().narrow(1, offset, n_i); // [B, N_i, d]
                    offset += n_i;
                    let h_u = content.map(|c| unimodal.unimodal_features(i, c)); // [P_i or B, N_i, d]
                    if let Some(h_u) = &h_u {
                        diversity.push(self.diversity_inputs(
                            i,
                            h_u.clone(),
                            h_i.clone(),
                            &present[i],
                        ));
                    }
                    enhanced.push(unimodal.enhance(h_i, h_u, &present[i])); // [B, N_i, d]  Eq. 3
                }
                Tensor::cat(enhanced, 1) // [B, N, d]
            }
            None => h,
        };

        let (current, layers) = self.refine(current, batch); // [B, K, d]  Eqs. 5-12
        assert_eq!(current.dims()[2], d);
        let output = self.head.forward(current); // [B, C]
        ModelOutput {
            output,
            l_div: zero(),
            l_orth,
            layers,
            diversity,
        }
    }

    /// The multimodal encoder (Eq. 2) on the tokens `x`, with the method's prompts: one set per
    /// absence pattern (MAPs), one per modality with their orthogonality loss (MSPs), or none.
    ///
    /// # Shapes
    /// - x: `[B, N, d]`
    /// - returns h `[B, N, d]` and L_orth `[1]` (0 without per-modality prompts)
    fn encode(&self, x: Tensor<3>, batch: &Batch) -> (Tensor<3>, Tensor<1>) {
        let device = batch.available.device();
        let [b, m] = batch.available.dims();
        match self.encoder_prompts() {
            Prompts::PerPattern(prompts) => {
                let one_hot =
                    pattern_one_hot(&batch.available_host, self.config.n_patterns(), &device); // [B, 2^M - 1]
                let layer_prompts = self.layer_prompts(prompts.val(), one_hot, b); // each [B, L, d]
                let h = self.encoder.forward_with_prompts(x, &layer_prompts); // [B, N, d]
                (h, zero_loss(&device))
            }
            Prompts::PerModality(prompts) => {
                let prompts = prompts.val(); // [depth, M, L d]
                let [depth, _, ld] = prompts.dims();
                let l_orth = (0..depth)
                    .map(|l| loss::orthogonality(prompts.clone().narrow(0, l, 1).reshape([m, ld])))
                    .fold(zero_loss(&device), |acc, v| acc + v)
                    .div_scalar(depth as f64);
                let layer_prompts = self.layer_prompts(prompts, batch.available.clone(), b); // each [B, L, d]
                let h = self.encoder.forward_with_prompts(x, &layer_prompts); // [B, N, d]
                (h, l_orth)
            }
            Prompts::None => (self.encoder.forward(x), zero_loss(&device)), // [B, N, d]
        }
    }

    /// The L_T refinement layers (Eqs. 5-12) on h_e, each splitting by its
    /// [`SplitRanking`]: a reference ranking's keys are made here, the random scores from
    /// [`crate::seeds::ranking_stream`] and an oracle's marks from the batch's ground truth,
    /// carried through each layer's selection to the next layer's token order.
    ///
    /// # Panics
    /// Where an oracle ranking meets a batch without ground truth (the trainer refuses such a
    /// run before it builds one, naming the dataset).
    ///
    /// # Shapes
    /// - h_e: `[B, N, d]`
    /// - output: the last layer's tokens `[B, K, d]` and each layer's output
    fn refine(&self, h_e: Tensor<3>, batch: &Batch) -> (Tensor<3>, Vec<RefinementOutput>) {
        let mut current = h_e;
        let mut marks = self.oracle_marks(batch); // [B, N]
        let mut layers = Vec::with_capacity(self.refinement.len());
        for (l, layer) in self.refinement.iter().enumerate() {
            let keys = match layer.readings.ranking {
                SplitRanking::Random => Some(self.random_keys(batch, l, current.dims()[1])), // [B, N]
                oracle if oracle.needs_truth() => marks.clone(),
                _ => None,
            };
            let out = layer.forward(current, batch.available.clone(), keys); // [B, K, d]
            marks = marks.map(|m| {
                let [b, n] = m.dims();
                let k = out.select.dims()[1];
                out.select
                    .clone()
                    .matmul(m.reshape([b, n, 1]))
                    .reshape([b, k]) // [B, K]
            });
            current = out.tokens.clone();
            layers.push(out);
        }
        (current, layers)
    }

    /// An oracle ranking's marks for the first refinement layer: 1.0 for the tokens the
    /// batch's ground truth keeps first ([`crate::truth::SampleTruth::oracle_marks`]), None when
    /// no layer splits by an oracle.
    ///
    /// # Shapes
    /// - output: `[B, N]`
    fn oracle_marks(&self, batch: &Batch) -> Option<Tensor<2>> {
        let ranking = self
            .refinement
            .iter()
            .map(|l| l.readings.ranking)
            .find(|r| r.needs_truth())?;
        let truth = batch.truth.as_ref().unwrap_or_else(|| {
            panic!(
                "the `{}` ranking needs the data's per-token ground truth, and this batch has none",
                ranking.name()
            )
        });
        let rows: Vec<f32> = truth
            .iter()
            .zip(&batch.available_host)
            .flat_map(|(t, available)| t.oracle_marks(available, ranking).expect("an oracle"))
            .collect();
        let n = rows.len() / batch.len().max(1);
        let device = batch.available.device();
        Some(Tensor::from_data(
            TensorData::new(rows, [batch.len(), n]),
            &device,
        ))
    }

    /// The random ranking's scores for refinement layer `layer` over `n` tokens: uniform in
    /// [0, 1), a pure function of (ranking seed, pass, sample, layer).
    ///
    /// # Shapes
    /// - output: `[B, N]`
    fn random_keys(&self, batch: &Batch, layer: usize, n: usize) -> Tensor<2> {
        use rand::Rng;
        let keys: Vec<f32> = batch
            .sample_ids
            .iter()
            .flat_map(|&i| {
                let stream = seeds::ranking_stream(self.ranking_seed, batch.draw_round, i, layer);
                let mut rng = seeds::rng(stream);
                (0..n).map(move |_| rng.random::<f32>())
            })
            .collect();
        let device = batch.available.device();
        Tensor::from_data(TensorData::new(keys, [batch.len(), n]), &device)
    }

    /// Splits every refinement layer by `ranking` from now on (without retraining: the
    /// parameters stay), and says so in [`Model::config`]: what `mgr eval --ranking` and the
    /// page's ranking control change.
    pub fn set_ranking(&mut self, ranking: SplitRanking) {
        self.config.refinement.ranking = ranking;
        self.refinement
            .iter_mut()
            .for_each(|layer| layer.readings.ranking = ranking);
    }

    /// This model, drawing the random ranking's scores from `seed` (the run's training seed).
    pub fn with_ranking_seed(mut self, seed: u64) -> Self {
        self.ranking_seed = seed;
        self
    }

    /// Eq. 4: L_div = sum over modalities i of the squared distance correlation between the
    /// mean-pooled h_u^i and h^i over the samples that have modality i; a modality fewer than
    /// 2 samples have adds no term.
    ///
    /// # Shapes
    /// - each input: `[n_i, d]`
    /// - output: `[1]`
    pub fn diversity_loss(&self, inputs: &[DiversityInputs]) -> Tensor<1> {
        let device = self.head.linear.weight.device();
        inputs
            .iter()
            .filter(|pair| pair.has_term())
            .fold(zero_loss(&device), |l_div, pair| {
                let pooled = pair.pooled();
                l_div
                    + loss::squared_distance_correlation_eps(
                        pooled.u,
                        pooled.h,
                        self.config.dcor_eps,
                    )
            })
    }

    /// One modality's inputs of Eq. 4: h_u^i (in the rows the unimodal branch computed) and
    /// h^i, pooled over the samples that have modality i when L_div asks
    /// ([`DiversityInputs::pooled`]).
    ///
    /// # Shapes
    /// - h_u: `[computed_rows, N_i, d]`; h: `[B, N_i, d]`
    fn diversity_inputs(
        &self,
        i: usize,
        h_u: Tensor<3>,
        h: Tensor<3>,
        present: &PresentRows,
    ) -> DiversityInputs {
        let h = if self.config.div_detach_shared {
            h.detach()
        } else {
            h
        };
        DiversityInputs {
            modality: i,
            h_u,
            h,
            present: present.clone(),
        }
    }

    /// The encoder prompts this model holds, by kind ([`ModelConfig::encoder_prompts`] chose
    /// which one `init` made).
    pub fn encoder_prompts(&self) -> Prompts<'_> {
        match (&self.pattern_prompts, &self.modality_prompts) {
            (Some(p), _) => Prompts::PerPattern(p),
            (None, Some(p)) => Prompts::PerModality(p),
            (None, None) => Prompts::None,
        }
    }

    /// Per prompted layer, `selector @ prompts[l]` reshaped to `[B, L, d]`: the MAPs prompt of
    /// each sample's pattern (one-hot selector) or the MSPs sum over its available modalities.
    fn layer_prompts(&self, prompts: Tensor<3>, selector: Tensor<2>, b: usize) -> Vec<Tensor<3>> {
        let [depth, rows, ld] = prompts.dims();
        let len = self.config.prompt_len;
        (0..depth)
            .map(|l| {
                let table = prompts.clone().narrow(0, l, 1).reshape([rows, ld]); // [rows, L d]
                selector.clone().matmul(table).reshape([b, len, ld / len]) // [B, L, d]
            })
            .collect()
    }

    /// Probabilities (softmax of the logits) for classification, the raw value for regression.
    ///
    /// # Shapes
    /// - output: `[B, C]`
    pub fn probabilities(&self, output: Tensor<2>) -> Tensor<2> {
        match self.config.task {
            Task::Classification => burn::tensor::activation::softmax(output, 1),
            Task::Regression => output,
        }
    }
}

/// The index of an absence pattern among the 2^M - 1 non-empty ones: bits of the available
/// modalities, minus one.
pub fn pattern_index(available: &[bool]) -> usize {
    available
        .iter()
        .enumerate()
        .map(|(i, &a)| (a as usize) << i)
        .sum::<usize>()
        .saturating_sub(1)
}

/// One-hot of each sample's absence pattern. Output `[B, 2^M - 1]`.
fn pattern_one_hot(available: &[Vec<bool>], n_patterns: usize, device: &Device) -> Tensor<2> {
    let mut flat = vec![0.0f32; available.len() * n_patterns];
    for (row, a) in available.iter().enumerate() {
        flat[row * n_patterns + pattern_index(a)] = 1.0;
    }
    Tensor::from_data(TensorData::new(flat, [available.len(), n_patterns]), device)
}

/// A loss that is 0, `[1]`: made from host data, so that on a GPU no kernel fills it.
fn zero_loss(device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(vec![0.0f32], [1]), device)
}
