"""The cascade on GSM8K prompts no model saw in training: quality against cost for the cascade,
direct routing and random routing, at RouteLLM's prices ($20/M strong, $0.90/M weak).

The verifier is cross-validated over prompts (fit on 4/5, score the other 1/5's weak answers)
and so is the router; every figure comes from out-of-fold scores.

    .venv/bin/python bench/cascade.py [--data ../shared/data] [--out bench/figures] [--seeds 10] [--json]

The cost-aware cascade ranks answers by ``router.scorer.cost_weighted``: the verifier's odds
scaled by the size of the escalation each would cost, as a tier with ``cost_aware: true`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.cascade import (  # noqa: E402
    CallCosts, CostCurve, cascade_curve, cascade_summary, plot_cost_curves, random_cost_curve, routing_cost_curve,
)
from router.scorer import Candidate, FormatScorer, cost_weighted  # noqa: E402
from router.training import LabeledRow  # noqa: E402
from router.training import cross_validated_scores as router_scores  # noqa: E402
from router.verifier import AnsweredRow, auc, cross_validated_scores, read_answered_rows  # noqa: E402


def _subset(costs: CallCosts, idx: np.ndarray) -> CallCosts:
    return CallCosts(costs.weak[idx], costs.strong[idx], costs.weak_cost[idx], costs.strong_cost[idx])


def threshold_transfer(scores: np.ndarray, costs: CallCosts, rows: list[AnsweredRow], seed: int = 0) -> dict[str, float]:
    """Pick the threshold on one half of the prompts, apply it to the other half, both ways round.

    The curve's "cheapest point reaching 95%" is read off the evaluation data itself; this
    shows what a threshold chosen in advance does on prompts it was not chosen on.
    """
    half = np.random.default_rng(seed).permutation(len(rows)) % 2
    qualities, cost_shares = [], []
    for pick in (0, 1):
        tune, test = np.where(half == pick)[0], np.where(half != pick)[0]
        curve = cascade_curve(scores[tune], _subset(costs, tune))
        at = curve.cheapest_reaching(0.95 * costs.strong[tune].mean())
        threshold = curve.thresholds[at] if at is not None and curve.thresholds is not None else np.inf
        escalate = scores[test] < threshold
        t = _subset(costs, test)
        qualities.append(float(np.where(escalate, t.strong, t.weak).mean() / t.strong.mean()))
        cost_shares.append(float((t.weak_cost.sum() + t.strong_cost[escalate].sum()) / t.all_strong_cost))
    return {"quality_share_of_strong": float(np.mean(qualities)), "cost_share": float(np.mean(cost_shares))}


def cost_at_target(scores: np.ndarray, costs: CallCosts) -> float:
    """The cheapest cascade's share of the all-strong cost reaching 95% of strong (nan: never)."""
    curve = cascade_curve(scores, costs)
    at = curve.cheapest_reaching(0.95 * costs.strong.mean())
    return float(curve.cost_shares[at]) if at is not None else float("nan")


def over_seeds(rows: list[AnsweredRow], costs: CallCosts, passed: np.ndarray, seeds: int) -> dict[str, dict[str, float]]:
    """Medians over CV seeds (the folds change with the seed): the curve's cheapest point at 95%
    and a threshold chosen on the other half, for the plain and the cost-weighted verifier."""
    prompts, answers = [r.prompt for r in rows], [r.weak_response for r in rows]
    runs: dict[str, list[tuple[float, float, float]]] = {"format+verifier": [], "format+verifier, cost-aware": []}
    for seed in range(seeds):
        verifier, _ = cross_validated_scores(rows, seed=seed)
        for name, scores in (("format+verifier", verifier), ("format+verifier, cost-aware", cost_weighted(verifier, prompts, answers))):
            gated = np.where(passed > 0, scores, 0.0)
            t = threshold_transfer(gated, costs, rows, seed=seed)
            runs[name].append((cost_at_target(gated, costs), t["cost_share"], t["quality_share_of_strong"]))
    result = {}
    for name, values in runs.items():
        a = np.array(values)
        result[name] = {
            "seeds": seeds,
            "median_cost_share_at_95": float(np.median(a[:, 0])),
            "max_cost_share_at_95": float(np.max(a[:, 0])),
            "seeds_at_or_under_50": int((a[:, 0] <= 0.5).sum()),
            "transfer_median_cost_share": float(np.median(a[:, 1])),
            "transfer_median_quality_share": float(np.median(a[:, 2])),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "figures")
    parser.add_argument("--seeds", type=int, default=10, help="CV seeds for the medians (the folds change with the seed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    rows = read_answered_rows(args.data / "gsm8k.train.jsonl")
    prompts, answers = [r.prompt for r in rows], [r.weak_response for r in rows]
    costs = CallCosts.from_texts(
        prompts, answers, [r.strong_response for r in rows], [r.weak for r in rows], [r.strong for r in rows]
    )
    verifier, _ = cross_validated_scores(rows)
    passed = np.array([s.value for s in FormatScorer().score_batch([Candidate(r.prompt, r.weak_response) for r in rows])])
    gated = np.where(passed > 0, verifier, 0.0)
    gated_cost = np.where(passed > 0, cost_weighted(verifier, prompts, answers), 0.0)
    router = router_scores([LabeledRow(r.id, r.prompt, r.weak, r.strong, "gsm8k") for r in rows])
    routing = routing_cost_curve(router, costs)
    curves: dict[str, CostCurve] = {
        "cascade: format+verifier, cost-aware": cascade_curve(gated_cost, costs),
        "cascade: format+verifier": cascade_curve(gated, costs),
        "cascade: verifier": cascade_curve(verifier, costs),
        "cascade: format checks": cascade_curve(passed, costs),
        "routing: trained router": routing,
        "random routing": random_cost_curve(costs),
    }
    result = {
        "verifier_auc_weak_answers": auc(verifier, costs.weak),
        "format_gated_auc_weak_answers": auc(gated, costs.weak),
        "router_auc_strong_gain": auc(router, costs.strong - costs.weak > 0),
        "summary": {name: cascade_summary(c, routing, costs) for name, c in curves.items() if name.startswith("cascade")},
        "threshold_chosen_on_other_half": {
            "format+verifier, cost-aware": threshold_transfer(gated_cost, costs, rows),
            "format+verifier": threshold_transfer(gated, costs, rows),
        },
        "over_seeds": over_seeds(rows, costs, passed, args.seeds),
    }
    plot_cost_curves(curves, costs, args.out / "cascade-gsm8k.png", title="GSM8K (held out): accuracy against cost")
    if args.json:
        print(json.dumps(result, indent=2, default=float))
        return
    print(f"{len(rows)} GSM8K prompts; weak {costs.weak.mean():.3f}, strong {costs.strong.mean():.3f}; "
          f"a weak call on every prompt costs {curves['random routing'].cost_shares[0]:.1%} of all-strong")
    print(f"verifier AUC on weak answers (held out): {result['verifier_auc_weak_answers']:.3f}, "
          f"with the format gate {result['format_gated_auc_weak_answers']:.3f}")
    print("CV seed 0:")
    for name, s in result["summary"].items():  # type: ignore[attr-defined]
        if not s["reached"]:
            print(f"  {name:<38} never reaches 95% of strong")
            continue
        print(f"  {name:<38} t={s['threshold']:.3f}  accuracy {s['quality']:.3f} ({s['quality_share_of_strong']:.1%} of strong) "
              f"at {s['cost_share']:.1%} of all-strong cost, {s['escalated_share']:.1%} escalated; routing at that cost "
              f"{s['routing_quality_at_equal_cost']:.3f} -> beats routing: {s['beats_routing']}, goal met: {s['goal_met']}")
    routing_share = next(iter(result["summary"].values()))["routing_cost_share_at_target"]  # type: ignore[attr-defined]
    print("  routing never reaches 95% of strong" if routing_share is None else f"  routing reaches 95% of strong at {routing_share:.1%} of all-strong cost")
    for name, t in result["threshold_chosen_on_other_half"].items():  # type: ignore[attr-defined]
        print(f"  {name}: a threshold chosen on one half, applied to the other: {t['quality_share_of_strong']:.1%} of strong "
              f"at {t['cost_share']:.1%} of all-strong cost")
    print(f"over {args.seeds} CV seeds (medians):")
    for name, m in result["over_seeds"].items():  # type: ignore[attr-defined]
        print(f"  {name:<30} 95% of strong at {m['median_cost_share_at_95']:.1%} of all-strong cost (worst seed "
              f"{m['max_cost_share_at_95']:.1%}, {m['seeds_at_or_under_50']}/{m['seeds']} seeds at or under 50%); threshold "
              f"from the other half: {m['transfer_median_quality_share']:.1%} of strong at {m['transfer_median_cost_share']:.1%}")
    print(f"plot: {args.out / 'cascade-gsm8k.png'}")


if __name__ == "__main__":
    main()
