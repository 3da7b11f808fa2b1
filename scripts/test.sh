#!/usr/bin/env bash
# Every test of the project: set-up, the workspace tests (unit, integration, wgpu on a CPU
# Vulkan device, the real-data tests), the wasm32 build of the model crate, and the browser
# end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mgr-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Mesa's Vulkan loader (lavapipe, for the wgpu test) wants a runtime dir.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/mgr-xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

scripts/setup.sh
cargo fmt --all --check
cargo test --workspace --no-fail-fast
cargo build -p mgr --target wasm32-unknown-unknown
if [ -x scripts/web-e2e.sh ]; then
  scripts/web-e2e.sh
fi
