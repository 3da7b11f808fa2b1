//! `mgr bench`: training-step and inference throughput at AV-MNIST's shapes, the same model
//! and shapes as `../shared/bench/torch_mgr.py bench`, so the two can be compared side by side.

use anyhow::Result;
use burn::cubecl::logging::{LaunchObservation, LaunchObserver};
use burn::module::Module;
use mgr::absence::AbsenceMask;
use mgr::batch::{Batch, RowLayout};
use mgr::data::DataSplit;
use mgr::kernels::Execution;
use mgr::kernels::HeadLayout;
use mgr::train::{TrainConfig, infer_outputs, init_model, shards_on, train_step_sharded};
use mgr::{Method, ModalitySpec, ModelConfig};
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::device::{self, DeviceChoice};

/// Flags of `mgr bench` (defaults: the PyTorch peer's).
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Samples per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed steps per repeat.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed repeats (median and spread are over these).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// auto | flex | wgpu | wgpu:N | vulkan | cuda | cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceChoice,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Hidden size.
    #[arg(long, default_value_t = 64)]
    d: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Encoder layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Unimodal encoder layers.
    #[arg(long, default_value_t = 1)]
    uni_layers: usize,
    /// Refinement layers L_T.
    #[arg(long, default_value_t = 2)]
    lt: usize,
    /// Kept fraction rho.
    #[arg(long, default_value_t = 0.5)]
    rho: f64,
    /// Method to time.
    #[arg(long, default_value = "mgr", value_parser = crate::runconfig::method_names())]
    method: String,
    /// Burn's own ops instead of the fused CPU kernels (`train.execution = burn-ops`), to compare.
    #[arg(long)]
    unfused: bool,
    /// Which rows of a modality the tokenizers and unimodal encoders compute: auto (masked on a
    /// GPU, gathered on flex), gathered (the present samples' alone) or masked (every sample's,
    /// the absent ones masked), to compare; the same results either way.
    #[arg(long, default_value = "auto", value_parser = parse_row_layout)]
    rows: RowLayout,
    /// How the attentions lay out Q, K and V: auto (feature-major on a GPU, token-major on
    /// flex), token-major (`[B, T, d]`, each head a strided view a GPU's products copy first) or
    /// feature-major (`[B, d, T]`, each head a view they read as it is), to compare; the same
    /// results either way.
    #[arg(long, default_value = "auto", value_parser = parse_head_layout)]
    head_layout: HeadLayout,
    /// Shards of each batch computed side by side on a CPU's cores (`train.cpu_shards`; 1: the
    /// whole batch at once, to compare).
    #[arg(long, default_value_t = mgr::train::CPU_SHARDS)]
    cpu_shards: usize,
    /// Time single ops at the model's shapes instead (flex; Burn's op beside the fused kernel;
    /// `scripts/torch_ops.py` times the same in PyTorch).
    #[arg(long)]
    ops: bool,
    /// Only count kernel launches per training step and per inference batch (GPU backends;
    /// any wgpu device, lavapipe included): one warm-up step, two counted, no timing.
    #[arg(long)]
    launches: bool,
    /// With `--launches`: how many of the kernels launched most to list.
    #[arg(long, default_value_t = 8)]
    top: usize,
    /// With `--launches`: every launch's kernel on stderr as it happens, and a line where each
    /// count ends (warm-up, training steps, inference), to read in order beside the plans that
    /// `BURN_FUSION_LOG=full` prints there: which operation each launch ran.
    #[arg(long, requires = "launches")]
    trace_launches: bool,
}

/// Counts every kernel launch CubeCL issues (wgpu, CUDA), on any thread, while installed: a
/// step's launch count is what bounds it by the host where kernels are small (about 37 us
/// each on the H200 through wgpu). With `by_kernel` it also counts per kernel name
/// (`--launches`: where the launches go), and with `trace` it writes each one there in order
/// (`--trace-launches`).
struct LaunchCounter {
    total: AtomicUsize,
    by_kernel: Option<Mutex<HashMap<&'static str, usize>>>,
    trace: Option<Mutex<Box<dyn Write + Send>>>,
}

impl LaunchObserver for LaunchCounter {
    fn launched(&self, kernel: &'static str) {
        self.trace_line(format_args!("launch {}", short_kernel_name(kernel)));
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Some(counts) = &self.by_kernel {
            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            *counts.entry(kernel).or_default() += 1;
        }
    }
}

impl LaunchCounter {
    /// One line of the `--trace-launches` trace, when there is one.
    fn trace_line(&self, line: std::fmt::Arguments) {
        if let Some(trace) = &self.trace {
            let mut out = trace.lock().unwrap_or_else(|p| p.into_inner());
            // A trace that cannot be written is not worth failing the count for.
            let _ = writeln!(out, "{line}");
        }
    }

    /// The launches since the last take, per call of `calls`, and the `top` kernels launched
    /// most; both counts start again.
    fn take(&self, calls: usize, top: usize) -> Launches {
        let calls = calls.max(1);
        let total = self.total.swap(0, Ordering::Relaxed);
        self.trace_line(format_args!(
            "launches: {total} in {calls} call(s) since the last count"
        ));
        let mut kernels: Vec<(String, f64)> = Vec::new();
        if let Some(counts) = &self.by_kernel {
            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            let mut all: Vec<(&str, usize)> = counts.iter().map(|(k, c)| (*k, *c)).collect();
            all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            kernels = all
                .into_iter()
                .take(top)
                .map(|(k, c)| (short_kernel_name(k), c as f64 / calls as f64))
                .collect();
            counts.clear();
        }
        Launches {
            per_call: total as f64 / calls as f64,
            top: kernels,
        }
    }
}

/// Whether this binary was built with Burn's fusion and autotune (the trainer's `fusion` feature,
/// on by default): the bench's numbers belong to the build as much as to the device.
const BURN_FUSION: bool = cfg!(feature = "fusion");
/// Whether autotune's choices persist on disk between runs (the `autotune-cache` feature): without
/// it every process autotunes again, and launch counts vary by a few as near-tied candidates
/// swap.
const AUTOTUNE_CACHE: bool = cfg!(feature = "autotune-cache");

/// The build's GPU features, for a reader (flex ignores them).
fn build_line() -> String {
    let on_off = |on: bool| if on { "on" } else { "off" };
    format!(
        "build: Burn fusion and autotune {}, autotune cache on disk {}",
        on_off(BURN_FUSION),
        on_off(AUTOTUNE_CACHE)
    )
}

/// Kernel launches per call, and the kernels launched most (with `--launches`).
struct Launches {
    per_call: f64,
    top: Vec<(String, f64)>,
}

/// A kernel's type name without its module paths (`burn_cubecl::kernel::X<f32>` -> `X<f32>`).
fn short_kernel_name(name: &str) -> String {
    let mut out = String::new();
    let mut segment = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            out.push_str(segment.rsplit("::").next().unwrap_or(""));
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(segment.rsplit("::").next().unwrap_or(""));
    out
}

/// AV-MNIST's token grids: 16 image patches of 7x7, 28 spectrogram frames of 4x112.
fn config(a: &BenchArgs) -> Result<ModelConfig> {
    Ok(ModelConfig::new(
        vec![
            ModalitySpec::new("vision".into(), 16, 49),
            ModalitySpec::new("audio".into(), 28, 448),
        ],
        10,
    )
    .with_method(a.method.parse::<Method>()?)
    .with_d_model(a.d)
    .with_n_heads(a.heads)
    .with_n_layers(a.layers)
    .with_unimodal_layers(a.uni_layers)
    .with_refine_layers(a.lt)
    .with_rho(a.rho))
}

/// One of `all` by its `name`, or an error naming `given` and the names it takes.
fn by_name<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
    given: &str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|&value| name(value) == given)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|&value| name(value)).collect();
            format!("`{given}` is no {what} ({})", names.join(", "))
        })
}

/// `--rows`: a [`RowLayout`] by its name.
fn parse_row_layout(name: &str) -> Result<RowLayout, String> {
    by_name(&RowLayout::ALL, RowLayout::name, "row layout", name)
}

/// `--head-layout`: a [`HeadLayout`] by its name.
fn parse_head_layout(name: &str) -> Result<HeadLayout, String> {
    by_name(&HeadLayout::ALL, HeadLayout::name, "head layout", name)
}

/// The execution policy `--unfused` asks for.
fn execution(a: &BenchArgs) -> Execution {
    if a.unfused {
        Execution::BurnOps
    } else {
        Execution::Kernels
    }
}

/// Forward multiply-add FLOPs per sample (2 per multiply-add), matmuls only.
pub fn forward_flops(cfg: &ModelConfig) -> f64 {
    let d = cfg.d_model as f64;
    let ff = (cfg.ff_mult as f64) * d;
    let encoder_layer = |n: f64| 2.0 * (4.0 * n * d * d + 2.0 * n * n * d + 2.0 * n * d * ff);
    let n: f64 = cfg.n_tokens() as f64;
    let mut flops: f64 = cfg
        .modalities
        .iter()
        .map(|m| 2.0 * (m.n_tokens * m.token_dim) as f64 * d)
        .sum();
    flops += cfg.n_layers as f64 * encoder_layer(n);
    if cfg.uses_unimodal() {
        flops += cfg
            .modalities
            .iter()
            .map(|m| cfg.unimodal_layers as f64 * encoder_layer(m.n_tokens as f64))
            .sum::<f64>();
    }
    let counts = cfg.tokens_per_layer();
    for w in counts.windows(2) {
        let (n, k) = (w[0] as f64, w[1] as f64);
        flops += 2.0 * (2.0 * d * d + n * d * d + 2.0 * (n + 1.0) * d * d + n * d * d) // f_Mix, W_Q, W_K, W_V, W_O
            + 2.0 * 2.0 * n * (n + 1.0) * d // scores and context
            + 2.0 * n * d // f_Psi
            + 2.0 * 2.0 * n * d * d + 2.0 * n * n * d // W_c1, W_c2, A^T messages
            + 2.0 * k * n * d; // gathering the kept tokens
    }
    flops + 2.0 * d * cfg.n_outputs as f64
}

fn median_and_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Runs the benchmark.
pub fn run(a: &BenchArgs) -> Result<()> {
    if a.ops {
        crate::bench_ops::run();
        return Ok(());
    }
    let cfg = config(a)?;
    cfg.validate()?;
    let (device, device_name) = device::select(a.device, a.json)?;
    let b = a.batch.max(1);
    let split = DataSplit::random_normal("bench", cfg.modalities.clone(), b, 10, 0);
    // As the peer: the first third misses vision, the second third misses audio.
    let rows = (0..b)
        .map(|i| vec![i >= b / 3, !(b / 3..2 * b / 3).contains(&i)])
        .collect();
    let mask = AbsenceMask {
        modalities: vec!["vision".into(), "audio".into()],
        rows,
    };
    let indices: Vec<usize> = (0..b).collect();
    let train_device = device.clone().autodiff();
    let parts = shards_on(&device, a.cpu_shards);
    let train_shards = Batch::shards_from_split(&split, &indices, &mask, &train_device, parts);
    let infer_shards = Batch::shards_from_split(&split, &indices, &mask, &device, parts);
    let tc = TrainConfig::new().with_lr(1e-4);
    let mut optimizer = tc.optimizer();
    let counter = Arc::new(LaunchCounter {
        total: AtomicUsize::new(0),
        by_kernel: a.launches.then(|| Mutex::new(HashMap::new())),
        trace: a
            .trace_launches
            .then(|| Mutex::new(Box::new(std::io::stderr()) as Box<dyn Write + Send>)),
    });
    let _observing = LaunchObservation::new(counter.clone());
    let timing = Timing::of(a);
    let (model, train_rates, train_launches) = samples_per_second(
        &timing,
        b,
        init_model(&cfg, 0, &device)?
            .with_execution(execution(a))
            .with_row_layout(a.rows)
            .with_head_layout(a.head_layout),
        &counter,
        |m| {
            // The step's losses come back to the host: it waits for the device.
            train_step_sharded(m, &mut optimizer, tc.lr, &train_shards).0
        },
    );
    let inference = model.valid();
    let ((), infer_rates, infer_launches) = samples_per_second(&timing, b, (), &counter, |()| {
        // into_data waits for the device.
        for out in infer_outputs(&inference, &infer_shards) {
            out.output.into_data();
        }
    });
    let report = Report {
        launches: a.launches,
        train_launches,
        infer_launches,
        device_name,
        method: cfg.method,
        batch: b,
        rows: a.rows.resolved(&device).name(),
        head_layout: a.head_layout.resolved(&device, execution(a)).name(),
        params: model.num_params(),
        flops: forward_flops(&cfg),
        train: median_and_spread(train_rates),
        infer: median_and_spread(infer_rates),
    };
    report.print(a);
    Ok(())
}

/// How many calls `mgr bench` makes: `--launches` counts over two calls after one warm-up.
struct Timing {
    warmup: usize,
    steps: usize,
    repeats: usize,
    /// Kernels listed by name (`--top`).
    top: usize,
}

impl Timing {
    fn of(a: &BenchArgs) -> Timing {
        match a.launches {
            true => Timing {
                warmup: 1,
                steps: 2,
                repeats: 1,
                top: a.top,
            },
            false => Timing {
                warmup: a.warmup,
                steps: a.steps.max(1),
                repeats: a.repeats.max(1),
                top: a.top,
            },
        }
    }
}

/// `warmup` untimed calls of `step`, then `repeats` timings of `steps` calls each, as samples
/// (`batch` per call) per second, and the kernel launches per timed call (`counter`); each call
/// takes the state the previous one returned (the model being trained), and the last state
/// comes back.
fn samples_per_second<S>(
    timing: &Timing,
    batch: usize,
    mut state: S,
    counter: &LaunchCounter,
    mut step: impl FnMut(S) -> S,
) -> (S, Vec<f64>, Launches) {
    for _ in 0..timing.warmup {
        state = step(state);
    }
    counter.take(1, 0);
    let mut rates = Vec::with_capacity(timing.repeats);
    for _ in 0..timing.repeats {
        let t = Instant::now();
        for _ in 0..timing.steps {
            state = step(state);
        }
        rates.push((timing.steps * batch) as f64 / t.elapsed().as_secs_f64());
    }
    let launches = counter.take(timing.steps * timing.repeats, timing.top);
    (state, rates, launches)
}

/// What `mgr bench` measured.
struct Report {
    /// Print only the launch counts.
    launches: bool,
    /// Kernel launches per training step (0 on flex, which launches none).
    train_launches: Launches,
    /// Kernel launches per inference batch.
    infer_launches: Launches,
    device_name: String,
    method: Method,
    batch: usize,
    /// The row layout the model ran in (`--rows`, resolved for the device).
    rows: &'static str,
    /// The attentions' Q, K, V layout (`--head-layout`, resolved for the device).
    head_layout: &'static str,
    params: usize,
    /// Forward FLOPs per sample.
    flops: f64,
    /// Training samples/s: (median, min, max).
    train: (f64, f64, f64),
    /// Inference samples/s: (median, min, max).
    infer: (f64, f64, f64),
}

impl Report {
    /// One JSON line (`--json`) or a few lines for a reader.
    fn print(&self, a: &BenchArgs) {
        match (self.launches, a.json) {
            (true, true) => self.print_launches_json(),
            (true, false) => self.print_launches(),
            (false, true) => self.print_speed_json(a),
            (false, false) => self.print_speed(a),
        }
    }

    /// `--launches --json`: the counts and the kernels launched most, one JSON line.
    fn print_launches_json(&self) {
        let out = json!({
            "impl": "mgr-rust",
            "device": self.device_name,
            "method": self.method.name(),
            "batch": self.batch,
            "rows": self.rows,
            "head_layout": self.head_layout,
            "burn_fusion": BURN_FUSION,
            "autotune_cache": AUTOTUNE_CACHE,
            "train_launches_per_step": self.train_launches.per_call,
            "infer_launches_per_batch": self.infer_launches.per_call,
            "train_top_kernels": self.train_launches.top,
            "infer_top_kernels": self.infer_launches.top,
        });
        println!("{out}");
    }

    /// The launch counts, for a reader.
    fn launches_line(&self) -> String {
        format!(
            "kernel launches: {:.0} per training step, {:.0} per inference batch",
            self.train_launches.per_call, self.infer_launches.per_call
        )
    }

    /// `--launches`: the counts and the kernels launched most, for a reader.
    fn print_launches(&self) {
        let Report {
            device_name,
            method,
            batch,
            rows,
            head_layout,
            train_launches,
            infer_launches,
            ..
        } = self;
        println!(
            "device {device_name}, method {method}, batch {batch}, rows {rows}, heads {head_layout}"
        );
        println!("{}", build_line());
        println!("{}", self.launches_line());
        for (what, l) in [
            ("training step", train_launches),
            ("inference batch", infer_launches),
        ] {
            println!("most launched per {what}:");
            for (kernel, n) in &l.top {
                // Matmul kernels name their whole tiling in their type: the family is enough to
                // read the list.
                let shown: String = kernel.chars().take(90).collect();
                let more = if shown.len() < kernel.len() {
                    "..."
                } else {
                    ""
                };
                println!("  {n:>6.0}  {shown}{more}");
            }
        }
    }

    /// `--json`: samples/s, FLOPs and launches, one JSON line.
    fn print_speed_json(&self, a: &BenchArgs) {
        let (train_med, train_min, train_max) = self.train;
        let (infer_med, infer_min, infer_max) = self.infer;
        let flops = self.flops;
        let out = json!({
            "train_launches_per_step": self.train_launches.per_call,
            "infer_launches_per_batch": self.infer_launches.per_call,
            "impl": "mgr-rust",
            "device": self.device_name,
            "fused_kernels": !a.unfused,
            "rows": self.rows,
            "head_layout": self.head_layout,
            "burn_fusion": BURN_FUSION,
            "autotune_cache": AUTOTUNE_CACHE,
            "method": self.method.name(),
            "batch": self.batch,
            "steps": a.steps,
            "repeats": a.repeats,
            "train_samples_per_s": train_med,
            "train_samples_per_s_min": train_min,
            "train_samples_per_s_max": train_max,
            "infer_samples_per_s": infer_med,
            "infer_samples_per_s_min": infer_min,
            "infer_samples_per_s_max": infer_max,
            "forward_flops_per_sample": flops,
            "train_gflops_per_s": train_med * 3.0 * flops / 1e9,
            "infer_gflops_per_s": infer_med * flops / 1e9,
            "params": self.params,
        });
        println!("{out}");
    }

    /// Samples/s and FLOPs for a reader.
    fn print_speed(&self, a: &BenchArgs) {
        let Report {
            device_name,
            method,
            batch,
            rows,
            head_layout,
            params,
            flops,
            train: (train_med, train_min, train_max),
            infer: (infer_med, infer_min, infer_max),
            train_launches,
            ..
        } = self;
        let kernels = if a.unfused {
            "Burn's ops"
        } else {
            "fused kernels"
        };
        println!(
            "device {device_name} ({kernels}), method {method}, batch {batch}, rows {rows}, heads {head_layout}, {params} params"
        );
        println!("{}", build_line());
        println!(
            "forward FLOPs per sample: {:.2} M (training ~3x)",
            flops / 1e6
        );
        println!(
            "train: {train_med:>9.1} samples/s (min {train_min:.1}, max {train_max:.1}) = {:.2} GFLOP/s",
            train_med * 3.0 * flops / 1e9
        );
        println!(
            "infer: {infer_med:>9.1} samples/s (min {infer_min:.1}, max {infer_max:.1}) = {:.2} GFLOP/s",
            infer_med * flops / 1e9
        );
        if train_launches.per_call > 0.0 {
            println!("{}", self.launches_line());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_lose_their_module_paths_only() {
        assert_eq!(
            short_kernel_name("burn_cubecl::kernel::unary::Kernel<cubecl_core::F32, 2>"),
            "Kernel<F32, 2>"
        );
        assert_eq!(short_kernel_name("plain"), "plain");
    }

    /// `--rows` and `--head-layout` take each layout by its name, and reject any other name
    /// with the names they take.
    #[test]
    fn layouts_are_read_by_name() {
        for layout in RowLayout::ALL {
            assert_eq!(parse_row_layout(layout.name()), Ok(layout));
        }
        for layout in HeadLayout::ALL {
            assert_eq!(parse_head_layout(layout.name()), Ok(layout));
        }
        for (err, wrong, one_right) in [
            (
                parse_row_layout("scattered").unwrap_err(),
                "scattered",
                "gathered",
            ),
            (
                parse_head_layout("head-major").unwrap_err(),
                "head-major",
                "feature-major",
            ),
        ] {
            assert!(err.contains(wrong) && err.contains(one_right), "{err}");
        }
    }

    /// The counter counts every launch and, with `by_kernel`, each kernel, per call; a take
    /// starts both again.
    #[test]
    fn launches_are_counted_per_call_and_per_kernel() {
        let counter = LaunchCounter {
            total: AtomicUsize::new(0),
            by_kernel: Some(Mutex::new(HashMap::new())),
            trace: None,
        };
        for kernel in ["a::x", "b::y", "a::x", "a::x"] {
            counter.launched(kernel);
        }
        let l = counter.take(2, 1);
        assert_eq!(l.per_call, 2.0);
        assert_eq!(l.top, vec![("x".to_string(), 1.5)]);
        assert_eq!(counter.take(1, 5).per_call, 0.0);
    }

    /// A `Write` into a buffer the test keeps.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `--trace-launches`: each launch's short name in order, and a line at each take with the
    /// launches it counted.
    #[test]
    fn a_trace_lists_each_launch_in_order_and_ends_each_count_with_a_line() {
        let buffer = Shared::default();
        let counter = LaunchCounter {
            total: AtomicUsize::new(0),
            by_kernel: None,
            trace: Some(Mutex::new(Box::new(buffer.clone()))),
        };
        counter.launched("a::x<f32>");
        counter.launched("b::y");
        counter.take(2, 0);
        counter.launched("c::z");
        counter.take(1, 0);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "launch x<f32>\nlaunch y\nlaunches: 2 in 2 call(s) since the last count\n\
             launch z\nlaunches: 1 in 1 call(s) since the last count\n"
        );
    }
}
