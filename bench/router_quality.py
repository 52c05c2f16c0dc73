"""Routing quality on prompts the router never saw: 5-fold cross-validation on the shared
data, RouteLLM's metrics for the trained router, the heuristic and length baselines, and
a plot per dataset of quality against the share of strong calls.

    .venv/bin/python bench/router_quality.py [--data ../shared/data] [--out bench/figures] [--seeds 5] [--json]

One fold seed's figure moves by ±1.5 points of CPT(50%); ``--seeds N`` adds the trained
router's medians and ranges over N fold seeds (about two minutes a seed on one idle core).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.heuristic import HeuristicClassifier  # noqa: E402
from router.metrics import oracle_curve, plot_quality_vs_share, quality_curve, routing_metrics  # noqa: E402
from router.training import LabeledRow, cross_validated_scores, read_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "figures")
    parser.add_argument("--seeds", type=int, default=1, help="fold seeds for the trained router's medians")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    rows = read_rows(args.data / "mmlu.train.jsonl") + read_rows(args.data / "gsm8k.train.jsonl")
    trained = cross_validated_scores(rows)
    heuristic = np.array([s.value for s in HeuristicClassifier().score_batch([r.prompt for r in rows])])
    length = np.array([len(r.prompt) for r in rows], dtype=float)
    results: dict[str, dict[str, object]] = {}
    for dataset in ("mmlu", "gsm8k"):
        idx = [i for i, r in enumerate(rows) if r.dataset == dataset]
        weak = np.array([rows[i].weak for i in idx])
        strong = np.array([rows[i].strong for i in idx])
        routers = {"turnout trained (held out)": trained[idx], "turnout heuristic": heuristic[idx], "longer prompt": length[idx]}
        results[dataset] = {name: routing_metrics(scores, weak, strong).as_dict() for name, scores in routers.items()}
        curves = {name: quality_curve(scores, weak, strong) for name, scores in routers.items()}
        curves["oracle"] = oracle_curve(weak, strong)
        plot_quality_vs_share(curves, float(weak.mean()), float(strong.mean()), args.out / f"router-{dataset}.png", title=f"{dataset}: quality against strong calls (held out)")
    medians = over_seeds(rows, args.seeds) if args.seeds > 1 else {}
    if args.json:
        print(json.dumps({"seed_0": results, "over_seeds": medians}, indent=2, default=float))
        return
    for dataset, by_router in results.items():
        for name, m in by_router.items():
            cpt = m["cpt"]  # type: ignore[index]
            print(f"{dataset:>6} {name:<28} CPT20 {cpt['20%']:6.1%} CPT50 {cpt['50%']:6.1%} CPT80 {cpt['80%']:6.1%} APGR {m['apgr']:.3f}")  # type: ignore[index]
    for dataset, m in medians.items():
        print(f"{dataset:>6} trained, {args.seeds} fold seeds: CPT50 median {m['cpt50_median']:.1%} ({m['cpt50_min']:.1%}-{m['cpt50_max']:.1%}), "
              f"APGR median {m['apgr_median']:.3f} ({m['apgr_min']:.3f}-{m['apgr_max']:.3f})")
    print(f"plots in {args.out}")


def over_seeds(rows: list[LabeledRow], seeds: int) -> dict[str, dict[str, float]]:
    """The trained router's CPT(50%) and APGR per dataset: median, min and max over fold seeds."""
    runs: dict[str, list[tuple[float, float]]] = {"mmlu": [], "gsm8k": []}
    for seed in range(seeds):
        scores = cross_validated_scores(rows, seed=seed)
        for dataset, values in runs.items():
            idx = [i for i, r in enumerate(rows) if r.dataset == dataset]
            m = routing_metrics(scores[idx], [rows[i].weak for i in idx], [rows[i].strong for i in idx])
            values.append((m.cpt["50%"], m.apgr))
        progress = ", ".join(f"{d} CPT50 {v[-1][0]:.1%} APGR {v[-1][1]:.3f}" for d, v in runs.items())
        print(f"fold seed {seed + 1}/{seeds}: {progress}", file=sys.stderr, flush=True)
    result = {}
    for dataset, values in runs.items():
        a = np.array(values)
        result[dataset] = {
            "cpt50_median": float(np.median(a[:, 0])), "cpt50_min": float(a[:, 0].min()), "cpt50_max": float(a[:, 0].max()),
            "apgr_median": float(np.median(a[:, 1])), "apgr_min": float(a[:, 1].min()), "apgr_max": float(a[:, 1].max()),
            "seeds": seeds,
        }  # fmt: skip
    return result


if __name__ == "__main__":
    main()
