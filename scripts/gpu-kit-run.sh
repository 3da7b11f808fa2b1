#!/usr/bin/env bash
# Runs issue 30's GPU measurements on a lent NVIDIA machine from the kit that
# `scripts/gpu-kit.sh` packed here (.gpu-kit, carried with the call), inside a time budget:
#   1. the GPU builds against the PyTorch peer on CUDA (scripts/gpu-bench.sh: batch 64 and 512,
#      training and inference, alternated; then the launch counts), until the budget less what
#      steps 2 and 3 need;
#   2. the wgpu test (the loss and every gradient against flex, with fusion and autotune on, on
#      the NVIDIA Vulkan driver);
#   3. the README's main job (--device auto), timed;
#   4. where the kit has the autotune-cache build (MGR_KIT_VARIANTS=default,cache): the main job
#      with it twice, the cache empty and then filled, to time what autotune costs a run's start.
# Everything lands in $OUT (the device tool brings it back): gpu-bench.md (the table),
# gpu-bench.jsonl, gpu-bench.log, wgpu-test.log, main-job.log, main-job-results.json, and with
# step 4 main-job-cache-cold.log and main-job-cache-warm.log.
#
# usage: scripts/gpu-kit-run.sh [SECONDS]   (the budget, default 400, 520 for a kit with the cache
#        build; the call's timeout_s must leave 80 s above it: the last measurement may run a
#        minute past its deadline)
set -uo pipefail
cd "$(dirname "$0")/.."
budget="${1:-400}"
start=$(date +%s)
kit=.gpu-kit
out="${OUT:-$kit/out}"
mkdir -p "$out"
[ -d "$kit/bin" ] || { echo "gpu-kit-run: no $kit here: run scripts/gpu-kit.sh and carry $kit" >&2; exit 2; }

# The Vulkan loader: unpacked into / (only these libraries), then the NVIDIA ICD named if the
# loader does not find it by itself.
for deb in "$kit"/gl/*.deb; do dpkg -x "$deb" /; done
ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/mgr-xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

bin=/tmp/mgr-kit
# Emptied first: on a machine still warm from an earlier call, a build that this kit does not
# hold must not run as if it did.
rm -rf "$bin"
mkdir -p "$bin"
for packed in "$kit"/bin/*.xz; do
  name=$(basename "$packed" .xz)
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$packed" "$bin/$name"
  chmod +x "$bin/$name"
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' || true

# 1. The comparison, leaving 90 s for the test and 110 s for each run of the main job.
main_jobs=1
[ -x "$bin/mgr-cache" ] && main_jobs=3
reserved=$((90 + 110 * main_jobs))
if [ $((budget - reserved)) -lt 100 ]; then
  echo "gpu-kit-run: a budget of $budget s leaves the comparison $((budget - reserved)) s after" \
    "the test and $main_jobs main job run(s); give $((reserved + 100)) or more" >&2
fi
bench_env=(OUT_DIR="$out" MGR_BENCH_UNTIL=$((start + budget - reserved)))
[ -x "$bin/mgr-default" ] && bench_env+=(MGR_BIN="$bin/mgr-default")
[ -x "$bin/mgr-nofusion" ] && bench_env+=(MGR_BIN_NOFUSION="$bin/mgr-nofusion")
[ -x "$bin/mgr-vulkan" ] && bench_env+=(MGR_BIN_VULKAN="$bin/mgr-vulkan")
env "${bench_env[@]}" scripts/gpu-bench.sh "$kit/torch_mgr.py"

# 2. Correctness on this GPU.
if [ -x "$bin/wgpu-test" ]; then
  left=$((start + budget - 110 * main_jobs - $(date +%s)))
  if [ "$left" -gt 20 ]; then
    timeout "$left" "$bin/wgpu-test" --test-threads=1 >"$out/wgpu-test.log" 2>&1
    echo "gpu-kit-run: wgpu test exit $? (wgpu-test.log)"
    tail -4 "$out/wgpu-test.log"
  fi
fi

main_job() { # binary name seconds: the README's main job, as a user with this GPU runs it
  local begun status seconds
  begun=$(date +%s.%N)
  timeout "$3" "$1" train --dataset synthetic --method mgr --kappa 0.7 \
    --absence-seed 0 --seed 0 --epochs 12 --device auto --out "/tmp/mgr-$2" \
    >"$out/$2.log" 2>&1
  status=$?
  seconds=$(python3 -c "import sys, time; print(round(time.time() - float(sys.argv[1]), 1))" "$begun")
  echo "gpu-kit-run: $2 exit $status in $seconds s ($2.log)" | tee -a "$out/$2.log"
}

# 3. The main job with the default build.
left=$((start + budget - 110 * (main_jobs - 1) - $(date +%s)))
if [ "$left" -gt 20 ]; then
  main_job "$bin/mgr-default" main-job "$left"
  cp /tmp/mgr-main-job/results.json "$out/main-job-results.json" 2>/dev/null || true
fi

# 4. With the autotune cache: the first run autotunes and stores its choices (in target/environment
# of this directory), the second reads them.
if [ -x "$bin/mgr-cache" ]; then
  rm -rf target/environment
  for run in cold warm; do
    left=$((start + budget - $(date +%s)))
    [ "$run" = cold ] && left=$((left - 110))
    [ "$left" -gt 20 ] && main_job "$bin/mgr-cache" "main-job-cache-$run" "$left"
  done
fi
echo "gpu-kit-run: done in $(($(date +%s) - start)) s"
