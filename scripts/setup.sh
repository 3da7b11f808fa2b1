#!/usr/bin/env bash
# Installs what the main job needs on a fresh Debian machine (the README's first command);
# skips what is already there. The test command's own tools (the page's build, the browser)
# come from scripts/setup-tests.sh, which scripts/test.sh runs after this one.
# - wasm32 target (the model crate builds for the browser; a download, no compile); clippy and
#   rustfmt (test.sh runs both)
# - mesa-vulkan-drivers: a CPU Vulkan device (lavapipe) so the wgpu backend runs without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || missing+=(mesa-vulkan-drivers libvulkan1)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
for component in clippy rustfmt; do
  rustup component list --installed | grep -q "^$component" || rustup component add "$component"
done
