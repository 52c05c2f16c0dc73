"""Offline cascade evaluation: costs from token counts, the cascade and routing curves, the summary."""

from __future__ import annotations

import numpy as np
import pytest

from router.cascade import (
    CallCosts, Prices, call_costs, cascade_curve, cascade_summary, random_cost_curve, routing_cost_curve,
)


def _four_rows() -> CallCosts:
    """Weak right on rows 0 and 1, strong right on all but row 1; a weak call costs 1, a strong one 10."""
    return CallCosts(
        weak=np.array([1.0, 1.0, 0.0, 0.0]),
        strong=np.array([1.0, 0.0, 1.0, 1.0]),
        weak_cost=np.ones(4),
        strong_cost=np.full(4, 10.0),
    )


def test_call_costs_count_four_characters_a_token_at_per_million_prices() -> None:
    # 400 prompt characters = 100 tokens at $1/M, 40 response characters = 10 tokens at $2/M
    assert call_costs(["p" * 400], ["r" * 40], 1.0, 2.0)[0] == pytest.approx((100 * 1.0 + 10 * 2.0) / 1e6)
    assert Prices().strong_input == 20.0 and Prices().weak_output == 0.9


def test_the_cascade_curve_on_a_hand_computed_example() -> None:
    # Given verifier scores that rank the weak model's two wrong answers lowest
    costs = _four_rows()
    curve = cascade_curve(np.array([0.9, 0.8, 0.1, 0.2]), costs)
    # Then each threshold escalates the lowest-scored answers: 0, 1, 2, 3, 4 of them
    np.testing.assert_allclose(curve.strong_shares, [0, 0.25, 0.5, 0.75, 1.0])
    # quality: weak 2/4; +row 2 → 3/4; +row 3 → 4/4; +row 1 (strong wrong) → 3/4; +row 0 → 3/4
    np.testing.assert_allclose(curve.qualities, [0.5, 0.75, 1.0, 0.75, 0.75])
    # cost: 4 weak calls (4) + 10 per escalation, against all-strong 40
    np.testing.assert_allclose(curve.cost_shares, [0.1, 0.35, 0.6, 0.85, 1.1])
    # and the threshold that escalates the two lowest is the third-lowest score
    assert curve.thresholds is not None and curve.thresholds[2] == 0.8


def test_tied_scores_move_together() -> None:
    curve = cascade_curve(np.array([0.5, 0.5, 0.5, 0.9]), _four_rows())
    np.testing.assert_allclose(curve.strong_shares, [0, 0.75, 1.0])


def test_routing_pays_one_call_per_prompt() -> None:
    # Given a router that sends rows 2 and 3 first
    curve = routing_cost_curve(np.array([0.1, 0.2, 0.9, 0.8]), _four_rows())
    # Then sending both costs 2 weak + 2 strong = 22 of 40, for full accuracy
    np.testing.assert_allclose(curve.cost_shares[:3], [0.1, 0.325, 0.55])
    np.testing.assert_allclose(curve.qualities[:3], [0.5, 0.75, 1.0])


def test_the_summary_picks_the_cheapest_threshold_and_compares_with_routing() -> None:
    # Given a perfect verifier and a router that ranks the prompts backwards
    costs = _four_rows()
    cascade = cascade_curve(np.array([0.9, 0.8, 0.1, 0.2]), costs)
    routing = routing_cost_curve(np.array([0.9, 0.8, 0.1, 0.2]), costs)
    summary = cascade_summary(cascade, routing, costs)
    # Then the cascade reaches 95% of strong (0.75 → 0.7125) with one escalation, at 35% of the cost
    assert summary["quality"] == 0.75 and summary["cost_share"] == pytest.approx(0.35)
    assert summary["threshold"] == pytest.approx(0.2) and summary["escalated_share"] == 0.25
    # and routing at that cost is still all-weak-ish, so the cascade wins and the goal is met
    assert summary["routing_quality_at_equal_cost"] < 0.75 and summary["beats_routing"] and summary["goal_met"]


def test_random_routing_is_a_straight_line_from_weak_to_strong() -> None:
    curve = random_cost_curve(_four_rows(), points=3)
    np.testing.assert_allclose(curve.cost_shares, [0.1, 0.55, 1.0])
    np.testing.assert_allclose(curve.qualities, [0.5, 0.625, 0.75])

