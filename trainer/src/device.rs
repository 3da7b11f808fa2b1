//! Device selection: Burn's CUDA backend where the build has it and an NVIDIA driver answers,
//! else a wgpu GPU adapter when there is one, else Burn's pure-Rust `flex` CPU backend; several
//! devices for data-parallel training.

use anyhow::{Result, bail};
use burn::tensor::{Device, DeviceKind, Tensor};
use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// One device as a user names it on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// `auto`: a wgpu GPU adapter if one exists, else the flex CPU backend.
    Auto,
    /// `flex` (or `cpu`): Burn's pure-Rust CPU backend.
    Flex,
    /// `wgpu`: wgpu's default adapter (a GPU, or a CPU Vulkan device such as lavapipe).
    Wgpu,
    /// `wgpu:N`: the N-th discrete GPU wgpu finds (0-based), for machines with several cards.
    WgpuDiscrete(usize),
    /// `vulkan`: wgpu's default adapter pinned to Vulkan, kernels compiled to SPIR-V by CubeCL
    /// (cargo feature `vulkan`).
    Vulkan,
    /// `cuda` / `cuda:N`: Burn's CUDA backend on the N-th NVIDIA GPU (cargo feature `cuda`).
    Cuda(usize),
}

/// Why `--device cuda` cannot run in a build without the `cuda` feature.
const NO_CUDA_BUILD: &str = "this mgr was built without Burn's CUDA backend: build it with `cargo build --release -p mgr-trainer --features cuda` (CubeCL's CUDA compiler links LLVM, which its build script downloads, so that build needs internet access; at run time it loads the NVIDIA driver's libcuda and NVRTC)";

/// Why `--device vulkan` cannot run in a build without the `vulkan` feature.
#[cfg(not(feature = "vulkan"))]
const NO_VULKAN_BUILD: &str = "this mgr was built without CubeCL's SPIR-V compiler: build it with `cargo build --release -p mgr-trainer --features vulkan`";

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "flex" | "cpu" => Ok(DeviceChoice::Flex),
            "wgpu" | "gpu" => Ok(DeviceChoice::Wgpu),
            "vulkan" => Ok(DeviceChoice::Vulkan),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.split_once(':') {
                Some(("wgpu" | "gpu", index)) => {
                    index.parse().map(DeviceChoice::WgpuDiscrete).map_err(|_| {
                        format!("`{s}`: the GPU index must be a number (wgpu:0, wgpu:1, ...)")
                    })
                }
                Some(("cuda", index)) => index.parse().map(DeviceChoice::Cuda).map_err(|_| {
                    format!("`{s}`: the GPU index must be a number (cuda:0, cuda:1, ...)")
                }),
                _ => Err(format!(
                    "unknown device `{s}` (auto, flex, cpu, wgpu, wgpu:N for the N-th GPU, vulkan, cuda, cuda:N)"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Flex => write!(f, "flex"),
            DeviceChoice::Wgpu => write!(f, "wgpu"),
            DeviceChoice::WgpuDiscrete(i) => write!(f, "wgpu:{i}"),
            DeviceChoice::Vulkan => write!(f, "vulkan"),
            DeviceChoice::Cuda(0) => write!(f, "cuda"),
            DeviceChoice::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Parses a data-parallel group: devices joined by `+` (`wgpu:0+wgpu:1`), as `mgr protocol
/// --devices` takes one group per worker.
pub fn parse_group(s: &str) -> Result<Vec<DeviceChoice>> {
    s.split('+')
        .map(|d| d.parse::<DeviceChoice>().map_err(anyhow::Error::msg))
        .collect()
}

/// What wgpu found: the adapter's name and whether it is a real card (not a CPU or a software
/// rasterizer such as lavapipe).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Adapter {
    name: String,
    hardware: bool,
}

/// Each device kind is probed once per process and every caller shares the answer: protocol
/// workers selecting their devices at the same moment neither probe twice nor race each other.
static PROBES: Mutex<Vec<(String, Option<Adapter>)>> = Mutex::new(Vec::new());

/// Probes actually run (not answered from [`PROBES`]); read by the tests.
static PROBES_RUN: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set while this thread probes: its expected panic is not printed.
    static PROBING: Cell<bool> = const { Cell::new(false) };
}

/// Wraps the process's panic hook once, so that a probing thread's panic is silent and every
/// other panic (any thread, any time) still reaches the hook that was there before. Swapping the
/// hook around each probe instead would silence, or lose, the panics of concurrent workers.
fn install_quiet_probe_hook() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PROBING.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Returns the adapter of a wgpu device kind, or None when wgpu has no such adapter; probed on
/// the first call for the kind, answered from the cache after.
fn probe_wgpu(kind: DeviceKind) -> Option<Adapter> {
    probe(format!("{kind:?}"), move || Device::wgpu(kind))
}

/// Returns the adapter `make` gives (a device of some GPU backend), or None when it has none;
/// probed on the first call for `key`, answered from the cache after.
fn probe(key: String, make: impl FnOnce() -> Device + std::panic::UnwindSafe) -> Option<Adapter> {
    // Held while probing: a second caller for the same kind waits for the first's answer.
    let mut probes = PROBES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, answer)) = probes.iter().find(|(k, _)| *k == key) {
        return answer.clone();
    }
    let answer = run_probe(make);
    probes.push((key, answer.clone()));
    answer
}

/// The CUDA device `index`, probed as wgpu's are; None where the build has no CUDA backend or no
/// NVIDIA driver answers.
fn probe_cuda(index: usize) -> Option<Adapter> {
    #[cfg(feature = "cuda")]
    {
        probe(format!("cuda:{index}"), move || Device::cuda(index))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = index;
        None
    }
}

/// Runs one tiny op on the device `make` gives (Burn panics when there is no such adapter or
/// driver, so the probe runs under `catch_unwind`, its panic message silenced).
fn run_probe(make: impl FnOnce() -> Device + std::panic::UnwindSafe) -> Option<Adapter> {
    PROBES_RUN.fetch_add(1, Ordering::SeqCst);
    install_quiet_probe_hook();
    PROBING.with(|p| p.set(true));
    let result = std::panic::catch_unwind(|| {
        let device = make();
        let sum: f32 = Tensor::<1>::ones([4], &device).sum().into_scalar();
        let identity = device.identity();
        (sum == 4.0).then(|| Adapter {
            name: identity
                .as_ref()
                .map(|i| i.name.clone())
                .unwrap_or_else(|| "unknown adapter".into()),
            hardware: identity.is_some_and(|i| i.physical.is_some()),
        })
    });
    PROBING.with(|p| p.set(false));
    result.ok().flatten()
}

/// Mesa's Vulkan loader (probed by `--device auto` even on machines without a GPU) prints
/// `error: XDG_RUNTIME_DIR is invalid or not set` when the variable is missing (containers, cron,
/// ssh without a session), and a successful run must not print a line that says error. When it is
/// unset, point it at a private folder of our own. Called first thing in `main`, before any
/// thread exists (setting the environment is only sound then).
pub fn give_mesa_a_runtime_dir() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
        let dir = std::env::temp_dir().join(format!("mgr-runtime-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        // Only a folder this user owns with no access for others, as the spec asks.
        let private = std::fs::metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0);
        if private {
            // SAFETY: main calls this before it starts any thread, so nothing reads the
            // environment concurrently.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

/// Picks the device, prints which, and fails clearly when wgpu is forced but absent.
pub fn select(choice: DeviceChoice, quiet: bool) -> Result<(Device, String)> {
    let (device, name) = match choice {
        DeviceChoice::Flex => (Device::flex(), "flex (CPU)".to_string()),
        DeviceChoice::Wgpu | DeviceChoice::WgpuDiscrete(_) => {
            let kind = match choice {
                DeviceChoice::WgpuDiscrete(i) => DeviceKind::DiscreteGpu(i),
                _ => DeviceKind::DefaultDevice,
            };
            match probe_wgpu(kind.clone()) {
                Some(a) => (
                    Device::wgpu(kind),
                    format!(
                        "{choice} ({}{})",
                        a.name,
                        if a.hardware { "" } else { ", software" }
                    ),
                ),
                None => bail!(
                    "--device {choice}: no such wgpu adapter (no GPU driver{}, and no CPU Vulkan device such as mesa-vulkan-drivers' lavapipe)",
                    if let DeviceChoice::WgpuDiscrete(i) = choice {
                        format!(" or fewer than {} discrete GPUs", i + 1)
                    } else {
                        String::new()
                    }
                ),
            }
        }
        DeviceChoice::Vulkan => vulkan_device()?,
        DeviceChoice::Cuda(index) => {
            if !cfg!(feature = "cuda") {
                bail!("--device {choice}: {NO_CUDA_BUILD}");
            }
            match probe_cuda(index) {
                Some(a) => (cuda_device(index), format!("{choice} ({})", a.name)),
                None => bail!(
                    "--device {choice}: no CUDA device {index} (no NVIDIA driver, or fewer than {} NVIDIA GPUs; CubeCL loads libcuda and NVRTC at run time)",
                    index + 1
                ),
            }
        }
        // CUDA first where the build has it (CubeCL's CUDA runtime is the fastest path to an
        // NVIDIA GPU), then a wgpu GPU, then the CPU.
        DeviceChoice::Auto => match probe_cuda(0) {
            Some(a) => (cuda_device(0), format!("cuda ({})", a.name)),
            None => match probe_wgpu(DeviceKind::DefaultDevice) {
                Some(a) if a.hardware => (
                    Device::wgpu(DeviceKind::DefaultDevice),
                    format!("wgpu ({}{})", a.name, no_cuda_reason()),
                ),
                Some(a) => (
                    Device::flex(),
                    format!(
                        "flex (CPU; wgpu only offers the software adapter {})",
                        a.name
                    ),
                ),
                None => (Device::flex(), "flex (CPU; no wgpu adapter)".to_string()),
            },
        },
    };
    if !quiet {
        eprintln!("device: {name}");
    }
    Ok((device, name))
}

/// Why `auto` did not take CUDA, for its line on a GPU machine.
fn no_cuda_reason() -> &'static str {
    if cfg!(feature = "cuda") {
        "; CUDA: no NVIDIA driver answered"
    } else {
        "; this build has no CUDA backend (cargo feature `cuda`)"
    }
}

/// The CUDA device `index` (only called once a probe found it).
fn cuda_device(index: usize) -> Device {
    #[cfg(feature = "cuda")]
    {
        Device::cuda(index)
    }
    #[cfg(not(feature = "cuda"))]
    {
        unreachable!("no CUDA device {index} is probed in a build without the CUDA backend")
    }
}

/// wgpu's default adapter pinned to Vulkan (SPIR-V kernels), or why not.
fn vulkan_device() -> Result<(Device, String)> {
    #[cfg(feature = "vulkan")]
    {
        let kind = DeviceKind::DefaultDevice;
        match probe("vulkan".into(), move || Device::vulkan(kind)) {
            Some(a) => Ok((
                Device::vulkan(DeviceKind::DefaultDevice),
                format!(
                    "vulkan ({}{}, SPIR-V)",
                    a.name,
                    if a.hardware { "" } else { ", software" }
                ),
            )),
            None => bail!(
                "--device vulkan: no Vulkan adapter (no GPU driver, and no CPU Vulkan device such as mesa-vulkan-drivers' lavapipe)"
            ),
        }
    }
    #[cfg(not(feature = "vulkan"))]
    {
        bail!("--device vulkan: {NO_VULKAN_BUILD}")
    }
}

/// Picks every device of a data-parallel group (one device: plain training). The name lists
/// them all.
pub fn select_all(choices: &[DeviceChoice], quiet: bool) -> Result<(Vec<Device>, String)> {
    if choices.is_empty() {
        bail!("--device: name at least one device");
    }
    let mut devices = Vec::with_capacity(choices.len());
    let mut names = Vec::with_capacity(choices.len());
    for &choice in choices {
        let (device, name) = select(choice, true)?;
        devices.push(device);
        names.push(name);
    }
    let name = if names.len() == 1 {
        names.remove(0)
    } else {
        format!(
            "data-parallel over {} devices: {}",
            names.len(),
            names.join(", ")
        )
    };
    if !quiet {
        eprintln!("device: {name}");
    }
    Ok((devices, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        for s in [
            "auto", "flex", "wgpu", "wgpu:0", "wgpu:3", "vulkan", "cuda", "cuda:1",
        ] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap().to_string(), s);
        }
        assert_eq!("cuda:0".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(0)));
        assert!(
            "cuda:one"
                .parse::<DeviceChoice>()
                .unwrap_err()
                .contains("cuda:0")
        );
        assert_eq!("cpu".parse::<DeviceChoice>(), Ok(DeviceChoice::Flex));
        assert_eq!(
            "gpu:1".parse::<DeviceChoice>(),
            Ok(DeviceChoice::WgpuDiscrete(1))
        );
        assert!(
            "wgpu:x"
                .parse::<DeviceChoice>()
                .unwrap_err()
                .contains("index")
        );
        assert!(
            "tpu"
                .parse::<DeviceChoice>()
                .unwrap_err()
                .contains("unknown device")
        );
        assert_eq!(
            parse_group("wgpu:0+wgpu:1").unwrap(),
            vec![DeviceChoice::WgpuDiscrete(0), DeviceChoice::WgpuDiscrete(1)]
        );
        assert!(parse_group("flex+").is_err());
    }

    /// Without the `cuda` feature (the test build) `--device cuda` says how to get it, `auto`
    /// never picks it; with it and no NVIDIA driver (this machine) it says there is none.
    #[test]
    fn cuda_is_refused_with_the_reason_and_auto_says_what_it_took() {
        let err = select(DeviceChoice::Cuda(1), true).unwrap_err().to_string();
        if cfg!(feature = "cuda") {
            assert!(
                err.contains("--device cuda:1") && err.contains("NVIDIA driver"),
                "{err}"
            );
        } else {
            assert!(
                err.contains("--device cuda:1") && err.contains("--features cuda"),
                "{err}"
            );
        }
        let (_, name) = select(DeviceChoice::Auto, true).unwrap();
        assert!(
            name.starts_with("flex") || name.starts_with("wgpu") || name.starts_with("cuda"),
            "{name}"
        );
        if !cfg!(feature = "vulkan") {
            let err = select(DeviceChoice::Vulkan, true).unwrap_err().to_string();
            assert!(err.contains("--features vulkan"), "{err}");
        }
    }

    #[test]
    fn concurrent_probes_run_once_per_kind_and_agree() {
        let kinds = [DeviceKind::DefaultDevice, DeviceKind::DiscreteGpu(7)];
        // Read together under the lock (real probes count under it too), so a probe by another
        // test cannot fall between the two.
        let (before, cached) = {
            let probes = PROBES.lock().unwrap();
            let cached = kinds
                .iter()
                .filter(|k| probes.iter().any(|(key, _)| *key == format!("{k:?}")))
                .count();
            (PROBES_RUN.load(Ordering::SeqCst), cached)
        };
        let answers: Vec<(usize, Option<Adapter>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let kind = kinds[i % 2].clone();
                    scope.spawn(move || (i % 2, probe_wgpu(kind)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Two kinds, eight callers: at most one real probe per kind not yet cached.
        assert_eq!(
            PROBES_RUN.load(Ordering::SeqCst) - before,
            kinds.len() - cached
        );
        for (kind, answer) in &answers {
            let first = answers.iter().find(|(k, _)| k == kind).unwrap();
            assert_eq!(
                answer, &first.1,
                "callers of one kind got different answers"
            );
        }
        // No test machine has an 8th discrete GPU: that probe's panic was caught.
        assert_eq!(answers.iter().find(|(k, _)| *k == 1).unwrap().1, None);
    }
}
