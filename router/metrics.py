"""How well a router ranks prompts: RouteLLM's quality curve, PGR, CPT and APGR.

Source of truth: lm-sys/RouteLLM, ``routellm/evals/evaluate.py`` (``generate_results``:
``pct_call_metric``, ``auc_metric``, ``apgr_metric``) and ``routellm/evals/benchmarks.py``
(``MMLU.evaluate`` / ``GSM8K.evaluate`` for the thresholds, ``get_optimal_accuracy`` for the
oracle), read at commit 0d78f127 / 0aa24fd9. What they define, and what this module does:

- Thresholds are the ``num_results`` + 1 quantile edges of the router's scores
  (``pd.qcut(scores, 10, retbins=True)``, linear quantiles). At each edge, prompts with
  ``score >= edge`` go to the strong model, except at the last edge where ``score > edge``
  (so the curve runs from 100% strong calls down to 0%).
- Each edge gives one point: (share of strong calls, mean quality of the routed answers).
- CPT(p) = ``np.interp(weak + p * (strong - weak), qualities, shares)`` with the points
  sorted by share: the share of strong calls at which the curve reaches PGR = p.
- APGR = (AUC − weak AUC) / (strong AUC − weak AUC), each AUC by the trapezoid rule over
  share ∈ [0, 1]; with the curve spanning 0..1 this is (AUC − weak) / (strong − weak).
- PGR(x) = (quality(x) − weak) / (strong − weak).

Two deliberate differences, neither changing a figure: shares are fractions (RouteLLM prints
percent), and tied quantile edges are kept where ``pd.qcut`` would raise.

The random router's expected curve is the straight line from weak to strong (APGR 0.5,
CPT(p) = p). The oracle sends the prompts where strong beats weak by the most, never one
where it does not (``get_optimal_accuracy``), so it can end above the strong line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: RouteLLM's ``--num-results`` default: ten quantile bins, eleven points on the curve.
DEFAULT_NUM_RESULTS = 10
#: The PGR levels RouteLLM reports as "20% qual", "50% qual", "80% qual".
CPT_LEVELS = (0.2, 0.5, 0.8)
#: "95% of the strong model's quality", the cost figure the batch owner asks about.
QUALITY_TARGET = 0.95


@dataclass(frozen=True)
class QualityCurve:
    """Points (share of strong calls, mean quality), sorted by share."""

    shares: np.ndarray
    qualities: np.ndarray

    def as_dict(self) -> dict[str, list[float]]:
        return {"shares": self.shares.tolist(), "qualities": self.qualities.tolist()}

    @classmethod
    def of(cls, curve: QualityCurve | Mapping[str, Sequence[float]]) -> QualityCurve:
        """The curve itself, or one rebuilt from ``as_dict`` output."""
        if isinstance(curve, QualityCurve):
            return curve
        return cls(np.asarray(curve["shares"], dtype=float), np.asarray(curve["qualities"], dtype=float))


@dataclass(frozen=True)
class RoutingMetrics:
    """One router's figures on one labeled set; shares are fractions of all calls."""

    n: int
    weak_quality: float
    strong_quality: float
    cpt: dict[str, float]
    apgr: float
    oracle_apgr: float
    share_at_95: float
    cost_at_95: float | None = None  # USD per call, at the share that reaches 95% of strong quality
    cost_all_strong: float | None = None  # USD per call, every call to the strong model
    oracle_cpt: dict[str, float] | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def quality_curve(
    scores: Sequence[float] | np.ndarray,
    weak: Sequence[float] | np.ndarray,
    strong: Sequence[float] | np.ndarray,
    num_results: int = DEFAULT_NUM_RESULTS,
) -> QualityCurve:
    """The router's curve at RouteLLM's quantile thresholds (see the module docstring)."""
    s, w, st = _arrays(scores, weak, strong)
    edges = np.quantile(s, np.linspace(0.0, 1.0, num_results + 1))
    shares, qualities = [], []
    for i, edge in enumerate(edges):
        to_strong = s > edge if i == len(edges) - 1 else s >= edge
        shares.append(float(to_strong.mean()))
        qualities.append(float(np.where(to_strong, st, w).mean()))
    order = np.argsort(shares, kind="stable")
    return QualityCurve(np.asarray(shares)[order], np.asarray(qualities)[order])


def pgr(quality: float, weak_quality: float, strong_quality: float) -> float:
    """Performance gap recovered: 0 at the weak model's quality, 1 at the strong model's."""
    return (quality - weak_quality) / (strong_quality - weak_quality)


def call_performance_threshold(
    curve: QualityCurve, weak_quality: float, strong_quality: float, level: float
) -> float:
    """CPT(level): the share of strong calls at which the curve recovers ``level`` of the gap."""
    target = level * (strong_quality - weak_quality) + weak_quality
    return float(np.interp(target, curve.qualities, curve.shares))


def apgr(curve: QualityCurve, weak_quality: float, strong_quality: float) -> float:
    """Average performance gap recovered: the normalised area between weak and strong lines."""
    auc = _trapezoid(curve.qualities, curve.shares)
    weak_auc = _trapezoid(np.full_like(curve.shares, weak_quality), curve.shares)
    strong_auc = _trapezoid(np.full_like(curve.shares, strong_quality), curve.shares)
    return float((auc - weak_auc) / (strong_auc - weak_auc))


def random_curve(weak_quality: float, strong_quality: float, num_results: int = DEFAULT_NUM_RESULTS) -> QualityCurve:
    """The expected curve of a router that picks prompts at random: a straight line."""
    shares = np.linspace(0.0, 1.0, num_results + 1)
    return QualityCurve(shares, weak_quality + shares * (strong_quality - weak_quality))


def oracle_curve(
    weak: Sequence[float] | np.ndarray,
    strong: Sequence[float] | np.ndarray,
    num_results: int = DEFAULT_NUM_RESULTS,
) -> QualityCurve:
    """The best any router could do: strong calls go where strong beats weak most, and only there."""
    w = np.asarray(weak, dtype=float)
    gain = np.sort(np.asarray(strong, dtype=float) - w)[::-1]
    gain = np.where(gain > 0, gain, 0.0)
    cumulative = np.concatenate([[0.0], np.cumsum(gain)])
    shares = np.linspace(0.0, 1.0, num_results + 1)
    # RouteLLM allows fractional calls (``total * strong_percent``): interpolate between prompts.
    gained = np.interp(shares * len(w), np.arange(len(w) + 1), cumulative)
    return QualityCurve(shares, w.mean() + gained / len(w))


def share_at_quality(curve: QualityCurve, quality: float) -> float:
    """The smallest share of strong calls at which the curve first reaches ``quality``."""
    if curve.qualities[0] >= quality:
        return float(curve.shares[0])
    for i in range(1, len(curve.shares)):
        q0, q1 = curve.qualities[i - 1], curve.qualities[i]
        if q1 >= quality:
            frac = (quality - q0) / (q1 - q0) if q1 > q0 else 0.0
            return float(curve.shares[i - 1] + frac * (curve.shares[i] - curve.shares[i - 1]))
    return 1.0


def cost_per_call(share_strong: float, weak_price: float, strong_price: float) -> float:
    """Mean price of one call when ``share_strong`` of the calls go to the strong model."""
    return share_strong * strong_price + (1.0 - share_strong) * weak_price


def routing_metrics(
    scores: Sequence[float] | np.ndarray,
    weak: Sequence[float] | np.ndarray,
    strong: Sequence[float] | np.ndarray,
    num_results: int = DEFAULT_NUM_RESULTS,
    prices: tuple[float, float] | None = None,
) -> RoutingMetrics:
    """All the figures for one router on one labeled set; ``prices`` is (weak, strong) per call.

    Raises ValueError when the strong model's mean quality is not above the weak one's: every
    figure is a share of that gap, and there is none to recover.
    """
    s, w, st = _arrays(scores, weak, strong)
    weak_q, strong_q = float(w.mean()), float(st.mean())
    if not strong_q > weak_q:
        raise ValueError(f"the strong model's mean quality ({strong_q:.4g}) is not above the weak one's ({weak_q:.4g}): "
                         "there is no gap for a router to recover")
    curve, oracle = quality_curve(s, w, st, num_results), oracle_curve(w, st, num_results)

    def cpts(of: QualityCurve) -> dict[str, float]:
        return {f"{round(level * 100)}%": call_performance_threshold(of, weak_q, strong_q, level) for level in CPT_LEVELS}

    share95 = share_at_quality(curve, QUALITY_TARGET * strong_q)
    cost95 = cost_all = None
    if prices is not None:
        cost95 = cost_per_call(share95, *prices)
        cost_all = prices[1]
    return RoutingMetrics(
        n=len(s),
        weak_quality=weak_q,
        strong_quality=strong_q,
        cpt=cpts(curve),
        apgr=apgr(curve, weak_q, strong_q),
        oracle_apgr=apgr(oracle, weak_q, strong_q),
        share_at_95=share95,
        cost_at_95=cost95,
        cost_all_strong=cost_all,
        oracle_cpt=cpts(oracle),
    )


def plot_quality_vs_share(
    curves: Mapping[str, QualityCurve | Mapping[str, Sequence[float]]],
    weak_quality: float,
    strong_quality: float,
    path: Path,
    title: str = "Quality against share of strong calls",
) -> Path:
    """Write a PNG of each router's curve with the weak, strong, random and given lines."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers or in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, given in curves.items():
        curve = QualityCurve.of(given)
        ax.plot(curve.shares * 100, curve.qualities, marker=".", label=name)
    rand = random_curve(weak_quality, strong_quality)
    ax.plot(rand.shares * 100, rand.qualities, linestyle=":", color="grey", label="random")
    ax.axhline(weak_quality, color="grey", linestyle="--", label="weak only")
    ax.axhline(strong_quality, color="red", linestyle="--", label="strong only")
    ax.set_xlabel("Strong model calls (%)")
    ax.set_ylabel("Quality")
    ax.set_title(title)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _arrays(*columns: Sequence[float] | np.ndarray) -> list[np.ndarray]:
    arrays = [np.asarray(c, dtype=float) for c in columns]
    if len({len(a) for a in arrays}) != 1 or len(arrays[0]) == 0:
        raise ValueError("scores, weak and strong must be non-empty and of equal length")
    return arrays


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    # np.trapz was renamed np.trapezoid in numpy 2; the formula is the same.
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
