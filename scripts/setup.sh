#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine; skips what is already there.
# - wasm32 target (the model crate builds for the browser); clippy and rustfmt (test.sh runs both)
# - mesa-vulkan-drivers: a CPU Vulkan device (lavapipe) so the wgpu backend is tested without a GPU
# - chromium + chromium-driver: the browser end-to-end test
# - trunk and wasm-bindgen-cli from crates.io: build the web demo offline
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || missing+=(mesa-vulkan-drivers libvulkan1)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v wasm-opt >/dev/null 2>&1 || missing+=(binaryen)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
command -v curl >/dev/null 2>&1 || missing+=(curl)
python3 -c 'import numpy' 2>/dev/null || python3 -m pip install -q numpy
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
for component in clippy rustfmt; do
  rustup component list --installed | grep -q "^$component" || rustup component add "$component"
done

if [ -d web ] && [ -f index.html ]; then
  want_trunk=0.21.14
  if ! trunk --version 2>/dev/null | grep -q "$want_trunk"; then
    cargo install --locked trunk --version "$want_trunk"
  fi
  want_bindgen=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
  if [ -n "$want_bindgen" ] && ! wasm-bindgen --version 2>/dev/null | grep -q "$want_bindgen"; then
    cargo install wasm-bindgen-cli --version "$want_bindgen"
  fi
fi
