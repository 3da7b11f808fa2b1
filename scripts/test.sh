#!/usr/bin/env bash
# Every test of the project: set-up, the workspace tests (unit, integration, wgpu on a CPU
# Vulkan device, the real-data tests), the wasm32 build of the model crate, and the browser
# end-to-end test.
#
# The build is cargo's default target/ in the clone (or $CARGO_TARGET_DIR), the one the README's
# main job uses: same directory, profile and features, so a newcomer who runs both compiles Burn
# once (checked at the end of the cargo tests). Only .ci/run moves it outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Mesa's Vulkan loader (lavapipe, for the wgpu test) wants a runtime dir.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/mgr-xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

scripts/setup.sh
cargo fmt --all --check
cargo test --workspace --no-fail-fast
# The main job's command reuses this build: nothing of Burn is compiled again.
main_job_build=$(cargo build -p mgr-trainer --bin mgr 2>&1)
if grep -q "Compiling burn" <<<"$main_job_build"; then
  echo "test.sh: the README's main job (cargo run -p mgr-trainer) compiles Burn a second time:" >&2
  echo "$main_job_build" >&2
  exit 1
fi
cargo build -p mgr --target wasm32-unknown-unknown
if [ -x scripts/web-e2e.sh ]; then
  scripts/web-e2e.sh
fi
