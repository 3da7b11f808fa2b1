#!/usr/bin/env bash
# The page's inference time in headless Chromium (tests/e2e/timing.mjs): builds the page with
# trunk (PROFILE=release for `trunk build --release`; the dev profile by default, as the e2e
# test builds it), serves dist/ on localhost and prints the median over ROUNDS (40) changes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PROFILE:-dev}" = release ]; then trunk build --offline --release; else trunk build --offline; fi
(cd tests/e2e && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --silent; })
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 -d dist >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
BASE_URL="http://127.0.0.1:$port" node tests/e2e/timing.mjs
