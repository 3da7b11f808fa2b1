#!/usr/bin/env bash
# Every test of the project: set-up, formatting, clippy (native, every target, and the page for
# wasm32, which checks the model crate builds there), the workspace tests (unit, integration,
# wgpu on a CPU Vulkan device, the real-data tests), the PyTorch golden check, and the browser
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
scripts/setup-tests.sh
cargo fmt --all --check
# No function over 80 lines as a reader scrolls it: clippy's too_many_lines (below) counts only
# lines with code, so comments and blank lines let a longer one pass.
scripts/fn_length.py
# too_many_lines at clippy.toml's 80: a function that long is split where its parts say what
# they do (end-to-end tests that read as one story allow it in their file).
cargo clippy --workspace --all-targets -- -D warnings -W clippy::too_many_lines
# The page and the model crate as the browser gets them (trunk builds the page again below).
cargo clippy -p mgr-web --target wasm32-unknown-unknown -- -D warnings -W clippy::too_many_lines
cargo test --workspace --no-fail-fast
# The main job's command reuses this build: nothing of Burn is compiled again.
main_job_build=$(cargo build -p mgr-trainer --bin mgr 2>&1)
if grep -q "Compiling burn" <<<"$main_job_build"; then
  echo "test.sh: the README's main job (cargo run -p mgr-trainer) compiles Burn a second time:" >&2
  echo "$main_job_build" >&2
  exit 1
fi
# The PyTorch golden check: our model against ../shared/bench/torch_mgr.py on the same weights
# and samples, once with the project's readings of the refinement layer and once with the
# peer's own (scripts/torch_golden.py). It needs torch; .ci/run provides it (scripts/torch-venv.sh).
python="${MGR_PYTHON:-python3}"
if "$python" -c "import torch, safetensors" 2>/dev/null; then
  mgr="${CARGO_TARGET_DIR:-target}/debug/mgr"
  golden=$(mktemp -d)
  trap 'rm -rf "$golden"' EXIT
  tiny=(--dataset synthetic --method mgr --epochs 1 --device flex --set synthetic.n_train=96
    --set synthetic.n_valid=48 --set synthetic.n_test=48 --set d_model=16 --set n_heads=2)
  "$mgr" --quiet train "${tiny[@]}" --out "$golden/defaults" >/dev/null
  "$python" scripts/torch_golden.py --mgr "$mgr" --run "$golden/defaults"
  "$mgr" --quiet train "${tiny[@]}" --out "$golden/peer-reading" --set refine_input_norm=false \
    --set attention_residual=false --set refine_residual=false --set score_gate=signed \
    --set alpha_f=0.5 >/dev/null
  "$python" scripts/torch_golden.py --mgr "$mgr" --run "$golden/peer-reading"
else
  echo "test.sh: torch and safetensors are not importable by $python: the PyTorch golden check" \
    "(scripts/torch_golden.py) did not run. scripts/torch-venv.sh installs them (.ci/run does)."
fi
if [ -x scripts/web-e2e.sh ]; then
  scripts/web-e2e.sh
fi
