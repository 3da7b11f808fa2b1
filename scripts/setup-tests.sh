#!/usr/bin/env bash
# Installs what the test command needs beyond scripts/setup.sh (which the main job needs):
# skips what is already there. scripts/test.sh runs both.
# - chromium + chromium-driver, fonts, node/npm: the browser end-to-end test
# - binaryen (wasm-opt), trunk and wasm-bindgen-cli from crates.io: build the web demo offline
# - numpy for the scripts' checks
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v wasm-opt >/dev/null 2>&1 || missing+=(binaryen)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
command -v curl >/dev/null 2>&1 || missing+=(curl)
python3 -c 'import numpy' 2>/dev/null || python3 -m pip install -q numpy
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-tests: installing ${missing[*]}"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if [ -d web ] && [ -f index.html ]; then
  want_trunk=0.21.14
  if ! trunk --version 2>/dev/null | grep -q "$want_trunk"; then
    # trunk's own release profile is fat LTO in one codegen unit: a build tool does not need
    # it, and without it the install takes 4 min 41 s instead of 5 min 54 s on 2 cores
    # (docs/RESULTS.md, issue 47).
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
      cargo install --locked trunk --version "$want_trunk"
  fi
  want_bindgen=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
  if [ -n "$want_bindgen" ] && ! wasm-bindgen --version 2>/dev/null | grep -q "$want_bindgen"; then
    cargo install wasm-bindgen-cli --version "$want_bindgen"
  fi
fi
