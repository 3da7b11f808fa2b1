#!/usr/bin/env bash
# "What the ranking is worth" (issue 46): MGR trained with each split ranking on paired seeds
# (absence seed = training seed = S), and each learned model evaluated with every other ranking
# swapped in at test time (`mgr eval --ranking`); then one table (Markdown on stdout, JSON in
# OUT/table.json) of accuracy, F1, the noise AUC within each modality (mean), the pooled AUC and
# the conflict AUC per layer, mean / sample std over the seeds.
#
#   scripts/ranking-table.sh synthetic MGR_BINARY OUT [SEEDS] [EPOCHS] [EXTRA_TRAIN_ARGS...]
#   scripts/ranking-table.sh avmnist MGR_BINARY OUT [SEEDS] [EPOCHS] --data-dir DIR [...]
#
# synthetic: kappa 0.7, rankings learned, random, inverted, oracle-noise, oracle-conflict,
# oracle-majority.
# avmnist: kappa 0.7, from scratch, learned, random, inverted (no ground truth: no oracles and no
# AUCs). A finished run is not trained again, so an interrupted table resumes.
set -euo pipefail
data=$1 mgr=$2 out=$3 seeds=${4:-4} epochs=${5:-12}
shift $(($# < 5 ? $# : 5))
extra=("$@")
case "$data" in
  synthetic) rankings=(learned random inverted oracle-noise oracle-conflict oracle-majority) ;;
  avmnist) rankings=(learned random inverted) ;;
  *) echo "ranking-table.sh: dataset synthetic or avmnist, not '$data'" >&2; exit 2 ;;
esac
mkdir -p "$out"
for ((s = 0; s < seeds; s++)); do
  for r in "${rankings[@]}"; do
    run="$out/trained-$r/s$s"
    [ -f "$run/results.json" ] && continue
    rm -rf "$run"
    "$mgr" --quiet train --dataset "$data" --method mgr --kappa 0.7 --absence-seed "$s" --seed "$s" \
      --epochs "$epochs" --device flex --set "ranking=$r" --out "$run" "${extra[@]}" >/dev/null
    echo "ranking-table: trained $r seed $s" >&2
  done
  for r in "${rankings[@]:1}"; do
    swapped="$out/swapped-$r/s$s.json"
    [ -f "$swapped" ] && continue
    mkdir -p "$out/swapped-$r"
    "$mgr" --quiet eval --run "$out/trained-learned/s$s" --ranking "$r" >"$swapped.tmp"
    mv "$swapped.tmp" "$swapped"
  done
done
python3 "$(dirname "$0")/ranking_table.py" "$out" "${rankings[@]}"
