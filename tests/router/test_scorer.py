"""Answer scorers: the format checks, the logprob score, judge replies, and the factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.scorer import (
    format_failures,
    REFERENCE_CHARS, AnswerScorer, Candidate, CombinedScorer, FormatScorer, JudgeScorer, LogprobScorer, cost_weighted,
    judge_prompt, load_scorer, parse_judge_reply,
)
from schemas.errors import ModelFileError

MATH = "Tom has 3 apples and buys 4 more. How many apples does he have now?"


@pytest.mark.parametrize(
    ("answer", "kwargs", "reason"),
    [
        ("   ", {}, "empty"),
        ("I'm sorry, but I can't help with that. The count is 7.", {}, "refusal"),
        ("As an AI language model, I think it is 7.", {}, "refusal"),
        ("He has 3 + 4 = 7", {"finish_reason": "length"}, "truncated"),
        ("x" * 400, {"max_tokens": 100}, "truncated"),
        ("He starts with three apples and then buys some more apples.", {}, "no_final_answer"),
    ],
)
def test_format_checks_catch_each_failure(answer: str, kwargs: dict[str, object], reason: str) -> None:
    # Given an answer with one known defect
    # When the format scorer reads it
    scored = FormatScorer().score(MATH, answer, **kwargs)  # type: ignore[arg-type]
    # Then it scores 0 and names the defect
    assert scored.value == 0.0 and reason in scored.reasons


def test_format_checks_pass_a_clean_answer_and_prose_without_numbers() -> None:
    # Given a clean math answer, and a non-math answer with no number at all
    clean = FormatScorer().score(MATH, "He has 3 + 4 = 7 apples.\n#### 7", finish_reason="stop")
    prose = FormatScorer().score("Write a haiku about autumn.", "Red leaves drift and fall")
    # Then both pass: a final number is only required of math word problems
    assert clean.value == 1.0 and prose.value == 1.0


def test_logprob_score_rises_with_the_token_logprobs() -> None:
    # Given answers whose tokens grow more likely
    scorer = LogprobScorer()
    values = [scorer.score(MATH, "7", logprobs=[lp] * 5).value for lp in (-3.0, -1.0, -0.1, 0.0)]
    # Then the score rises with them, and is exp(mean) = 1 for certain tokens
    assert values == sorted(values) and values[-1] == pytest.approx(1.0)


def test_logprob_window_catches_one_confused_stretch() -> None:
    # Given a long confident answer with one unlikely stretch
    logprobs = [-0.01] * 100 + [-4.0] * 5 + [-0.01] * 100
    # Then the windowed score sees it where the overall mean hardly moves
    assert LogprobScorer(window=5).score(MATH, "7", logprobs=logprobs).value < 0.05 < LogprobScorer().score(MATH, "7", logprobs=logprobs).value


def test_logprob_scorer_is_neutral_without_logprobs() -> None:
    scored = LogprobScorer().score(MATH, "7")
    assert scored.value == 0.5 and scored.reasons == ["no_logprobs"]


def test_logprob_scorer_rejects_an_empty_answer_that_has_no_tokens_to_judge() -> None:
    scored = LogprobScorer().score(MATH, "  ", logprobs=[])
    assert scored.value == 0.0 and scored.reasons == ["empty"]
    # but an answer that calls a tool has no text by design: no verdict either way, no format failure
    assert LogprobScorer().score(MATH, "", finish_reason="tool_calls").value == 0.5
    assert format_failures(MATH, "", finish_reason="tool_calls") == []


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("The steps check out.\nScore: 7/10", 0.7),
        ("I'd give it 3 out of 5.", 0.6),
        ("Rating: [[8]]", 0.8),
        ("GOOD", 1.0),
        ("bad", 0.0),
        ("The final answer is not correct.", 0.0),
        ("There is no error here. Verdict: CORRECT", 1.0),
        ("INCORRECT", 0.0),
        ("No", 0.0),
        ("Score: 0.25", 0.25),
        ("Confidence 90%", 0.9),
    ],
)
def test_judge_replies_become_scores(reply: str, value: float) -> None:
    assert parse_judge_reply(reply) == pytest.approx(value)


def test_an_unreadable_judge_reply_raises_and_the_scorer_stays_neutral() -> None:
    with pytest.raises(ValueError):
        parse_judge_reply("Hmm, hard to say.")
    assert JudgeScorer.from_reply("Hmm, hard to say.").reasons == ["judge_unparsed"]


def test_the_judge_scorer_sends_the_prompt_and_answer_to_its_ask_function() -> None:
    # Given a judge whose deployment always answers 9/10
    asked: list[list[dict[str, str]]] = []

    def ask(messages: list[dict[str, str]]) -> str:
        asked.append(messages)
        return "Score: 9/10"

    judge = JudgeScorer(ask=ask)
    # When it scores an answer
    scored = judge.score(MATH, "#### 7")
    # Then the judge saw both, and the reply became the score
    assert scored.value == pytest.approx(0.9)
    assert asked == [judge_prompt(MATH, "#### 7")] and "#### 7" in asked[0][-1]["content"]


def test_combined_scorer_gates_on_format_and_skips_the_inner_scorer_for_failures() -> None:
    # Given format checks in front of a judge that counts its calls
    calls: list[list[dict[str, str]]] = []

    def ask(messages: list[dict[str, str]]) -> str:
        calls.append(messages)
        return "GOOD"

    scorer = CombinedScorer(JudgeScorer(ask=ask))
    # When a refusal and a clean answer are scored
    refused, clean = scorer.score_batch([Candidate(MATH, "I cannot do that."), Candidate(MATH, "#### 7")])
    # Then the refusal scores 0 without a judge call and the clean one gets the judge's verdict
    assert refused.value == 0.0 and "refusal" in refused.reasons
    assert clean.value == 1.0 and len(calls) == 1


def test_load_scorer_builds_each_kind() -> None:
    for kind in ("format", "logprob", "judge", "format+logprob", "format+verifier"):
        assert isinstance(load_scorer(kind), AnswerScorer)
    assert load_scorer("format+verifier").name == "format+verifier"
    with pytest.raises(ValueError):
        load_scorer("oracle")


def test_load_scorer_rejects_a_bad_model_file_in_one_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "verifier.json"
    bad.write_text("{not json")
    with pytest.raises(ModelFileError, match="is corrupt"):
        load_scorer("verifier", str(bad))


def test_cost_weighting_keeps_a_score_at_the_reference_size_and_the_order_within_one_size() -> None:
    prompt, answer = "q" * 200, "a" * int(REFERENCE_CHARS - 200)
    values = [0.0, 0.2, 0.5, 0.9, 1.0]
    weighted = cost_weighted(values, [prompt] * 5, [answer] * 5)
    assert list(weighted) == pytest.approx(values, abs=1e-6)
    same_size = cost_weighted([0.3, 0.7, 0.5], ["q" * 50] * 3, ["a" * 1000] * 3)
    assert list(same_size.argsort()) == [0, 2, 1]


def test_cost_weighting_keeps_a_long_answer_that_would_cost_more_to_escalate() -> None:
    # Given two answers equally likely to be wrong, one four times the size of the other
    short, long = cost_weighted([0.6, 0.6], ["q" * 100, "q" * 400], ["a" * 100, "a" * 400])
    # Then a threshold between them escalates the short one: the same odds of a fix for a quarter of the price
    assert short < 0.6 < long
    # And the odds move by exactly the ratio of the sizes
    odds = lambda p: p / (1 - p)  # noqa: E731
    assert odds(long) / odds(short) == pytest.approx(4.0)


def test_cost_weighting_leaves_a_score_for_an_empty_prompt_and_answer_alone_in_order() -> None:
    # e.g. a tool-call answer (no text) to an image-only message: its score still counts
    low, high = cost_weighted([0.2, 1.0], ["", ""], ["", ""])
    assert 0.0 < low < high and high > 0.99
