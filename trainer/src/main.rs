//! `mgr`: train, evaluate, trace, export and benchmark MGR and the methods it is compared with.

mod affect;
mod avmnist;
mod bench;
mod bench_ops;
mod checkpoint;
mod commands;
mod dataset;
mod datasets;
mod device;
mod epochs;
mod fsutil;
mod kappa_sweep;
mod plots;
mod pretrain;
mod progress;
mod protocol;
mod runconfig;

mod run;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

use crate::device::DeviceChoice;

#[derive(Parser)]
#[command(
    name = "mgr",
    version,
    about = "MGR (AAAI 2025) in Rust: train, evaluate, trace, export, benchmark"
)]
struct Cli {
    /// Print only results (no progress, no device line).
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train one model and evaluate it on the test split.
    Train(TrainArgs),
    /// Pretrain a backbone (tokenizers + multimodal encoder) on data the downstream splits
    /// never see, with every modality present; `train --backbone` starts from it.
    Pretrain(pretrain::PretrainArgs),
    /// Evaluate a trained run under another absence setting.
    Eval(EvalArgs),
    /// Print the trace of one test sample as JSON.
    Trace(TraceArgs),
    /// Write what the web page loads: weights, config, samples.
    ExportWeb(ExportArgs),
    /// Write a run's weights for other frameworks (safetensors, PyTorch names and layout), its
    /// config as JSON and a few test inputs.
    Export(ExportFileArgs),
    /// Time training steps and inference at AV-MNIST's shapes.
    Bench(bench::BenchArgs),
    /// The paper's protocol: every method x kappa cell over absence seeds x seeds, tables, plots.
    Protocol(protocol::ProtocolArgs),
    /// Build a dataset from raw files (`avmnist`: MNIST + Free Spoken Digit Dataset).
    Prepare(PrepareArgs),
}

/// The settings `train` shares with the config file; each flag overrides the file.
#[derive(Args)]
struct TrainArgs {
    /// Dataset.
    #[arg(long, value_parser = runconfig::dataset_names())]
    dataset: Option<String>,
    /// Dataset folder (avmnist) or pickle file (mosi, mosei, urfunny).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Method: the paper's, and MGR's ablations.
    #[arg(long, value_parser = runconfig::method_names())]
    method: Option<String>,
    /// Share of samples missing at least one modality, in [0, 1].
    #[arg(long)]
    kappa: Option<f64>,
    /// Seed of the absence masks.
    #[arg(long)]
    absence_seed: Option<u64>,
    /// Seed of initialisation and batch order.
    #[arg(long)]
    seed: Option<u64>,
    /// Training epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// auto | flex | wgpu | wgpu:N (the N-th GPU) | vulkan | cuda | cuda:N. Several, comma-separated
    /// (`wgpu:0,wgpu:1`), train data-parallel: each batch is split over them (Burn's
    /// multi-device step), the model and the reports stay on the first.
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    device: Vec<DeviceChoice>,
    /// Run folder to write.
    #[arg(long)]
    out: PathBuf,
    /// A TOML file with any of the config's sections ([model], [train], [absence], [synthetic]).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override any field: `--set rho=0.3`, `--set train.lr=1e-3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue an interrupted run from its last epoch checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start from another run's tokenizers and encoder (a run folder of `mgr train` with the
    /// same modalities and encoder sizes), then train the whole model.
    #[arg(long, value_name = "RUN", conflicts_with = "backbone")]
    init_from: Option<PathBuf>,
    /// The pretrained backbone to start from (a run of `mgr pretrain`, or any finished run with
    /// the same modalities and encoder sizes): its tokenizers and multimodal encoder are
    /// loaded, as `--init-from` does; `--freeze` says whether they then train.
    #[arg(long, value_name = "RUN")]
    backbone: Option<PathBuf>,
    /// `backbone`: the loaded backbone gets no gradient, each method trains only what it adds
    /// (the paper's setting); `none` (default): every parameter trains.
    #[arg(long, value_parser = runconfig::freeze_names())]
    freeze: Option<String>,
}

#[derive(Args)]
struct EvalArgs {
    /// A run folder written by `mgr train`.
    #[arg(long)]
    run: PathBuf,
    /// kappa to evaluate at (default: the run's).
    #[arg(long)]
    kappa: Option<f64>,
    /// Seed of the test mask (default: the run's).
    #[arg(long)]
    absence_seed: Option<u64>,
    /// Modalities that may be missing, comma-separated (default: the run's).
    #[arg(long, value_delimiter = ',')]
    absence_type: Option<Vec<String>>,
    /// At most this many missing at once.
    #[arg(long)]
    max_missing: Option<usize>,
    /// Split by another ranking than the run's, without retraining: learned | random |
    /// inverted | oracle-noise | oracle-conflict | oracle-majority (the oracles need the
    /// synthetic data's truth).
    #[arg(long, value_parser = runconfig::ranking_names())]
    ranking: Option<String>,
    /// auto | flex | wgpu | wgpu:N | vulkan | cuda | cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceChoice,
}

#[derive(Args)]
struct TraceArgs {
    /// A run folder written by `mgr train`.
    #[arg(long)]
    run: PathBuf,
    /// Test sample index.
    #[arg(long)]
    index: usize,
    /// Modalities to drop, comma-separated (default: the run's test mask for this sample).
    #[arg(long, value_delimiter = ',')]
    drop: Option<Vec<String>>,
}

/// File formats `mgr export` writes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ExportFormat {
    /// safetensors (Hugging Face), readable by `safetensors.torch.load_file`.
    Safetensors,
}

#[derive(Args)]
struct ExportFileArgs {
    /// The file format.
    #[arg(long, value_enum, default_value = "safetensors")]
    format: ExportFormat,
    /// A run folder written by `mgr train`.
    #[arg(long)]
    run: PathBuf,
    /// The weights file to write (e.g. `model.safetensors`); the config goes next to it as
    /// `<stem>.json` and the test inputs as `<stem>.samples.safetensors`.
    #[arg(long)]
    out: PathBuf,
    /// The first this many test samples (inputs and their availability under the run's test
    /// mask) go into `<stem>.samples.safetensors`; 0 writes none.
    #[arg(long, default_value_t = 8)]
    samples: usize,
}

/// `--precision` of `mgr export-web`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Precision {
    /// IEEE half precision.
    F16,
    /// The model's own f32 values, bit for bit.
    F32,
}

impl From<Precision> for mgr::persist::WeightPrecision {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F16 => mgr::persist::WeightPrecision::F16,
            Precision::F32 => mgr::persist::WeightPrecision::F32,
        }
    }
}

#[derive(Args)]
struct ExportArgs {
    /// A run folder written by `mgr train`.
    #[arg(long)]
    run: PathBuf,
    /// Folder to write `model.bpk`, `model.json` and the samples (`samples.json` for synthetic
    /// runs, `samples.safetensors` for AV-MNIST) into.
    #[arg(long)]
    out: PathBuf,
    /// Test samples to include.
    #[arg(long, default_value_t = 32)]
    samples: usize,
    /// How model.bpk stores the weights: f16 (half the download; the page converts to f32 on
    /// load, and the predictions are checked against f32 before anything is written) or f32.
    #[arg(long, value_enum, default_value = "f16")]
    precision: Precision,
    /// export-web of an AV-MNIST run: the MNIST folder (default: the one its data was prepared
    /// from, as its recipe.json says), for the original digits the page shows.
    #[arg(long)]
    mnist_dir: Option<PathBuf>,
    /// export-web of an AV-MNIST run: the FSDD folder (default: from its recipe.json), for the
    /// recordings the page plays.
    #[arg(long)]
    fsdd_dir: Option<PathBuf>,
}

#[derive(Args)]
struct PrepareArgs {
    /// Which dataset: avmnist.
    dataset: String,
    /// Folder with the MNIST idx files.
    #[arg(long)]
    mnist_dir: PathBuf,
    /// Folder of the Free Spoken Digit Dataset (with recordings/).
    #[arg(long)]
    fsdd_dir: PathBuf,
    /// Output folder (MultiBench's layout).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the white noise mixed into the recordings.
    #[arg(long, default_value_t = 0)]
    noise_seed: u64,
    /// Also write a pretraining pool for `mgr pretrain` into `<out>/pretrain`: the first N
    /// training digits, spoken by the two FSDD speakers the recipe leaves unused (george,
    /// lucas); the downstream training split is then the remaining digits. 0: no pool (the
    /// recipe as MultiBench has it).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pool: usize,
}

fn main() {
    keep_freed_memory();
    device::give_mesa_a_runtime_dir();
    let cli = Cli::try_parse().unwrap_or_else(|e| exit_with_usage_error(e));
    if let Err(e) = dispatch(cli) {
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

/// Makes glibc's allocator keep freed memory for the next allocation instead of handing it back
/// to the kernel. A training step allocates and frees the same few hundred kilobyte-sized
/// tensors hundreds of times; with glibc's defaults (buffers above 128 KiB mapped afresh,
/// free memory above 128 KiB at the top of a heap returned) a freed buffer came back as new
/// pages, which the kernel zeroes on first touch: `clear_page_erms` took 6% of `mgr bench`'s
/// time. Mapped buffers now start at 64 MiB, heaps shrink only past 256 MiB free.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's mallopt(3) and its parameter numbers (malloc.h).
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        // SAFETY: mallopt only sets two allocator parameters; it runs first in main, before
        // any other thread exists.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 64 << 20);
            mallopt(M_TRIM_THRESHOLD, 256 << 20);
        }
    }
}

/// Help and version print as clap writes them; a usage error (an unknown flag, a value not among
/// the possible ones) is one line, as every other error of `mgr`, exit status 2.
fn exit_with_usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    let line = parts.join(" ");
    eprintln!("error: {}", line.strip_prefix("error: ").unwrap_or(&line));
    std::process::exit(2);
}

fn dispatch(cli: Cli) -> Result<()> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Train(a) => {
            let rc = runconfig::resolve_train_config(&a)?;
            run::train(rc, &a.out, &a.device, a.resume, quiet)
        }
        Command::Pretrain(a) => {
            let rc = pretrain::resolve(&a)?;
            run::train(rc, &a.out, &a.device, a.resume, quiet)
        }
        Command::Eval(a) => commands::eval(&a),
        Command::Trace(a) => commands::trace(&a),
        Command::ExportWeb(a) => commands::export_web(&a),
        Command::Export(a) => commands::export_file(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Protocol(a) => protocol::run(&a),
        Command::Prepare(a) => {
            if a.dataset != "avmnist" {
                anyhow::bail!(
                    "prepare: unknown dataset `{}` (only avmnist is built from raw files)",
                    a.dataset
                );
            }
            let t = std::time::Instant::now();
            let p = avmnist::prepare(
                &a.mnist_dir,
                &a.fsdd_dir,
                &a.out,
                a.noise_seed,
                a.pool,
                quiet,
            )?;
            let pool = match p.pool {
                Some((train, test)) => format!(
                    "; pretraining pool {} ({train} train, {test} test)",
                    a.out.join("pretrain").display()
                ),
                None => String::new(),
            };
            eprintln!(
                "wrote {} ({} train, {} test, {} PCA components{pool}) in {:.1}s",
                a.out.display(),
                p.n_train,
                p.n_test,
                p.pca_components,
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}
