"""The table of scripts/ranking-table.sh: one row per (ranking, trained or swapped in at test).

Reads OUT/trained-RANKING/sS/results.json and OUT/swapped-RANKING/sS.json (what `mgr eval`
prints); writes OUT/table.json and prints the Markdown table. Mean / sample std over the seeds;
AUCs per refinement layer (layer 0 / layer 1), on complete test inputs (the first 300 samples).
"""

import json
import statistics
import sys
from pathlib import Path


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    if len(values) == 1:
        return (values[0], 0.0)
    return (statistics.mean(values), statistics.stdev(values))


def fmt(pair, scale=1.0, digits=3):
    if pair is None:
        return "n/a"
    return f"{pair[0] * scale:.{digits}f} / {pair[1] * scale:.{digits}f}"


def grades(report):
    """Per layer: (mean AUC within modality, pooled AUC, conflict AUC, kept agreeing, kept
    conflicting) on complete inputs; None where the run has no ranking report."""
    if not report:
        return None
    out = []
    for layer in report["layers"]:
        conflict = layer.get("conflict", {})
        out.append(
            {
                "within": layer.get("auc_modality_mean"),
                "pooled": layer.get("auc_pooled", layer.get("auc")),
                "conflict": conflict.get("auc"),
                "kept_agreeing": conflict.get("kept_rate_agreeing"),
                "kept_conflicting": conflict.get("kept_rate_conflicting"),
            }
        )
    return out


def row(name, results):
    """One row from the per-seed result dicts (results.json or `mgr eval`'s output)."""
    per_seed = [grades(r.get("ranking")) for r in results]
    n_layers = max((len(g) for g in per_seed if g), default=0)
    layers = []
    for layer in range(n_layers):
        cell = {}
        for key in ("within", "pooled", "conflict", "kept_agreeing", "kept_conflicting"):
            cell[key] = mean_std([g[layer][key] for g in per_seed if g])
        layers.append(cell)
    return {
        "row": name,
        "seeds": len(results),
        "accuracy": mean_std([r["accuracy"] for r in results]),
        "accuracy_per_seed": [r["accuracy"] for r in results],
        "f1": mean_std([r["f1"] for r in results]),
        "layers": layers,
    }


def main():
    out = Path(sys.argv[1])
    rankings = sys.argv[2:]
    rows = []
    for ranking in rankings:
        trained = sorted((out / f"trained-{ranking}").glob("s*/results.json"))
        if trained:
            rows.append(row(f"{ranking}, trained", [json.loads(p.read_text()) for p in trained]))
        swapped = sorted((out / f"swapped-{ranking}").glob("s*.json"))
        if swapped:
            rows.append(
                row(f"{ranking}, swapped into learned", [json.loads(p.read_text()) for p in swapped])
            )
    # Written beside, then renamed: a kill leaves the previous table or the new one, never half.
    partial = out / "table.json.tmp"
    partial.write_text(json.dumps(rows, indent=2) + "\n")
    partial.replace(out / "table.json")
    print(
        "| ranking | seeds | accuracy | F1 | AUC within modality (mean), layer 0 / 1 "
        "| pooled AUC, layer 0 / 1 | conflict AUC, layer 0 / 1 | kept agreeing / conflicting, layer 0 "
        "| accuracy per seed |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_layer = lambda key: " ; ".join(fmt(cell[key]) for cell in r["layers"]) or "n/a"
        kept = "n/a"
        if r["layers"] and r["layers"][0]["kept_agreeing"]:
            first = r["layers"][0]
            kept = f"{first['kept_agreeing'][0]:.2f} / {first['kept_conflicting'][0]:.2f}"
        seeds = ", ".join(f"{a:.3f}" for a in r["accuracy_per_seed"])
        print(
            f"| {r['row']} | {r['seeds']} | {fmt(r['accuracy'])} | {fmt(r['f1'])} "
            f"| {per_layer('within')} | {per_layer('pooled')} | {per_layer('conflict')} "
            f"| {kept} | {seeds} |"
        )


if __name__ == "__main__":
    main()
