"""The trained answer verifier: its arithmetic checks, learning, the model file and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from router.verifier import (
    MODEL_VERSION, AnswerVerifier, VerifierSettings, auc, check_steps, final_answer, fit_verifier, train_verifier,
)
from schemas.errors import ModelFileError


def _write_rows(path: Path, n: int = 40) -> Path:
    """Sums where the weak model gets every third one wrong, visibly in its arithmetic."""
    lines = []
    for i in range(n):
        a, b = 3 + i, 7 + 2 * i
        wrong = i % 3 == 0
        shown = a + b + (5 if wrong else 0)
        prompt = f"Ann has {a} pens and buys {b} more. How many pens does she have now?"
        weak = f"She has {a} + {b} = <<{a}+{b}={shown}>>{shown} pens.\n#### {shown}"
        strong = f"{a} + {b} = {a + b}\n#### {a + b}"
        lines.append(json.dumps({"id": f"r{i}", "prompt": prompt, "weak_response": weak, "strong_response": strong,
                                 "weak": 0.0 if wrong else 1.0, "strong": 1.0}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("verifier")
    report = train_verifier([_write_rows(folder / "toy.train.jsonl")], folder / "toy.json", folds=2)
    assert report.held_out["weak"]["auc"] > 0.9
    return report.model_path


def test_arithmetic_steps_are_checked_inline_and_in_annotations() -> None:
    # Given one right and one wrong step in each notation
    answer = "3 x $60 = $180 and 180 + 5 = 190. Then <<2*8=16>>16 and <<16-4=11>>11."
    # Then four steps are checked and two are wrong
    steps = check_steps(answer)
    assert (steps.checked, steps.wrong) == (4, 2)


def test_rounding_is_not_a_wrong_step() -> None:
    assert check_steps("10 / 3 = 3.33 and 7 / 2 = 3.5 and 20% x 50 = 10").wrong == 0


def test_the_final_answer_prefers_the_marker() -> None:
    assert final_answer("So 5 + 2 = 7.\n#### 1,200") == (1200.0, True)
    assert final_answer("So she has 12 apples.") == (12.0, False)


def test_the_verifier_learns_a_separable_toy_case() -> None:
    # Given answers that are right exactly when they say "certainly"
    prompts = [f"Question {i}?" for i in range(60)]
    answers = [("certainly " if i % 2 else "maybe ") + str(i) for i in range(60)]
    labels = np.array([float(i % 2) for i in range(60)])
    # When a verifier is fitted on them
    verifier = fit_verifier(prompts, answers, labels, VerifierSettings(l2=1e-3, min_df=1))
    # Then it ranks the right answers above the wrong ones
    assert auc(verifier.predict(prompts, answers), labels) == 1.0


def test_a_saved_verifier_loads_back_and_scores_the_same(trained: Path) -> None:
    # Given the trained toy verifier
    verifier = AnswerVerifier.load(trained)
    prompt = "Ann has 4 pens and buys 9 more. How many pens does she have now?"
    answers = ["4 + 9 = <<4+9=13>>13\n#### 13", "4 + 9 = <<4+9=18>>18\n#### 18"]
    # Then its JSON names format and version, it scores the right answer higher, and a reload agrees
    assert json.loads(trained.read_text())["version"] == MODEL_VERSION
    first = verifier.predict([prompt] * 2, answers)
    assert first[0] > first[1]
    np.testing.assert_allclose(AnswerVerifier.load(trained).predict([prompt] * 2, answers), first)
    assert "Held-out figures" in trained.with_suffix(".md").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is corrupt"),
        ("[1, 2]", "is corrupt"),
        ('{"format": "turnout.router.trained", "version": 1}', "not a turnout answer verifier"),
        ('{"format": "turnout.router.verifier", "version": 999}', "retrain"),
        ('{"format": "turnout.router.verifier", "version": 1, "dense_features": []}', "is corrupt"),
    ],
)
def test_a_broken_verifier_file_raises_model_file_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ModelFileError, match=message):
        AnswerVerifier.load(path)


def test_a_missing_verifier_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        AnswerVerifier.load(tmp_path / "absent.json")
