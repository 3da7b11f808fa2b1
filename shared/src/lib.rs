//! # MGR: Multimodal Generalization and Refinement
//!
//! Reference implementation of Huang et al., *Mitigating Pervasive Modality Absence Through
//! Multimodal Generalization and Refinement* (AAAI 2025), on Burn 0.22, and of the methods the
//! paper compares with (ViLT-style baseline, MAPs, MSPs) and its ablations.
//!
//! Every equation of the paper's Methodology is implemented in one place, named in the doc
//! comment of that code (search for `Eq. 5` to find the mixed-context prompt):
//!
//! | Eq.   | what                                   | where                                   |
//! |-------|----------------------------------------|-----------------------------------------|
//! | 1     | tokenizers with `E_avail` / `E_miss`   | [`tokenizer::ModalityTokenizer`]        |
//! | 2     | multimodal transformer                 | [`encoder::Encoder`]                    |
//! | 3     | unimodal enhancement with `alpha_u`    | [`unimodal::UnimodalEnhancement`]       |
//! | 4     | squared distance correlation `L_div`   | [`loss::squared_distance_correlation`]  |
//! | 5     | mixed-context prompt `P`               | [`prompt::MixedContextPrompt`]          |
//! | 6     | prompt insertion (4 types)             | [`attention::ContextAttention`]         |
//! | 7-8   | prompt-conditioned attention `r`, `e`  | [`attention::ContextAttention`]         |
//! | 9     | ranking `xi = a_f xi_f + (1-a_f) xi_e` | [`ranking::Ranking`]                    |
//! | 10    | top-rho split                          | [`ranking::top_rho_split`]              |
//! | 11-12 | graph redistribution                   | [`redistribution::Redistribution`]      |
//! | 13    | total loss                             | [`loss::LossWeights`]                   |
//!
//! Three layers, each in its own place: [`paper`] (the equations above, the readings of what
//! the paper leaves open, [`readings::RefinementReadings`], and the methods), [`harness`] (what
//! trains, evaluates, stores and traces the model) and the `mgr-kernels` crate
//! ([`kernels`]: the faster forms of the operations, chosen by one
//! [`kernels::Execution`] policy the model holds, each tested against the form written here).
//!
//! The crate builds for the host and for `wasm32-unknown-unknown`: it has no file system,
//! threads or clocks. [`ranking_quality`] scores the ranking against the synthetic data's
//! ground-truth noise tokens. Data arrives as [`data::DataSplit`]s; absence masks come from
//! [`absence`]; the browser demo draws a [`trace::SampleTrace`].
//!
//! ## Dimension key (used in every `// [..]` shape comment)
//! - `B`: batch size
//! - `M`: number of modalities
//! - `N_i`: tokens of modality `i`; `N`: tokens currently in the sequence (sum of `N_i` before
//!   the first refinement layer)
//! - `D_i`: raw feature size of one token of modality `i`
//! - `d`: hidden size; `H`: attention heads; `d_h = d / H`
//! - `K = ceil(rho * N)`: tokens kept by a refinement layer
//! - `L`: prompt length (MAPs / MSPs prompts, MAPs-input insertion)
//! - `C`: outputs of the task head (classes, or 1 for regression)

pub mod error;

/// The paper: every equation of its Methodology (Eqs. 1-13), one component per file, the
/// readings of what it leaves open, and the methods it is compared with.
pub mod paper {
    pub mod attention;
    pub mod config;
    pub mod encoder;
    pub mod head;
    pub mod loss;
    pub mod model;
    pub mod prompt;
    pub mod ranking;
    pub mod readings;
    pub mod redistribution;
    pub mod refinement;
    pub mod tokenizer;
    pub mod unimodal;
}

/// What runs the model: the training step and evaluation, data and batches, absence masks, the
/// synthetic data, AV-MNIST's token layout, freezing a backbone, metrics, the ranking's quality
/// against ground truth, persistence, seeds and the trace the page draws.
pub mod harness {
    pub mod absence;
    pub mod avmnist_tokens;
    pub mod batch;
    pub mod data;
    pub mod freeze;
    // Test support for the readers' property tests: not in the page's module.
    #[cfg(not(target_arch = "wasm32"))]
    pub mod fuzz;
    pub mod metrics;
    pub mod persist;
    pub mod ranking_quality;
    pub mod seeds;
    pub mod synthetic;
    pub mod trace;
    pub mod train;
    pub mod truth;
}

/// How the operations run fast: the `mgr-kernels` crate, the facade the model calls.
pub use mgr_kernels as kernels;
pub use mgr_kernels::optimizer;

// Each module also at the crate root (`mgr::ranking`, `mgr::train`): the tree above says what
// layer a file is, the paths stay short.
#[cfg(not(target_arch = "wasm32"))]
pub use harness::fuzz;
pub use harness::{
    absence, avmnist_tokens, batch, data, freeze, metrics, persist, ranking_quality, seeds,
    synthetic, trace, train, truth,
};
pub use paper::{
    attention, config, encoder, head, loss, model, prompt, ranking, readings, redistribution,
    refinement, tokenizer, unimodal,
};

pub use batch::Batch;
pub use config::{EncoderPrompts, Method, ModalitySpec, ModelConfig, Task};
pub use error::MgrError;
pub use freeze::{Freeze, ParamCounts};
pub use model::{DiversityInputs, Model, ModelOutput, Prompts};
pub use readings::{Gate, GateScope, PromptInsertion, RefinementReadings, ScoreGate, SplitRanking};
