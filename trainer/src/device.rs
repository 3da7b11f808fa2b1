//! Device selection: a wgpu GPU adapter when there is one, else Burn's pure-Rust `flex` CPU
//! backend.

use anyhow::{Result, bail};
use burn::tensor::{Device, Tensor};

/// What the user asked for with `--device`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A wgpu GPU adapter if one exists, else the flex CPU backend.
    Auto,
    /// Burn's pure-Rust CPU backend.
    Flex,
    /// wgpu on whatever adapter it finds (a GPU, or a CPU Vulkan device such as lavapipe).
    Wgpu,
}

/// What wgpu found: the adapter's name and whether it is a real card (not a CPU or a software
/// rasterizer such as lavapipe).
struct Adapter {
    name: String,
    hardware: bool,
}

/// Tries to run one tiny op on wgpu; returns the adapter, or None when wgpu has no adapter
/// (Burn panics in that case, so the probe runs under `catch_unwind`).
fn probe_wgpu() -> Option<Adapter> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| {
        let device = Device::wgpu(Default::default());
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
    std::panic::set_hook(hook);
    result.ok().flatten()
}

/// Picks the device, prints which, and fails clearly when wgpu is forced but absent.
pub fn select(choice: DeviceChoice, quiet: bool) -> Result<(Device, String)> {
    let (device, name) = match choice {
        DeviceChoice::Flex => (Device::flex(), "flex (CPU)".to_string()),
        DeviceChoice::Wgpu => match probe_wgpu() {
            Some(a) => (
                Device::wgpu(Default::default()),
                format!(
                    "wgpu ({}{})",
                    a.name,
                    if a.hardware { "" } else { ", software" }
                ),
            ),
            None => bail!(
                "--device wgpu: no wgpu adapter found (no GPU driver and no CPU Vulkan device such as mesa-vulkan-drivers' lavapipe)"
            ),
        },
        DeviceChoice::Auto => match probe_wgpu() {
            Some(a) if a.hardware => (
                Device::wgpu(Default::default()),
                format!("wgpu ({})", a.name),
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
    };
    if !quiet {
        eprintln!("device: {name}");
    }
    Ok((device, name))
}
