#!/usr/bin/env bash
# Does a change alter what `mgr` computes? Runs a fixed set of commands with one binary into a
# folder; run it with the binary before and after the change, then compare the two folders.
#
#   scripts/same-results.sh run MGR_BINARY OUT [AVMNIST_DIR]   # AV-MNIST parts need a prepared folder
#                                    (and the raw MNIST / FSDD in $MGR_RAW_DATA, default ../shared/data)
#   scripts/same-results.sh compare OUT_BEFORE OUT_AFTER       # prints "same", or each difference
#
# Compared: every JSON (keys sorted; timings, paths and dates left out), CSV (the seconds
# column left out), Markdown and text output (paths and durations masked), and the tensor data
# of weights and samples files (past their headers, which hold random parameter ids).
set -uo pipefail

run() {
  local mgr=$1 out=$2 av=${3:-}
  rm -rf "$out" && mkdir -p "$out"
  export RAYON_NUM_THREADS=1 # one summation order
  set -e
  "$mgr" train --quiet --dataset synthetic --method mgr --kappa 0.7 --absence-seed 1 --seed 2 \
    --epochs 2 --device flex --out "$out/syn-mgr" >"$out/syn-mgr.txt" 2>&1
  "$mgr" train --quiet --dataset synthetic --method maps --kappa 0.5 --absence-seed 0 --seed 1 \
    --epochs 2 --device flex --set train.schedule=warmup-cosine --out "$out/syn-maps" \
    >"$out/syn-maps.txt" 2>&1
  "$mgr" eval --run "$out/syn-mgr" --kappa 1.0 --absence-seed 3 >"$out/eval.txt" 2>&1
  "$mgr" protocol --dataset synthetic --methods baseline,msps --absence-seeds 1 --seeds 2 \
    --epochs 1 --devices flex --out "$out/proto" >"$out/proto.txt" 2>&1
  "$mgr" protocol --dataset synthetic --methods mgr --absence-seeds 1 --seeds 1 --epochs 1 \
    --sweep rho=0.3,0.7 --devices flex --out "$out/sweep" >"$out/sweep.txt" 2>&1
  # f32: export-web refuses half precision when it flips a prediction, as it may for these
  # 2-epoch models; the comparison is of the computation, not of the rounding.
  "$mgr" export-web --run "$out/syn-mgr" --out "$out/web" --precision f32 >"$out/export-web.txt" 2>&1
  "$mgr" export --run "$out/syn-mgr" --out "$out/export/model.safetensors" >"$out/export.txt" 2>&1
  if [ -n "$av" ]; then
    "$mgr" train --quiet --dataset avmnist --data-dir "$av" --method mgr --kappa 0.7 --epochs 1 \
      --set limit=600 --device flex --out "$out/av-mgr" >"$out/av-mgr.txt" 2>&1
    local raw="${MGR_RAW_DATA:-$(dirname "$0")/../../shared/data}"
    "$mgr" export-web --run "$out/av-mgr" --out "$out/av-web" --precision f32 --mnist-dir "$raw/mnist" \
      --fsdd-dir "$raw/fsdd" >"$out/av-web.txt" 2>&1
  fi
  set +e
  echo "wrote $out"
}

normalise() {
  python3 - "$1" <<'PY'
import json, re, sys
path = sys.argv[1]
volatile = {"train_seconds", "seconds", "data_dir", "run", "out", "path", "mnist_dir", "fsdd_dir"}
def strip(o):
    if isinstance(o, dict):
        return {k: strip(v) for k, v in o.items() if k not in volatile}
    if isinstance(o, list):
        return [strip(x) for x in o]
    return o
if path.endswith(".json"):
    print(json.dumps(strip(json.load(open(path))), indent=1, sort_keys=True))
elif path.endswith("metrics.csv"):
    for line in open(path):
        print(",".join(line.rstrip("\n").split(",")[:-1]))
else:
    text = open(path, errors="replace").read()
    text = re.sub(r"(/[\w.+-]+)+", "PATH", text)
    print(re.sub(r"\d+(\.\d+)?\s*(s|ms|min)\b", "T", text))
PY
}

same_tensors() {
  python3 - "$1" "$2" <<'PY'
import json, struct, sys
def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items()}
sys.exit(0 if tensors(sys.argv[1]) == tensors(sys.argv[2]) else 1)
PY
}

compare() {
  local a=$1 b=$2 rc=0 f
  while IFS= read -r f; do
    if [ ! -f "$b/$f" ]; then echo "only in $a: $f"; rc=1; continue; fi
    if ! diff <(normalise "$a/$f") <(normalise "$b/$f") >/dev/null; then
      echo "differs: $f"; diff <(normalise "$a/$f") <(normalise "$b/$f") | head -8; rc=1
    fi
  done < <(cd "$a" && find . -type f \( -name '*.json' -o -name '*.csv' -o -name '*.md' -o -name '*.txt' \) | sort)
  while IFS= read -r f; do
    cmp -s <(tail -c +16385 "$a/$f") <(tail -c +16385 "$b/$f") || { echo "data differs: $f"; rc=1; }
  done < <(cd "$a" && find . -type f -name '*.bpk' | sort)
  # safetensors: tensor by tensor (the header holds the config, so its length may change alone;
  # the JSON beside each file compares the config).
  while IFS= read -r f; do
    same_tensors "$a/$f" "$b/$f" || { echo "data differs: $f"; rc=1; }
  done < <(cd "$a" && find . -type f -name '*.safetensors' | sort)
  [ $rc = 0 ] && echo same
  return $rc
}

case "${1:-}" in
  run) shift; run "$@" ;;
  compare) shift; compare "$@" ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
