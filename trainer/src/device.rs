//! Device selection: a wgpu GPU adapter when there is one, else Burn's pure-Rust `flex` CPU
//! backend.

use anyhow::{Result, bail};
use burn::tensor::{Device, Tensor};

/// What the user asked for with `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A wgpu GPU adapter if one exists, else the flex CPU backend.
    Auto,
    /// Burn's pure-Rust CPU backend.
    Flex,
    /// wgpu on whatever adapter it finds (a GPU, or a CPU Vulkan device such as lavapipe).
    Wgpu,
}

/// Tries to run one tiny op on wgpu; returns the adapter's description, or None when wgpu has
/// no adapter (Burn panics in that case, so the probe runs under `catch_unwind`).
fn probe_wgpu() -> Option<String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| {
        let device = Device::wgpu(Default::default());
        let sum: f32 = Tensor::<1>::ones([4], &device).sum().into_scalar();
        (sum == 4.0).then(|| format!("{device:?}"))
    });
    std::panic::set_hook(hook);
    result.ok().flatten()
}

/// Whether the adapter description looks like a software (CPU) Vulkan device.
fn is_software(description: &str) -> bool {
    let d = description.to_lowercase();
    ["llvmpipe", "lavapipe", "swiftshader", "cpu"].iter().any(|s| d.contains(s))
}

/// Picks the device, prints which, and fails clearly when wgpu is forced but absent.
pub fn select(choice: DeviceChoice, quiet: bool) -> Result<(Device, String)> {
    let (device, name) = match choice {
        DeviceChoice::Flex => (Device::flex(), "flex (CPU)".to_string()),
        DeviceChoice::Wgpu => match probe_wgpu() {
            Some(desc) => (Device::wgpu(Default::default()), format!("wgpu ({desc})")),
            None => bail!("--device wgpu: no wgpu adapter found (no GPU driver and no CPU Vulkan device such as mesa-vulkan-drivers' lavapipe)"),
        },
        DeviceChoice::Auto => match probe_wgpu() {
            Some(desc) if !is_software(&desc) => (Device::wgpu(Default::default()), format!("wgpu ({desc})")),
            Some(desc) => (Device::flex(), format!("flex (CPU; wgpu only offers the software adapter {desc})")),
            None => (Device::flex(), "flex (CPU; no wgpu adapter)".to_string()),
        },
    };
    if !quiet {
        eprintln!("device: {name}");
    }
    Ok((device, name))
}
