"""Routing quality on prompts the router never saw: 5-fold cross-validation on the shared
data, RouteLLM's metrics for the trained router, the heuristic and length baselines, and
a plot per dataset of quality against the share of strong calls.

    .venv/bin/python bench/router_quality.py [--data ../shared/data] [--out bench/figures] [--json]
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
from router.training import cross_validated_scores, read_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "figures")
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
    if args.json:
        print(json.dumps(results, indent=2, default=float))
        return
    for dataset, by_router in results.items():
        for name, m in by_router.items():
            cpt = m["cpt"]  # type: ignore[index]
            print(f"{dataset:>6} {name:<28} CPT20 {cpt['20%']:6.1%} CPT50 {cpt['50%']:6.1%} CPT80 {cpt['80%']:6.1%} APGR {m['apgr']:.3f}")  # type: ignore[index]
    print(f"plots in {args.out}")


if __name__ == "__main__":
    main()
