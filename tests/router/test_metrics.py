"""RouteLLM's routing metrics on cases small enough to compute by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router.metrics import (
    apgr,
    call_performance_threshold,
    oracle_curve,
    pgr,
    quality_curve,
    random_curve,
    routing_metrics,
)

# Four prompts. Weak quality 1,0,0,1 (mean 0.5); strong quality 1,1,1,0 (mean 0.75).
# The router's scores put prompt 1 first, then 2, 0, 3.
SCORES = [0.3, 0.9, 0.6, 0.1]
WEAK = [1.0, 0.0, 0.0, 1.0]
STRONG = [1.0, 1.0, 1.0, 0.0]


def test_the_curve_follows_routellm_quantile_thresholds() -> None:
    # Given two quantile bins over the scores (edges: min 0.1, median 0.45, max 0.9)
    # When the curve is traced
    curve = quality_curve(SCORES, WEAK, STRONG, num_results=2)
    # Then score >= 0.1 sends all four to strong: quality 0.75;
    # score >= 0.45 sends prompts 1 and 2 (both gain 1): quality (1+1+1+1)/4 = 1.0;
    # score > 0.9 (the last edge is strict) sends none: quality 0.5.
    assert curve.shares.tolist() == [0.0, 0.5, 1.0]
    assert curve.qualities.tolist() == [0.5, 1.0, 0.75]


def test_pgr_is_zero_at_weak_and_one_at_strong() -> None:
    # Given weak 0.5 and strong 0.75
    # Then quality 0.625 recovers half the gap and 1.0 recovers (1-0.5)/0.25 = 2
    assert pgr(0.625, 0.5, 0.75) == 0.5
    assert pgr(1.0, 0.5, 0.75) == 2.0


def test_cpt_interpolates_the_share_that_reaches_each_gap_level() -> None:
    # Given the curve (0, 0.5), (0.5, 1.0), (1.0, 0.75)
    curve = quality_curve(SCORES, WEAK, STRONG, num_results=2)
    # When CPT(50%) is asked: target quality 0.5 + 0.5 * 0.25 = 0.625
    # Then it lies on the first segment, 0.125 / 0.5 of the way: share 0.25 * 0.5 = 0.125
    assert call_performance_threshold(curve, 0.5, 0.75, 0.5) == pytest.approx(0.125)
    # And CPT(80%): target 0.7, (0.7 - 0.5) / 0.5 * 0.5 = 0.2
    assert call_performance_threshold(curve, 0.5, 0.75, 0.8) == pytest.approx(0.2)


def test_apgr_is_the_normalised_area_between_weak_and_strong() -> None:
    # Given the same curve: trapezoids 0.5 * (0.5 + 1.0) / 2 + 0.5 * (1.0 + 0.75) / 2 = 0.375 + 0.4375
    curve = quality_curve(SCORES, WEAK, STRONG, num_results=2)
    # Then AUC = 0.8125, weak AUC 0.5, strong AUC 0.75: APGR = 0.3125 / 0.25 = 1.25
    assert apgr(curve, 0.5, 0.75) == pytest.approx(1.25)


def test_a_random_router_scores_half_and_cpt_equal_to_the_level() -> None:
    # Given the expected curve of random routing between weak 0.6 and strong 0.8
    curve = random_curve(0.6, 0.8)
    # Then its APGR is 0.5 and it needs 50% strong calls for 50% of the gap
    assert apgr(curve, 0.6, 0.8) == pytest.approx(0.5)
    assert call_performance_threshold(curve, 0.6, 0.8, 0.5) == pytest.approx(0.5)


def test_the_oracle_sends_only_prompts_where_strong_gains() -> None:
    # Given two prompts where strong gains (1 and 2) and one where it loses (3)
    curve = oracle_curve(WEAK, STRONG, num_results=4)
    # Then at 25% of calls it gains one prompt (0.5 + 1/4), at 50% two (1.0), and then stays
    # at 1.0 rather than dropping to the strong line: RouteLLM's get_optimal_accuracy
    assert curve.qualities.tolist() == pytest.approx([0.5, 0.75, 1.0, 1.0, 1.0])


def test_routing_metrics_prices_the_share_needed_for_95_percent_of_strong() -> None:
    # Given the four prompts, weak calls at $1 and strong at $10
    metrics = routing_metrics(SCORES, WEAK, STRONG, num_results=2, prices=(1.0, 10.0))
    # When 95% of strong quality is 0.7125: (0.7125 - 0.5) / 0.5 * 0.5 = 0.2125 of calls
    # Then each call costs 0.2125 * 10 + 0.7875 * 1 = 2.9125
    assert metrics.share_at_95 == pytest.approx(0.2125)
    assert metrics.cost_at_95 == pytest.approx(2.9125)
    assert metrics.cpt["50%"] == pytest.approx(0.125)
    assert metrics.apgr == pytest.approx(1.25)


def test_a_perfect_ranking_on_larger_data_beats_random() -> None:
    # Given 1,000 prompts where strong gains on a fifth, and a router that knows which
    rng = np.random.default_rng(0)
    weak = rng.integers(0, 2, 1000).astype(float)
    strong = np.where(rng.random(1000) < 0.2, 1.0, weak)
    metrics = routing_metrics(strong - weak + rng.random(1000) * 0.01, weak, strong)
    # Then APGR is far above 0.5 and matches the oracle's
    assert metrics.apgr > 0.9
    assert metrics.apgr == pytest.approx(metrics.oracle_apgr, abs=0.05)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    # Given a curve
    from router.metrics import plot_quality_vs_share

    curve = quality_curve(SCORES, WEAK, STRONG, num_results=2)
    # When it is plotted
    path = plot_quality_vs_share({"router": curve}, 0.5, 0.75, tmp_path / "curve.png")
    # Then a PNG exists
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
