"""A cascade's quality against its cost, offline, on labeled data that holds both models' answers.

For a threshold t the cascade keeps the weak answer when its score is ≥ t and otherwise calls
the strong model and returns its answer. Its cost is a weak call on every prompt plus a strong
call on each escalated one. Direct routing decides before any call (the top-scored share of
prompts goes to the strong model, the rest to the weak one, one call each), and random
routing is the straight line between all-weak and all-strong.

Costs come from token counts (about 4 characters a token, of the prompt and of each model's
response) and prices per million tokens; RouteLLM's assumption is $20/M for the strong model
and $0.90/M for the weak one, the same for input and output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.metrics import QUALITY_TARGET

#: Characters per token when a provider's token counts are not at hand.
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class Prices:
    """USD per million tokens; RouteLLM's assumption by default."""

    weak_input: float = 0.90
    weak_output: float = 0.90
    strong_input: float = 20.0
    strong_output: float = 20.0


@dataclass(frozen=True)
class CallCosts:
    """Per-prompt quality (0..1) and USD cost of each model's call, in prompt order."""

    weak: np.ndarray
    strong: np.ndarray
    weak_cost: np.ndarray
    strong_cost: np.ndarray

    @classmethod
    def from_texts(
        cls, prompts: Sequence[str], weak_responses: Sequence[str], strong_responses: Sequence[str],
        weak: Sequence[float], strong: Sequence[float], prices: Prices = Prices(),
    ) -> CallCosts:
        """Costs estimated from the texts' lengths (``CHARS_PER_TOKEN``) and ``prices``."""
        return cls(
            np.asarray(weak, dtype=float), np.asarray(strong, dtype=float),
            call_costs(prompts, weak_responses, prices.weak_input, prices.weak_output),
            call_costs(prompts, strong_responses, prices.strong_input, prices.strong_output),
        )

    @property
    def all_strong_cost(self) -> float:
        return float(self.strong_cost.sum())


def call_costs(prompts: Sequence[str], responses: Sequence[str], input_price: float, output_price: float) -> np.ndarray:
    """USD of each call: prompt tokens at ``input_price`` plus response tokens at ``output_price`` (per million)."""
    prompt_tokens = np.array([len(p) for p in prompts], dtype=float) / CHARS_PER_TOKEN
    response_tokens = np.array([len(r) for r in responses], dtype=float) / CHARS_PER_TOKEN
    result: np.ndarray = (prompt_tokens * input_price + response_tokens * output_price) / 1e6
    return result


@dataclass(frozen=True)
class CostCurve:
    """Points (cost as a share of all-strong cost, mean quality), in rising cost.

    ``strong_share`` is the share of prompts that got a strong call at each point; for a
    cascade, ``thresholds`` holds the threshold that produces it (escalate scores < t).
    """

    cost_shares: np.ndarray
    qualities: np.ndarray
    strong_shares: np.ndarray
    thresholds: np.ndarray | None = None

    def quality_at(self, cost_share: float) -> float:
        """Best quality reachable at ``cost_share``, interpolating between points (mixing two policies)."""
        best = np.maximum.accumulate(self.qualities)
        if cost_share < self.cost_shares[0]:
            return float("nan")
        return float(np.interp(cost_share, self.cost_shares, best))

    def cheapest_reaching(self, quality: float) -> int | None:
        """Index of the cheapest point with quality ≥ ``quality``, or None."""
        hits = np.where(self.qualities >= quality - 1e-12)[0]
        return int(hits[0]) if len(hits) else None

    def as_dict(self) -> dict[str, list[float]]:
        result = {"cost_shares": self.cost_shares.tolist(), "qualities": self.qualities.tolist(),
                  "strong_shares": self.strong_shares.tolist()}
        if self.thresholds is not None:
            result["thresholds"] = self.thresholds.tolist()
        return result


def cascade_curve(weak_scores: Sequence[float] | np.ndarray, costs: CallCosts) -> CostCurve:
    """The cascade at every threshold that changes its decisions.

    Sorting the weak answers' scores once gives all thresholds: escalating the k lowest-scored
    answers is the threshold ``sorted[k]``; tied scores move together, so only cut points
    between distinct scores are kept.
    """
    scores = np.asarray(weak_scores, dtype=float)
    order = np.argsort(scores, kind="mergesort")
    cuts = _cut_points(scores[order])
    gain = np.concatenate([[0.0], np.cumsum((costs.strong - costs.weak)[order])])
    spent = np.concatenate([[0.0], np.cumsum(costs.strong_cost[order])])
    n = len(scores)
    qualities = (costs.weak.sum() + gain[cuts]) / n
    cost_shares = (costs.weak_cost.sum() + spent[cuts]) / costs.all_strong_cost
    sorted_scores = scores[order]
    thresholds = np.array([sorted_scores[k] if k < n else np.nextafter(sorted_scores[-1], np.inf) for k in cuts])
    return CostCurve(cost_shares, qualities, cuts / n, thresholds)


def routing_cost_curve(router_scores: Sequence[float] | np.ndarray, costs: CallCosts) -> CostCurve:
    """Direct routing: the top-scored prompts go to the strong model, the others to the weak one."""
    scores = np.asarray(router_scores, dtype=float)
    order = np.argsort(-scores, kind="mergesort")
    cuts = _cut_points(-scores[order])
    gain = np.concatenate([[0.0], np.cumsum((costs.strong - costs.weak)[order])])
    extra = np.concatenate([[0.0], np.cumsum((costs.strong_cost - costs.weak_cost)[order])])
    n = len(scores)
    return CostCurve((costs.weak_cost.sum() + extra[cuts]) / costs.all_strong_cost, (costs.weak.sum() + gain[cuts]) / n, cuts / n)


def random_cost_curve(costs: CallCosts, points: int = 11) -> CostCurve:
    """Random routing's expected curve: a straight line from all-weak to all-strong."""
    shares = np.linspace(0.0, 1.0, points)
    weak_share = costs.weak_cost.sum() / costs.all_strong_cost
    qualities = (1 - shares) * costs.weak.mean() + shares * costs.strong.mean()
    return CostCurve((1 - shares) * weak_share + shares, qualities, shares)


def _cut_points(ascending: np.ndarray) -> np.ndarray:
    """k in 0..n where the first k sorted values can be split from the rest (no tie straddles k)."""
    n = len(ascending)
    inner = np.where(ascending[1:] != ascending[:-1])[0] + 1
    return np.concatenate([[0], inner, [n]]).astype(int)


def cascade_summary(
    cascade: CostCurve, routing: CostCurve, costs: CallCosts, target: float = QUALITY_TARGET, max_cost_share: float = 0.5,
) -> dict[str, Any]:
    """The cheapest cascade threshold reaching ``target`` × strong quality, and routing at that cost.

    ``goal_met`` is issue 5's test: the target quality at no more than ``max_cost_share`` of the
    all-strong cost, and better quality than direct routing at equal cost.
    """
    strong_quality = float(costs.strong.mean())
    wanted = target * strong_quality
    summary: dict[str, Any] = {
        "n": len(costs.weak),
        "weak_quality": float(costs.weak.mean()),
        "strong_quality": strong_quality,
        "target_quality": wanted,
        "weak_cost_share": float(costs.weak_cost.sum() / costs.all_strong_cost),
        "all_strong_cost_usd": costs.all_strong_cost,
    }
    at = cascade.cheapest_reaching(wanted)
    routing_at = routing.cheapest_reaching(wanted)
    summary["routing_cost_share_at_target"] = float(routing.cost_shares[routing_at]) if routing_at is not None else None
    if at is None:
        summary.update(reached=False, goal_met=False)
        return summary
    cost_share = float(cascade.cost_shares[at])
    routing_quality = routing.quality_at(cost_share)
    summary.update(
        reached=True,
        threshold=float(cascade.thresholds[at]) if cascade.thresholds is not None else None,
        quality=float(cascade.qualities[at]),
        quality_share_of_strong=float(cascade.qualities[at] / strong_quality),
        cost_share=cost_share,
        escalated_share=float(cascade.strong_shares[at]),
        routing_quality_at_equal_cost=routing_quality,
        beats_routing=bool(cascade.qualities[at] > routing_quality),
    )
    summary["goal_met"] = bool(cost_share <= max_cost_share and summary["beats_routing"])
    return summary


def plot_cost_curves(
    curves: Mapping[str, CostCurve], costs: CallCosts, path: Path, title: str = "Quality against cost",
) -> Path:
    """Write a PNG of quality against cost share for each curve, with the weak/strong/95% lines."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers or in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, curve in curves.items():
        if name.startswith("random"):
            ax.plot(curve.cost_shares * 100, curve.qualities, label=name, linestyle=":", color="grey")
        else:
            ax.plot(curve.cost_shares * 100, curve.qualities, label=name)
    strong = float(costs.strong.mean())
    ax.axhline(float(costs.weak.mean()), color="grey", linestyle="--", label="weak only")
    ax.axhline(strong, color="red", linestyle="--", label="strong only")
    ax.axhline(QUALITY_TARGET * strong, color="red", linestyle=":", linewidth=0.8, label="95% of strong")
    ax.axvline(50, color="black", linestyle=":", linewidth=0.8)
    ax.set_xlabel("Cost (% of all-strong)")
    ax.set_ylabel("Accuracy")
    ax.set_title(title)
    ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
