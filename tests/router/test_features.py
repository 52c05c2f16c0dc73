"""The router's text features: what of a long prompt they read."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router.features import DENSE_NAMES, SparseRows, SCAN_CHARS, WORD_PROBLEM_NAMES, describe, excerpt, word_problem_features
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


WORD_PROBLEM = (
    "Tom buys 3 apples for $2 each. He eats half of them, then gives 1/2 of the rest to Ann. "
    "How many apples are left? It took two hours in all."
)


def test_the_word_problem_features_count_what_they_name() -> None:
    # Given a word problem of four sentences, 31 words and four numbers (1/2 is two of them)
    counts = {
        "log_numbers": 4, "log_distinct_numbers": 3, "log_number_words": 2, "log_sentences": 4,
        "log_question_marks": 1, "log_fractions": 1, "log_largest_number": 3, "log_words": 31,
        "log_quantity_sentences": 3,  # all but "How many apples are left", with no number or number word
        "log_cue_each": 1, "log_cue_half": 1, "log_cue_remain": 2, "log_cue_total": 1, "log_cue_money": 1,
        "log_cue_time": 1, "log_cue_condition": 1,  # "rest" and "left"; "in all"; "$"; "hours"; "then"
    }
    # When its word-problem features are computed
    features = dict(zip(WORD_PROBLEM_NAMES, word_problem_features(WORD_PROBLEM)))
    # Then each count is what its name says, log-scaled, and every other cue group is zero
    expected = {name: math.log1p(counts.get(name, 0)) for name in WORD_PROBLEM_NAMES}
    expected |= {"has_decimal_point": 0.0, "numbers_per_word": 4 / 31}
    assert features == pytest.approx(expected)


def test_a_decimal_point_and_a_huge_number_keep_the_word_problem_features_finite() -> None:
    # Given a prompt with a decimal and a 400-digit number
    features = dict(zip(WORD_PROBLEM_NAMES, word_problem_features(f"It costs 2.5 dollars. What is {'9' * 400} times that?")))
    # Then the decimal is seen, and the largest number is capped instead of infinite
    assert features["has_decimal_point"] == 1.0 and features["log_cue_money"] == math.log1p(1)
    assert all(math.isfinite(v) for v in features.values()) and features["log_largest_number"] == pytest.approx(math.log1p(1e12))


def test_sparse_rows_products_match_the_dense_matrix_empty_rows_included() -> None:
    # Given a 5×4 matrix whose first, third and last rows are empty (as prompts with no known n-gram are)
    dense = np.array([[0, 0, 0, 0], [1.5, 0, 2, 0], [0, 0, 0, 0], [0, -3, 0, 4], [0, 0, 0, 0]])
    filled = dense != 0
    rows = SparseRows(np.concatenate([[0], np.cumsum(filled.sum(axis=1))]), np.nonzero(filled)[1], dense[filled], 4)
    w, v = np.array([1.0, 10.0, 100.0, 1000.0]), np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # Then X @ w and X.T @ v are the dense products, for the matrix and a subset of its rows
    assert rows.dot(w).tolist() == (dense @ w).tolist()
    assert rows.t_dot(v).tolist() == (dense.T @ v).tolist()
    picked = np.array([3, 0, 1])
    assert rows.take(picked).dot(w).tolist() == (dense[picked] @ w).tolist()
    assert SparseRows(np.zeros(3, dtype=int), np.zeros(0, dtype=int), np.zeros(0), 0).dot(np.zeros(0)).tolist() == [0.0, 0.0]
