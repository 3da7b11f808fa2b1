#!/usr/bin/env bash
# The GPU comparison of issue 30, as one prepared run for a machine with an NVIDIA GPU: this
# project's GPU builds against the PyTorch peer on CUDA (same model and shapes), at batch 64 and
# 512, training and inference, each build and the peer alternated twice; then the launch counts,
# and a table of samples/s with the ratio to PyTorch (markdown, on stderr's last lines and in
# $OUT_DIR/gpu-bench.md).
#
# Builds (fusion is compile-time, so each variant is its own binary; unset ones are skipped):
#   MGR_BIN           the default build: wgpu with Burn's fusion and autotune
#                     (cargo build --release -p mgr-trainer)
#   MGR_BIN_NOFUSION  wgpu without them (... --no-default-features)
#   MGR_BIN_VULKAN    wgpu pinned to Vulkan with SPIR-V kernels (... --features vulkan)
#   MGR_BIN_CUDA      Burn's CUDA backend (... --features cuda; its build downloads LLVM, so
#                     build it where there is internet and copy the binary)
# The default build also runs three times more, to weigh three choices made for GPUs without one
# at hand (MGR_BENCH_COMPARE, default "rows ops heads"; empty for none):
#   rows  `--rows gathered`: the present samples' rows alone, instead of every sample's with the
#         absent ones masked (fewer launches; at the bench's mask, a third of each modality's
#         samples absent, 1.5x the arithmetic in the tokenizers and unimodal encoders)
#   ops   `--unfused`: Burn's own layers (one product over every token for a weight's gradient),
#         instead of the per-sample parameter gradients of kernels/per_sample.rs
#   heads `--head-layout token-major`: the attentions' Q, K, V as [B, T, d], each head copied
#         before its products, instead of feature-major [B, d, T] (fewer launches; on lavapipe,
#         a CPU, 6-10% slower training)
# Needs python3 with torch (CUDA) for the peer.
#
# How much it runs (a lent GPU machine is lent for minutes): MGR_BENCH_BATCHES (default
# "64 512"), MGR_BENCH_ROUNDS (2), MGR_BENCH_STEPS (20), and MGR_BENCH_UNTIL, a time in seconds
# since the epoch after which no new measurement starts and none runs on for more than a
# minute (the table is still written). Round 1 measures every batch before round 2 begins, the
# default build and the peer first in each round, and the launch counts come last, so a run cut
# short by MGR_BENCH_UNTIL has the default build against the peer at each batch first. Each
# program's messages go to $OUT_DIR/gpu-bench.log.
# usage: scripts/gpu-bench.sh [PATH/TO/torch_mgr.py]   (one JSON object per measurement)
set -uo pipefail
cd "$(dirname "$0")/.."
PEER="${1:-../shared/bench/torch_mgr.py}"
OUT_DIR="${OUT_DIR:-${CARGO_TARGET_DIR:-target}/gpu-bench}"
batches="${MGR_BENCH_BATCHES:-64 512}"
rounds="${MGR_BENCH_ROUNDS:-2}"
steps="${MGR_BENCH_STEPS:-20}"
until_s="${MGR_BENCH_UNTIL:-}"
compare="${MGR_BENCH_COMPARE-rows ops heads}"
mkdir -p "$OUT_DIR"
results="$OUT_DIR/gpu-bench.jsonl"
log="$OUT_DIR/gpu-bench.log"
: > "$results"
: > "$log"
default_bin="${CARGO_TARGET_DIR:-target}/release/mgr"
main_bin="${MGR_BIN:-$default_bin}"
# Each variant: name|binary|device|extra bench flags. `first` runs beside the peer before the rest.
first=()
variants=()
if [ -x "$main_bin" ]; then
  first+=("wgpu+fusion|$main_bin|wgpu|")
  for c in $compare; do
    case "$c" in
      rows) variants+=("wgpu+fusion rows=gathered|$main_bin|wgpu|--rows gathered") ;;
      ops) variants+=("wgpu+fusion burn-ops|$main_bin|wgpu|--unfused") ;;
      heads) variants+=("wgpu+fusion heads=token-major|$main_bin|wgpu|--head-layout token-major") ;;
      *) echo "gpu-bench: MGR_BENCH_COMPARE: no comparison named $c (rows, ops, heads)" >&2; exit 2 ;;
    esac
  done
fi
[ -n "${MGR_BIN_NOFUSION:-}" ] && variants+=("wgpu|$MGR_BIN_NOFUSION|wgpu|")
[ -n "${MGR_BIN_VULKAN:-}" ] && variants+=("vulkan+fusion|$MGR_BIN_VULKAN|vulkan|")
[ -n "${MGR_BIN_CUDA:-}" ] && variants+=("cuda+fusion|$MGR_BIN_CUDA|cuda|")
[ $((${#first[@]} + ${#variants[@]})) -gt 0 ] || { echo "gpu-bench: no mgr build found (MGR_BIN, $default_bin)" >&2; exit 2; }

record() { # variant json-line
  python3 -c 'import json,sys; d=json.loads(sys.argv[2]); d["variant"]=sys.argv[1]; print(json.dumps(d))' "$1" "$2" \
    | tee -a "$results"
}

time_left() {
  [ -z "$until_s" ] || [ "$(date +%s)" -lt "$until_s" ] || { echo "gpu-bench: out of time" >>"$log"; return 1; }
}

measure() { # name command...
  local name="$1" line
  shift
  time_left || return 0
  # No program runs past the deadline by more than a minute (nor any for over 10 minutes).
  local cap=600
  [ -z "$until_s" ] || cap=$((until_s - $(date +%s) + 60))
  echo "== $name (at most ${cap} s): $*" >>"$log"
  line=$(timeout "$cap" "$@" 2>>"$log" | tail -1)
  local status=$?  # the program's, under pipefail
  if [ -n "$line" ] && [ "$status" -eq 0 ]; then
    record "$name" "$line"
  else
    echo "gpu-bench: $name gave no result (exit $status; $log)" | tee -a "$log" >&2
  fi
}

bench_variant() { # variant batch [more flags...]
  local name bin device flags
  IFS='|' read -r name bin device flags <<<"$1"
  local batch="$2"
  shift 2
  # shellcheck disable=SC2086  # flags: words, by construction
  measure "$name$suffix" "$bin" --quiet bench --device "$device" --batch "$batch" $flags "$@" --json
}

suffix=""
for round in $(seq 1 "$rounds"); do
  for batch in $batches; do
    for v in ${first[@]+"${first[@]}"}; do bench_variant "$v" "$batch" --steps "$steps"; done
    measure pytorch-cuda python3 scripts/torch_peer_cuda.py "$PEER" --batch "$batch" --steps "$steps"
  done
  for batch in $batches; do
    for v in ${variants[@]+"${variants[@]}"}; do bench_variant "$v" "$batch" --steps "$steps"; done
  done
done
suffix=" launches"
for batch in $batches; do
  for v in ${first[@]+"${first[@]}"} ${variants[@]+"${variants[@]}"}; do bench_variant "$v" "$batch" --launches; done
done

python3 - "$results" <<'EOF' | tee "$OUT_DIR/gpu-bench.md" >&2
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(variant, batch, key):
    v = [r[key] for r in rows if r.get("variant") == variant and r.get("batch") == batch and key in r]
    return statistics.median(v) if v else None
variants = sorted({r["variant"] for r in rows if not r["variant"].endswith("launches")})
print("| build | batch | train samples/s | x PyTorch | infer samples/s | x PyTorch | launches/step (train, infer) | runs | device |")
print("|---|---|---|---|---|---|---|---|---|")
for batch in sorted({r["batch"] for r in rows if "batch" in r}):
    base_t, base_i = med("pytorch-cuda", batch, "train_samples_per_s"), med("pytorch-cuda", batch, "infer_samples_per_s")
    for v in variants:
        t, i = med(v, batch, "train_samples_per_s"), med(v, batch, "infer_samples_per_s")
        if t is None:
            continue
        ratio = lambda x, b: f"{x / b:.2f}" if b else "-"
        lt, li = med(v + " launches", batch, "train_launches_per_step"), med(v + " launches", batch, "infer_launches_per_batch")
        launches = f"{lt:.0f}, {li:.0f}" if lt is not None else "-"
        runs = [r for r in rows if r.get("variant") == v and r.get("batch") == batch]
        device = runs[0].get("device", runs[0].get("impl", ""))
        print(f"| {v} | {batch} | {t:.0f} | {ratio(t, base_t)} | {i:.0f} | {ratio(i, base_i)} | {launches} | {len(runs)} | {device} |")
EOF
