//! Device selection: a wgpu GPU adapter when there is one, else Burn's pure-Rust `flex` CPU
//! backend; several devices for data-parallel training.

use anyhow::{Result, bail};
use burn::tensor::{Device, DeviceKind, Tensor};
use std::fmt;
use std::str::FromStr;

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
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "flex" | "cpu" => Ok(DeviceChoice::Flex),
            "wgpu" | "gpu" => Ok(DeviceChoice::Wgpu),
            _ => match s.split_once(':') {
                Some(("wgpu" | "gpu", index)) => {
                    index.parse().map(DeviceChoice::WgpuDiscrete).map_err(|_| {
                        format!("`{s}`: the GPU index must be a number (wgpu:0, wgpu:1, ...)")
                    })
                }
                _ => Err(format!(
                    "unknown device `{s}` (auto, flex, cpu, wgpu, wgpu:N for the N-th GPU)"
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
struct Adapter {
    name: String,
    hardware: bool,
}

/// Tries to run one tiny op on a wgpu device; returns the adapter, or None when wgpu has no
/// such adapter (Burn panics in that case, so the probe runs under `catch_unwind`).
fn probe_wgpu(kind: DeviceKind) -> Option<Adapter> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| {
        let device = Device::wgpu(kind);
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
        DeviceChoice::Auto => match probe_wgpu(DeviceKind::DefaultDevice) {
            Some(a) if a.hardware => (
                Device::wgpu(DeviceKind::DefaultDevice),
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
        for s in ["auto", "flex", "wgpu", "wgpu:0", "wgpu:3"] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap().to_string(), s);
        }
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
}
