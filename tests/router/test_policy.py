"""The tier policy: pins first, then the score's threshold."""

from __future__ import annotations

import pytest

from router.classifier import Score
from router.heuristic import HeuristicClassifier
from router.policy import TierPolicy
from schemas.config import Config
from schemas.errors import InputLineError

CONFIG = Config.model_validate(
    {
        "tiers": [
            {"name": "cheap", "deployments": [{"model": "openai/gpt-4o-mini"}], "models": ["small"]},
            {"name": "mid", "min_score": 0.4, "deployments": [{"model": "anthropic/claude-haiku"}]},
            {"name": "frontier", "min_score": 0.8, "deployments": [{"model": "openai/gpt-4o"}]},
        ]
    }
)


def test_scores_map_to_tiers_by_threshold() -> None:
    policy = TierPolicy(CONFIG)
    assert [policy.tier_for_score(s) for s in (0.0, 0.39, 0.4, 0.79, 0.8, 1.0)] == [
        "cheap", "cheap", "mid", "mid", "frontier", "frontier"
    ]  # fmt: skip


def test_a_score_of_a_kind_with_its_own_thresholds_uses_them() -> None:
    # Given tiers whose thresholds for open-ended prompts sit far below the others'
    data = CONFIG.model_dump()
    data["tiers"][1]["min_score_by_kind"] = {"general": 0.1}
    data["tiers"][2]["min_score_by_kind"] = {"general": 0.3}
    policy = TierPolicy(Config.model_validate(data))
    # Then an open-ended prompt's score routes by them, and a choice prompt's or a kind-less one's by min_score
    decide = [policy.decide(Score(0.35, kind=kind)).tier for kind in ("general", "choice", None)]
    assert decide == ["frontier", "cheap", "cheap"]
    assert policy.decide(Score(0.2, kind="general")).tier == "mid"


@pytest.mark.parametrize(
    ("model", "tier"),
    [(None, None), ("auto", None), ("tier:mid", "mid"), ("small", "cheap"), ("gpt-4o", "frontier"), ("openai/gpt-4o", "frontier")],
)
def test_a_model_field_pins_its_tier(model: str | None, tier: str | None) -> None:
    assert TierPolicy(CONFIG).pinned_tier(model) == tier


def test_an_unknown_model_or_tier_is_an_input_error() -> None:
    policy = TierPolicy(CONFIG)
    with pytest.raises(InputLineError, match="gpt-9"):
        policy.pinned_tier("gpt-9")
    with pytest.raises(InputLineError, match="platinum"):
        policy.pinned_tier("tier:platinum")


def test_a_pin_overrides_the_score_but_keeps_it_on_record() -> None:
    decision = TierPolicy(CONFIG).decide(Score(0.1, ["plain"]), pin="frontier")
    assert decision.tier == "frontier" and decision.score == 0.1 and decision.reasons == ["pinned:frontier"]


def test_the_heuristic_scores_hard_prompts_above_easy_ones() -> None:
    classifier = HeuristicClassifier()
    easy = classifier.score("What is the capital of France?")
    hard = classifier.score(
        "Prove step by step that this algorithm terminates, analyze its complexity and compare the trade-offs.\n"
        "```python\ndef f(n):\n    return f(n - 1) if n else 0\n```"
    )
    assert 0.0 <= easy.value < 0.5 <= hard.value <= 1.0
    assert "code" in hard.reasons and "reasoning" in hard.reasons


@pytest.mark.parametrize(
    ("sign", "phrases"),
    [
        ("code", ["```x```", "def f", "class A", "a JavaScript Function", "#include <x>", "SELECT a", "x => y", "import os"]),
        ("math", [r"\frac{1}{2}", r"\sum_i", r"\int x", "the Integral", "a derivative", "Prove it", "a theorem", "an equation"]),
        ("reasoning", ["Step-by-step", "step by step", "Explain why", "analyse", "analyze", "compare", "trade-offs", "tradeoff", "justify"]),
        ("design", ["Architecture", "design a cache", "optimise", "optimize", "an algorithm", "its complexity"]),
        ("constraints", ["you MUST", "exactly", "at least", "at most", "without", "ensure"]),
        ("numbers", ["5 km", "3.5%", "$3", "10 dollars"]),
    ],
)
def test_every_form_of_a_heuristic_sign_is_found_in_any_case(sign: str, phrases: list[str]) -> None:
    # The scan looks for cheap substrings first: each phrase a sign's pattern matches must pass that test
    for phrase in phrases:
        assert sign in HeuristicClassifier().score(f"Please read this. {phrase} and more.").reasons, phrase
