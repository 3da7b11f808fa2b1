#!/usr/bin/env bash
# The GPU comparison of issue 7, as one prepared run for a machine with an NVIDIA GPU: this
# project on wgpu against the PyTorch peer on CUDA, same shapes, batch 64 and 256, alternating.
# Needs a built `mgr` (MGR_BIN, default: the dev build) and python3 with torch.
# usage: scripts/gpu-bench.sh [PATH/TO/torch_mgr.py]  (prints one JSON object per line)
set -uo pipefail
cd "$(dirname "$0")/.."
MGR_BIN="${MGR_BIN:-${CARGO_TARGET_DIR:-target}/debug/mgr}"
PEER="${1:-../shared/bench/torch_mgr.py}"
for batch in 64 256; do
  for round in 1 2; do
    "$MGR_BIN" bench --device wgpu --batch "$batch" --steps 20 --json
    python3 scripts/torch_peer_cuda.py "$PEER" --batch "$batch" --steps 20
  done
done
