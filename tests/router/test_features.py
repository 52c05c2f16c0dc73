"""The router's text features: what of a long prompt they read."""

from __future__ import annotations

import math

from router.features import DENSE_NAMES, SCAN_CHARS, describe, excerpt
from router.heuristic import HeuristicClassifier

QUESTION = "Which of these cases decided the matter?\nA. Marbury\nB. McCulloch\nC. Gibbons\nD. Ogden\nAnswer:"


def test_a_long_prompt_is_read_by_its_head_and_its_tail() -> None:
    # Given a multiple-choice question after a passage ten times longer than the router reads
    passage = "The court heard the arguments of both parties at length. " * 350
    prompt = passage + QUESTION
    # Then its excerpt keeps the start and the question with its options, and is no longer than SCAN_CHARS
    text = excerpt(prompt)
    assert len(text) <= SCAN_CHARS and text.startswith("The court") and text.endswith(QUESTION)
    # And the prompt is still a multiple-choice one, whose length feature counts every character
    kind, dense = describe(prompt)
    assert kind == "choice"
    assert dense[DENSE_NAMES.index("log_chars")] == math.log1p(len(prompt))
    # While its other counts are those of the excerpt
    _, of_excerpt = describe(text)
    same = [n for n in DENSE_NAMES if n != "log_chars"]
    assert [dense[DENSE_NAMES.index(n)] for n in same] == [of_excerpt[DENSE_NAMES.index(n)] for n in same]


def test_a_prompt_within_the_limit_is_read_whole() -> None:
    prompt = "x" * SCAN_CHARS
    assert excerpt(prompt) is prompt


def test_the_heuristic_sees_a_sign_in_the_tail_of_a_long_prompt() -> None:
    # Given a pasted document with the request to analyse it at the end
    document = "Quarterly revenue rose in every region we serve. " * 200
    scored = HeuristicClassifier().score(document + "\nAnalyze the trade-offs of each option above.")
    # Then the heuristic reads the request
    assert "reasoning" in scored.reasons
