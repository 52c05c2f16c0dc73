"""Routing quality on open-ended prompts the shared data lacks: MT-Bench's 80 first-turn
questions (writing, role-play, reasoning, math, coding, extraction, STEM, humanities), with
GPT-4's grades of gpt-4-1106-preview (strong) and Mixtral-8x7B-Instruct (weak) answers.

No router here was trained on these prompts. Eighty prompts make a noisy figure, so the
random router's spread over 1,000 shuffles and a bootstrap interval are printed beside it.
The data is public but not shipped: pass the two files, from lm-sys/RouteLLM
(routellm/evals/mt_bench/judgements.jsonl) and lm-sys/FastChat
(fastchat/llm_judge/data/mt_bench/question.jsonl).

    .venv/bin/python bench/router_general.py --judgements judgements.jsonl --questions question.jsonl [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.metrics import routing_metrics  # noqa: E402
from workers.evaluation import load_router  # noqa: E402

STRONG, WEAK = "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"


def first_turn_rows(judgements: Path, questions: Path) -> list[dict[str, object]]:
    """One row per question graded for both models on its first turn: prompt, category, weak, strong (0..1)."""
    asked = {q["question_id"]: q for q in map(json.loads, questions.read_text().splitlines())}
    grades: dict[int, dict[str, float]] = defaultdict(dict)
    for line in judgements.read_text().splitlines():
        j = json.loads(line)
        if j["turn"] == 1 and j["score"] >= 0 and j["model"] in (STRONG, WEAK):
            grades[j["question_id"]][j["model"]] = j["score"] / 10
    return [
        {"prompt": asked[q]["turns"][0], "category": asked[q]["category"], "weak": g[WEAK], "strong": g[STRONG]}
        for q, g in sorted(grades.items())
        if len(g) == 2
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgements", type=Path, required=True, help="RouteLLM's mt_bench/judgements.jsonl")
    parser.add_argument("--questions", type=Path, required=True, help="FastChat's mt_bench/question.jsonl")
    parser.add_argument("--router", action="append", help="default, heuristic or a model file (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    rows = first_turn_rows(args.judgements, args.questions)
    prompts = [str(r["prompt"]) for r in rows]
    weak, strong = np.array([r["weak"] for r in rows], dtype=float), np.array([r["strong"] for r in rows], dtype=float)
    rng = np.random.default_rng(0)
    shuffled = [routing_metrics(rng.random(len(rows)), weak, strong).apgr for _ in range(1000)]
    routers = {name: np.array([s.value for s in load_router(name).score_batch(prompts)]) for name in args.router or ["default", "heuristic"]}
    routers["longer prompt"] = np.array([len(p) for p in prompts], dtype=float)
    result: dict[str, object] = {
        "rows": len(rows),
        "weak_quality": float(weak.mean()),
        "strong_quality": float(strong.mean()),
        "random_apgr": {"mean": float(np.mean(shuffled)), "sd": float(np.std(shuffled)), "p95": float(np.percentile(shuffled, 95))},
        "routers": {},
    }
    for name, scores in routers.items():
        metrics = routing_metrics(scores, weak, strong)
        boot = []
        for _ in range(1000):
            i = rng.integers(0, len(rows), len(rows))
            if strong[i].mean() > weak[i].mean():  # a resample with no gap has no APGR
                boot.append(routing_metrics(scores[i], weak[i], strong[i]).apgr)
        by_category: dict[str, list[float]] = defaultdict(list)
        for row, score in zip(rows, scores):
            by_category[str(row["category"])].append(float(score))
        result["routers"][name] = {  # type: ignore[index]
            "apgr": metrics.apgr,
            "cpt50": metrics.cpt["50%"],
            "apgr_bootstrap_90": [float(np.percentile(boot, 5)), float(np.percentile(boot, 95))],
            "mean_score_by_category": {c: float(np.mean(v)) for c, v in sorted(by_category.items())},
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    r = result["random_apgr"]
    print(f"MT-Bench first turns: {len(rows)} prompts; weak {weak.mean():.3f}, strong {strong.mean():.3f} (GPT-4 grades / 10)")
    print(f"random router APGR over 1,000 shuffles: mean {r['mean']:.3f}, sd {r['sd']:.3f}, 95th percentile {r['p95']:.3f}")  # type: ignore[index]
    for name, m in result["routers"].items():  # type: ignore[attr-defined]
        lo, hi = m["apgr_bootstrap_90"]
        print(f"{name:<16} APGR {m['apgr']:.3f} (bootstrap 90%: {lo:.3f}-{hi:.3f})  CPT(50%) {m['cpt50']:.1%}")
    gain = defaultdict(list)
    for row in rows:
        gain[str(row["category"])].append(float(row["strong"]) - float(row["weak"]))  # type: ignore[arg-type]
    print("mean score by category (strong - weak gain):")
    for category in sorted(gain):
        scores = "  ".join(f"{name} {m['mean_score_by_category'][category]:.2f}" for name, m in result["routers"].items() if name != "longer prompt")  # type: ignore[attr-defined]
        print(f"  {category:<11} gain {np.mean(gain[category]):+.2f}  {scores}")


if __name__ == "__main__":
    main()
