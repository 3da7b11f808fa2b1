#!/usr/bin/env bash
# Packs, on a build machine, what a lent GPU machine needs to take issue 30's measurements in one
# call: that machine has the NVIDIA driver, python3 with PyTorch on CUDA and 16 cores, but no
# cargo, no crates, no internet and no Vulkan loader, and a call carries at most 64 MiB. So the
# trainer's GPU builds and the wgpu test are compiled here, stripped and xz-compressed, and the
# kit holds them with the PyTorch peer and the Vulkan loader's Debian packages. On the GPU
# machine `scripts/gpu-kit-run.sh` unpacks and runs them (README, "Devices").
#
# usage: scripts/gpu-kit.sh                  (variants default,nofusion,vulkan)
#        MGR_KIT_VARIANTS=default scripts/gpu-kit.sh
# Variants: default (fusion + autotune), nofusion (--no-default-features), vulkan (--features
# vulkan), cache (--features autotune-cache: not in the default set, 17 MiB packed, so the kit
# holds it instead of nofusion and vulkan; with it gpu-kit-run.sh also times the main job with a
# cold and then a warm autotune cache, and wants a budget of 520 s). The CUDA
# build cannot be made here (its build script downloads LLVM). Builds from nothing take long
# (each Burn feature set compiles Burn's GPU crates again); reruns are quick.
# Writes .gpu-kit/ (ignored by git) and prints its size and the call that carries it.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=.gpu-kit
target="${CARGO_TARGET_DIR:-target}"
variants="${MGR_KIT_VARIANTS:-default,nofusion,vulkan}"
peer="${MGR_PEER:-../shared/bench/torch_mgr.py}"
[ -f "$peer" ] || { echo "gpu-kit: the PyTorch peer $peer is missing (MGR_PEER)" >&2; exit 2; }
for tool in strip xz apt-get python3; do
  command -v "$tool" >/dev/null || { echo "gpu-kit: $tool is not installed" >&2; exit 2; }
done

staging="$kit.new"
rm -rf "$staging"
mkdir -p "$staging/bin" "$staging/gl"

pack() { # name executable
  strip -o "$staging/bin/$1" "$2"
  xz -T0 -9 "$staging/bin/$1"
}

for variant in ${variants//,/ }; do
  case "$variant" in
    default) flags=() ;;
    nofusion) flags=(--no-default-features) ;;
    vulkan) flags=(--features vulkan) ;;
    cache) flags=(--features autotune-cache) ;;
    *) echo "gpu-kit: unknown variant '$variant' (default, nofusion, vulkan, cache)" >&2; exit 2 ;;
  esac
  echo "gpu-kit: building mgr ($variant)" >&2
  cargo build --release -p mgr-trainer --bin mgr "${flags[@]}"
  pack "mgr-$variant" "$target/release/mgr"
done
# Each build above replaced $target/release/mgr; leave the default one there, which the README's
# bench commands and gpu-bench.sh's MGR_BIN default take (a relink when it was built before).
if [ "${variants//,/ }" != "default" ]; then
  cargo build --release -p mgr-trainer --bin mgr
fi

# The wgpu test (loss and every gradient against flex, with fusion and autotune), from the test
# build (the whole workspace, as scripts/test.sh builds it: one package alone would resolve other
# features and compile Burn again).
echo "gpu-kit: building the wgpu test" >&2
wgpu_test=$(cargo test --workspace --no-run --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "wgpu":
        print(m["executable"])')
[ -x "$wgpu_test" ] || { echo "gpu-kit: no wgpu test executable" >&2; exit 1; }
pack wgpu-test "$wgpu_test"

cp "$peer" "$staging/torch_mgr.py"
# The Vulkan loader and GL dispatch libraries for x86-64 (the lent machine's image has the
# NVIDIA driver's ICD but no loader; /work/.library/device/README.md).
(cd "$staging/gl" && apt-get -qq download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 \
  libgles2)

rm -rf "$kit"
mv "$staging" "$kit"
size=$(du -sm "$kit" | cut -f1)
du -h "$kit"/bin/* "$kit"/torch_mgr.py | sed 's/^/gpu-kit: /' >&2
echo "gpu-kit: $kit is $size MiB (a call carries at most 64 MiB with the working tree)" >&2
if [ "$size" -gt 56 ]; then
  echo "gpu-kit: too large to carry with the working tree; pack fewer variants" >&2
  exit 1
fi
if [ -f "$kit/bin/mgr-cache.xz" ]; then
  echo "gpu-kit: on the GPU machine: run(command='scripts/gpu-kit-run.sh 520', carry=['$kit'], timeout_s=600)" >&2
else
  echo "gpu-kit: on the GPU machine: run(command='scripts/gpu-kit-run.sh', carry=['$kit'], timeout_s=480)" >&2
fi
