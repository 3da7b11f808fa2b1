#!/usr/bin/env bash
# Builds the page with trunk (offline, installed tools only), serves dist/ on localhost and
# drives it in Debian's headless Chromium with playwright-core; screenshots go to
# $CARGO_TARGET_DIR/e2e/ (target/e2e/ by default).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${CARGO_TARGET_DIR:-target}/e2e"
mkdir -p "$out"

# The page as a user builds it for a static host: the wasm-release profile and the installed
# wasm-opt (index.html); the test measures what its default view downloads.
trunk build --offline --release
sample=3
# `cargo test --workspace` builds the examples with the workspace's features and every member's
# dev-dependencies; `--no-run` here resolves exactly the same (a `cargo build --examples` would
# leave out the dev-dependencies of members without examples, and compile Burn again).
cargo test -q --workspace --no-run
expected="${CARGO_TARGET_DIR:-target}/debug/examples/expected"
"$expected" web/assets/model "$sample" > "$out/expected-full.json"
"$expected" web/assets/model "$sample" audio > "$out/expected-drop.json"
av_sample=5
"$expected" web/assets/model-avmnist "$av_sample" > "$out/expected-av.json"
"$expected" web/assets/model-avmnist "$av_sample" audio > "$out/expected-av-drop.json"
# The shipped weights are half precision: the same views from their f32 originals, which the
# page must match within half precision's tolerance (web/reference/README.md).
"$expected" --weights web/reference/model.f32.bpk web/assets/model "$sample" > "$out/expected-full-f32.json"
"$expected" --weights web/reference/model.f32.bpk web/assets/model "$sample" audio > "$out/expected-drop-f32.json"
"$expected" --weights web/reference/model-avmnist.f32.bpk web/assets/model-avmnist "$av_sample" audio > "$out/expected-av-drop-f32.json"
# The page's ranking control: each reference ranking's view of the sample, natively.
for ranking in random inverted oracle-noise oracle-conflict oracle-majority; do
  "$expected" --ranking "$ranking" web/assets/model "$sample" > "$out/expected-ranking-$ranking.json"
done

# A model folder whose weights are over the page's 64 MB limit (sparse: no disk used), to check
# the page refuses it from its announced size.
mkdir -p dist/big
cp web/assets/model/model.json dist/big/model.json
rm -f dist/big/model.bpk && truncate -s 65M dist/big/model.bpk

(cd tests/e2e && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --silent; })

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 -d dist > "$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done

BASE_URL="http://127.0.0.1:$port" SAMPLE=$sample SHOT_DIR="$out" \
  EXPECTED_FULL="$out/expected-full.json" EXPECTED_DROP="$out/expected-drop.json" \
  EXPECTED_AV="$out/expected-av.json" EXPECTED_AV_DROP="$out/expected-av-drop.json" \
  EXPECTED_F32="$out/expected-full-f32.json,$out/expected-drop-f32.json,$out/expected-av-drop-f32.json" \
  EXPECTED_RANKING_DIR="$out" \
  node tests/e2e/e2e.mjs
