"""The trained router: training on labeled rows, the model file, and what it refuses to load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.classifier import Classifier, Score, load_classifier
from router.features import DENSE_NAMES, WORD_PROBLEM_NAMES
from router.trained import MODEL_VERSION, LinearModel, StackedModel, TrainedClassifier
from router.training import FitSettings, TrainingDataError, evaluate, read_rows, thresholds_by_kind, thresholds_for_shares, train
from router.trees import BoostingSettings
from schemas.config import ClassifierConfig
from schemas.errors import ModelFileError, TurnoutError


def _write_rows(path: Path, n: int = 120, seed: int = 0, sources: bool = False) -> Path:
    """Multiple-choice prompts where 'quantum' ones need the strong model and 'capital' ones do not
    (with ``sources``, each row names its subject, as MMLU's rows do)."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        hard = i % 2 == 0
        topic = "quantum field renormalization" if hard else "capital city of a country"
        prompt = f"Question {rng.integers(1000)} about the {topic}?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
        weak, strong = (0.0, 1.0) if hard else (1.0, 1.0)
        row = {"id": f"r{i}", "prompt": prompt, "weak": weak, "strong": strong, "extra": 1}
        if sources:  # and the strong model fails one subject's hard questions now and then
            row["source"] = f"synthetic/{'physics' if hard else 'geography'}-{i % 3}"
            row["strong"] = 0.0 if hard and i % 3 == 0 and rng.random() < 0.5 else strong
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("model")
    data = _write_rows(folder / "synthetic.train.jsonl")
    report = train([data], folder / "tiny.json", folds=2)
    return report.model_path, data


@pytest.fixture(scope="module")
def stacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose choice kind is a stack: the synthetic rows are few, so the thresholds are lowered."""
    folder = tmp_path_factory.mktemp("stacked")
    data = _write_rows(folder / "synthetic.train.jsonl")
    settings = FitSettings(stack_min_rows=100, boosting=BoostingSettings(min_leaf=10))
    return train([data], folder / "stacked.json", folds=0, settings=settings).model_path


HARD = "Question 1 about the quantum field renormalization?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
EASY = "Question 1 about the capital city of a country?\nA. a\nB. b\nC. c\nD. d\nAnswer:"


def test_training_writes_a_model_and_its_card(trained: tuple[Path, Path]) -> None:
    # Given a model trained on 120 synthetic rows
    model_path, _ = trained
    # Then the JSON names its format and version, and the card gives rows and held-out figures
    data = json.loads(model_path.read_text())
    assert data["format"] == "turnout.router.trained" and data["version"] == MODEL_VERSION
    card = model_path.with_suffix(".md").read_text()
    assert "synthetic.train.jsonl" in card and "120" in card and "APGR" in card


def test_a_saved_model_loads_back_and_scores_the_same(trained: tuple[Path, Path], tmp_path: Path) -> None:
    # Given a loaded model saved again elsewhere
    model = TrainedClassifier.load(trained[0])
    model.save(tmp_path / "copy.json")
    # When both score the same prompts
    prompts = ["Question 7 about the quantum field renormalization?\nA. x\nB. y\nC. z\nD. w\nAnswer:", "hi there"]
    # Then the scores are identical and the reasons name the model
    again = TrainedClassifier.load(tmp_path / "copy.json").score_batch(prompts)
    assert [s.value for s in again] == [s.value for s in model.score_batch(prompts)]
    assert again[0].reasons[0] == "trained:tiny"


def test_scores_are_in_the_unit_interval_and_rank_hard_prompts_first(trained: tuple[Path, Path]) -> None:
    # Given the trained model
    model = TrainedClassifier.load(trained[0])
    hard = "Question 1 about the quantum field renormalization?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    easy = "Question 1 about the capital city of a country?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    # When it scores learned kinds, open-ended prompts, code and an empty string
    scores = [model.score(t).value for t in [hard, easy, "Write a sonnet.", "def f(x):\n    return {x: 1}", ""]]
    # Then every score is a probability and the hard prompt outranks the easy one
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > scores[1]


def test_open_ended_prompts_no_model_was_trained_on_are_scored_by_the_heuristic(trained: tuple[Path, Path]) -> None:
    from router.heuristic import HeuristicClassifier

    # Given a model trained on multiple-choice and word problems only, and open-ended prompts
    model = TrainedClassifier.load(trained[0])
    prompts = [
        "Write a haiku about autumn.",
        "Implement a thread-safe LRU cache in Python with O(1) get and put, and explain the design trade-offs.",
        "Pretend to be Sherlock Holmes and greet me.",
    ]
    # When it scores them
    kinds, scores = model.predict_with_kinds(prompts)
    # Then they are the general kind, scored as the heuristic scores them: the code design task first
    assert kinds == ["general"] * 3
    assert list(scores) == pytest.approx([HeuristicClassifier().score(p).value for p in prompts])
    assert scores[1] > max(scores[0], scores[2])


def test_evaluate_reports_routellm_figures_per_dataset(trained: tuple[Path, Path]) -> None:
    # Given the model and the rows it learned from
    model_path, data = trained
    result = evaluate(TrainedClassifier.load(model_path), read_rows(data), prices=(1.0, 10.0))
    # Then the dataset is named after its file, and the perfect separation matches the oracle
    # (half the prompts gain, so even the oracle's APGR is 0.5 * 0.5 + 0.5 = 0.75)
    figures = result["synthetic"]
    assert figures["apgr"] == pytest.approx(figures["oracle_apgr"]) == pytest.approx(0.75)
    assert figures["cpt"]["50%"] == pytest.approx(0.25)
    assert figures["cost_at_95"] < figures["cost_all_strong"]


def test_a_missing_model_file_is_a_model_file_error(tmp_path: Path) -> None:
    # When a configured model file does not exist
    with pytest.raises(ModelFileError, match="does not exist"):
        load_classifier(ClassifierConfig(kind="trained", model_path=str(tmp_path / "nope.json")))


def test_a_named_model_file_that_is_missing_is_an_error_under_auto_too(tmp_path: Path) -> None:
    # auto falls back to the heuristic only when the shipped model is absent: a file the
    # config names (a typo'd path, say) must not be swapped for the heuristic silently
    with pytest.raises(ModelFileError, match="does not exist"):
        load_classifier(ClassifierConfig(kind="auto", model_path=str(tmp_path / "typo.json")))


def test_a_corrupt_model_file_is_a_model_file_error(trained: tuple[Path, Path], tmp_path: Path) -> None:
    # Given a truncated file and one whose weights do not fit its vocabulary
    truncated = tmp_path / "truncated.json"
    truncated.write_text(trained[0].read_text()[:500])
    data = json.loads(trained[0].read_text())
    data["domains"]["choice"]["weights"] = [1.0, 2.0]
    mismatched = tmp_path / "mismatched.json"
    mismatched.write_text(json.dumps(data))
    # Then both are refused with a sentence naming the file
    for path in (truncated, mismatched):
        with pytest.raises(ModelFileError, match="corrupt") as caught:
            TrainedClassifier.load(path)
        assert str(path) in str(caught.value)


def test_a_model_file_of_another_version_is_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    # Given a file written by a future version
    data = json.loads(trained[0].read_text())
    data["version"] = MODEL_VERSION + 1
    future = tmp_path / "future.json"
    future.write_text(json.dumps(data))
    # Then loading it asks for a retrain
    with pytest.raises(ModelFileError, match="retrain"):
        TrainedClassifier.load(future)


def test_a_version_3_model_file_asks_for_a_retrain(trained: tuple[Path, Path], tmp_path: Path) -> None:
    # Given a file of version 3, whose kinds' models do not name their feature sets
    data = json.loads(trained[0].read_text())
    data["version"] = 3
    for model in data["domains"].values():
        del model["features"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    # Then loading it names the version and asks for a retrain
    with pytest.raises(ModelFileError, match=r"version 3 but this turnout reads version 4; retrain it"):
        TrainedClassifier.load(old)


def test_small_kinds_stay_linear_and_large_choice_kinds_are_stacked(trained: tuple[Path, Path], stacked: Path) -> None:
    # Given one model trained with the default stack threshold on 120 rows, and one with it lowered
    # Then the first is a logistic regression and the second a stack
    assert isinstance(TrainedClassifier.load(trained[0]).domains["choice"], LinearModel)
    model = TrainedClassifier.load(stacked)
    assert isinstance(model.domains["choice"], StackedModel)
    assert "choice model: stack" in stacked.with_suffix(".md").read_text()
    # And the stack ranks the hard prompt above the easy one, within the unit interval
    hard, easy = model.predict([HARD, EASY])
    assert 0.0 <= easy < hard <= 1.0


def test_a_stacked_model_saved_again_scores_identically(stacked: Path, tmp_path: Path) -> None:
    # Given a loaded stacked model saved elsewhere and loaded again
    model = TrainedClassifier.load(stacked)
    model.save(tmp_path / "copy.json")
    again = TrainedClassifier.load(tmp_path / "copy.json")
    # Then both give the same scores, bit for bit
    prompts = [HARD, EASY, "Question 9 about renormalization of a capital?\nA. a\nB. b\nC. c\nD. d", "hi"]
    assert np.array_equal(again.predict(prompts), model.predict(prompts))


def test_a_fitted_stack_scores_the_same_after_saving_to_within_the_files_rounding(tmp_path: Path) -> None:
    from router.training import fit

    # Given a stack fitted in memory, and the same model saved and loaded
    rows = read_rows(_write_rows(tmp_path / "synthetic.train.jsonl"))
    model = fit(rows, FitSettings(stack_min_rows=100, boosting=BoostingSettings(min_leaf=10)))
    assert isinstance(model.domains["choice"], StackedModel)
    model.save(tmp_path / "saved.json")
    loaded = TrainedClassifier.load(tmp_path / "saved.json")
    # Then the saved weights (6 significant digits) move no score by more than a rounding error
    prompts = [r.prompt for r in rows[:60]] + [HARD, EASY, "hi"]
    assert np.allclose(loaded.predict(prompts), model.predict(prompts), atol=1e-4)


def test_a_stack_trained_on_rows_naming_their_subject_has_a_subject_prior(tmp_path: Path) -> None:
    from router.training import fit

    # Given the same rows with and without their subjects
    settings = FitSettings(stack_min_rows=100, boosting=BoostingSettings(min_leaf=10))
    plain = fit(read_rows(_write_rows(tmp_path / "plain.train.jsonl")), settings).domains["choice"]
    rows = read_rows(_write_rows(tmp_path / "subjects.train.jsonl", sources=True))
    model = fit(rows, settings)
    # Then only the second stack has the prior, whose two scores widen the dense features
    choice = model.domains["choice"]
    assert isinstance(plain, StackedModel) and isinstance(choice, StackedModel)
    assert len(plain.prior_bias) == 0 and choice.prior_weights.shape == (2, len(model.vocabulary.terms))
    assert len(choice.dense_mean) == len(plain.dense_mean) + 2
    # And it scores from the prompt text alone, the same after saving and loading
    model.save(tmp_path / "prior.json")
    loaded = TrainedClassifier.load(tmp_path / "prior.json")
    prompts = [r.prompt for r in rows[:40]] + [HARD, EASY]
    assert np.allclose(loaded.predict(prompts), model.predict(prompts), atol=1e-4)
    assert loaded.predict([HARD])[0] > loaded.predict([EASY])[0]
    # And a prior of the wrong width fails the load in one sentence
    data = json.loads((tmp_path / "prior.json").read_text())
    for key, broken in (("prior_dense_weights", [[0.0] * 3, [0.0] * 3]), ("prior_bias", [[0.1], [0.2]])):
        corrupt = json.loads(json.dumps(data))
        corrupt["domains"]["choice"][key] = broken
        (tmp_path / "broken.json").write_text(json.dumps(corrupt))
        with pytest.raises(ModelFileError, match="subject prior"):
            TrainedClassifier.load(tmp_path / "broken.json")


def test_the_subject_priors_held_out_scores_carry_no_trace_of_their_own_labels() -> None:
    from router.features import SparseRows
    from router.training import _fit_subject_prior

    # Given 60 subjects of 12 rows, each row's text naming its subject, and labels of pure noise
    rng = np.random.default_rng(0)
    subject = np.repeat(np.arange(60), 12)
    n = len(subject)
    rows = SparseRows(np.arange(n + 1), subject.copy(), np.ones(n), 60)
    strong, weak = (rng.integers(0, 2, n).astype(float) for _ in range(2))
    # When the prior scores each row from a fit that did not see it
    _, held_out = _fit_subject_prior(rows, rng.normal(size=(n, 13)), strong, weak, [f"s{k}" for k in subject], FitSettings())
    # Then those scores do not follow the rows' own labels (targets built over every row made them: ~0.3)
    for column, labels in enumerate((strong, weak)):
        assert abs(np.corrcoef(held_out[:, column], labels)[0, 1]) < 0.15


def test_subject_means_leave_each_rows_own_label_out_and_lean_on_the_overall_mean() -> None:
    from router.training import _subject_means

    # Given two subjects, a (labels 1, 1, 0) and b (label 0), overall mean 0.5, and one pseudo-row
    means = _subject_means(["a", "a", "a", "b"], np.array([1.0, 1.0, 0.0, 0.0]), shrink=1.0)
    # Then each row's target is its subject's other labels plus the pseudo-row: (1 + 0 + 0.5) / 3, …
    assert means == pytest.approx([1.5 / 3, 1.5 / 3, 2.5 / 3, 0.5 / 1])
    # And a row naming no subject, or alone in one with no pseudo-rows, gets the overall mean
    assert _subject_means(["a", "a", "", "b"], np.array([1.0, 0.0, 1.0, 0.0]), shrink=0.0) == pytest.approx([0.0, 1.0, 0.5, 0.5])


def test_thresholds_by_kind_give_a_kind_on_its_own_scale_the_shares_of_its_own() -> None:
    # Given 100 choice prompts scoring 0.50-0.599, 100 open-ended ones on another scale (0.00-0.99),
    # and 10 math ones; open-ended and math prompts are on scales of their own, math too few for one
    scores = [Score(0.5 + i / 1000, kind="choice") for i in range(100)] + [Score(i / 100, kind="general") for i in range(100)]
    scores += [Score(0.9 + i / 1000, kind="math") for i in range(10)]
    found = thresholds_by_kind(scores, [0.3], min_prompts=50, separate={"general", "math"})
    # Then the open-ended prompts send exactly 30% of their own to the frontier on a threshold of their own
    assert sorted(found, key=str) == [None, "general"]
    general = np.array([s.value for s in scores if s.kind == "general"])
    assert (general >= found["general"][0]).sum() == 30
    # And the rest (choice, and math with too few prompts) share one threshold sending 30% of their 110
    rest = np.array([s.value for s in scores if s.kind != "general"])
    assert (rest >= found[None][0]).sum() == 33


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["trees"].update(feature=[[0, 0, 99]] * len(m["trees"]["feature"])), "depth-2 trees over 16 features"),
        (lambda m: m["trees"].update(threshold=[[1, 2]]), "depth-2 trees"),
        (lambda m: m.update(bias=[0.1, 0.2, 0.3]), "two biases"),
        (lambda m: m.update(weights=[[1.0, 2.0], [3.0, 4.0]]), "do not match the vocabulary"),
        (lambda m: m.update(type="forest"), "unknown type 'forest'"),
        (lambda m: m.pop("trees"), "'trees'"),
        (lambda m: m["trees"].update(feature=[[1e20, 0, 0]] * len(m["trees"]["feature"])), "depth-2 trees"),
        (lambda m: m["trees"].update(feature=[[2.7, 0, 0]] * len(m["trees"]["feature"])), "whole numbers"),
        (lambda m: m["bias"].__setitem__(0, float("nan")), "non-finite"),
        (lambda m: m["dense_mean"].__setitem__(0, float("inf")), "non-finite"),
        (lambda m: m.update(dense_scale=[0.0] * len(m["dense_scale"])), "above zero"),
    ],
)
def test_a_corrupt_stacked_model_file_fails_at_load_in_one_sentence(
    stacked: Path, tmp_path: Path, change: Any, message: str
) -> None:
    # Given a stacked model file with one part of its choice model broken
    data = json.loads(stacked.read_text())
    change(data["domains"]["choice"])
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    # Then loading it fails with one sentence naming the file and the problem
    with pytest.raises(ModelFileError) as caught:
        TrainedClassifier.load(broken)
    text = str(caught.value)
    assert text.startswith(f"Model file {broken} is corrupt: ") and message in text
    assert text.endswith(".") and "\n" not in text


def test_a_row_missing_a_field_is_named_by_file_and_line(tmp_path: Path) -> None:
    # Given a data file whose third line has no 'strong'
    path = _write_rows(tmp_path / "data.jsonl", n=30)
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({"id": "x", "prompt": "p", "weak": 1})
    path.write_text("\n".join(lines))
    # Then reading it fails at that line
    with pytest.raises(TrainingDataError, match=r"data\.jsonl:3: missing field\(s\) strong") as caught:
        read_rows(path)
    assert caught.value.line == 3 and isinstance(caught.value, TurnoutError)


def test_a_non_numeric_quality_is_named_by_file_and_line(tmp_path: Path) -> None:
    # Given a data file whose first line says weak = "good"
    path = _write_rows(tmp_path / "data.jsonl", n=30)
    lines = path.read_text().splitlines()
    lines[0] = json.dumps({"id": "x", "prompt": "p", "weak": "good", "strong": 1})
    path.write_text("\n".join(lines))
    # Then reading it fails at line 1
    with pytest.raises(TrainingDataError, match=r"data\.jsonl:1: 'weak' must be a number"):
        read_rows(path)


def test_too_few_rows_are_refused(tmp_path: Path) -> None:
    # Given a data file of five rows
    path = _write_rows(tmp_path / "small.jsonl", n=5)
    # Then training data that small is refused, naming the file
    with pytest.raises(TrainingDataError, match=r"small\.jsonl holds 5 labeled rows"):
        read_rows(path)


def test_evaluate_output_is_json_and_plottable(trained: tuple[Path, Path], tmp_path: Path) -> None:
    # Given an evaluation of the model on its rows
    from router.metrics import plot_quality_vs_share

    model_path, data = trained
    result = evaluate(TrainedClassifier.load(model_path), read_rows(data))
    # Then it serialises to JSON, and its curves plot as they are
    json.dumps(result)
    figures, curves = result["synthetic"], result["curves"]["synthetic"]
    png = plot_quality_vs_share(curves, figures["weak_quality"], figures["strong_quality"], tmp_path / "eval.png")
    assert png.exists()


class _FixedScores(Classifier):
    """Scores each prompt by the number it spells: '0.25' scores 0.25."""

    def score(self, text: str) -> Score:
        return Score(float(text))


def test_thresholds_for_shares_split_traffic_by_score_quantiles() -> None:
    # Given 100 prompts scoring 0.00, 0.01, …, 0.99, and wanted shares of 30% (mid) and 10% (frontier)
    prompts = [f"{i / 100:.2f}" for i in range(100)]
    thresholds = thresholds_for_shares(_FixedScores(), prompts, [0.3, 0.1])
    # Then the frontier gets the top 10 prompts, mid the 30 below them, and thresholds rise
    assert thresholds == pytest.approx([0.60, 0.90])
    scores = np.array([float(p) for p in prompts])
    assert (scores >= thresholds[1]).sum() == 10
    assert ((scores >= thresholds[0]) & (scores < thresholds[1])).sum() == 30


def test_thresholds_for_shares_handles_zero_shares_and_refuses_too_much() -> None:
    # A zero share puts the threshold at the top of the scale (no new prompt passes it either), still rising
    prompts = [f"{i / 10:.1f}" for i in range(10)]
    low, high = thresholds_for_shares(_FixedScores(), prompts, [0.0, 0.0])
    assert 0.999 < low < high == 1.0
    assert thresholds_for_shares(_FixedScores(), prompts, [0.2, 0.0]) == pytest.approx([0.8, 1.0])
    # Shares adding up to more than all traffic, or out of range, are refused
    with pytest.raises(ValueError, match="add up"):
        thresholds_for_shares(_FixedScores(), prompts, [0.7, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        thresholds_for_shares(_FixedScores(), prompts, [-0.1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: next(iter(d["domains"].values())).update(bias=float("nan")), "non-finite"),
        (lambda d: next(iter(d["domains"].values())).update(dense_weights=[[0.1, 0.2]] * 13), "do not match"),
        (lambda d: d["idf"].__setitem__(0, float("nan")), "finite number per vocabulary term"),
        (lambda d: d["domains"]["choice"].update(features=["dense"]), "do not match"),  # n-gram weights, no text named
        (lambda d: d["domains"]["choice"].update(features=["text", "dense", "word_problem"]), "do not match"),
        (lambda d: d["domains"]["choice"].update(features=["text", "dense", "embeddings"]), "names features"),
        (lambda d: d["domains"]["choice"].update(features=["text"]), "dense always among them"),
        (lambda d: d["domains"]["choice"].pop("features"), "'features'"),
        (lambda d: d["word_problem_features"].pop(), "word-problem features differ"),
    ],
)
def test_a_linear_model_or_vocabulary_with_bad_numbers_fails_at_load(
    trained: tuple[Path, Path], tmp_path: Path, change: Any, message: str
) -> None:
    # Given a model file whose linear model or idf holds a NaN or a wrong shape (json reads NaN)
    data = json.loads(trained[0].read_text())
    change(data)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    # Then loading fails in one sentence, instead of scoring NaN mid-batch
    with pytest.raises(ModelFileError, match=message):
        TrainedClassifier.load(broken)


def _write_word_problems(path: Path, n: int = 80) -> Path:
    """Word problems where the ones with many steps (percent, twice, the rest) need the strong
    model and one-step sums do not."""
    lines = []
    for i in range(n):
        hard = i % 2 == 0
        prompt = (
            f"A shop sells {i + 3} pens at a {i % 7 + 5} percent discount, then twice as many each day. "
            f"If half of the rest are returned, how much money is left after {i % 4 + 2} days?"
            if hard else f"Sam has {i + 3} apples and buys {i % 5 + 2} more. How many apples does he have?"
        )
        weak, strong = (0.0, 1.0) if hard else (1.0, 1.0)
        lines.append(json.dumps({"id": f"w{i}", "prompt": prompt, "weak": weak, "strong": strong}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_word_problem_model_reads_the_word_problem_counts_and_no_ngrams(tmp_path: Path) -> None:
    from router.training import fit

    # Given a model trained on word problems, and the same rows fitted in memory
    data = _write_word_problems(tmp_path / "problems.train.jsonl")
    loaded = TrainedClassifier.load(train([data], tmp_path / "math.json", folds=0).model_path)
    rows = read_rows(data)
    model = fit(rows)
    # Then its math model reads the dense and word-problem counts and no n-grams, as the file records
    math_model = loaded.domains["math"]
    assert isinstance(math_model, LinearModel) and math_model.features == ("dense", "word_problem")
    assert not math_model.uses_text and len(math_model.dense_weights) == len(DENSE_NAMES) + len(WORD_PROBLEM_NAMES)
    entry = json.loads((tmp_path / "math.json").read_text())["domains"]["math"]
    assert entry["features"] == ["dense", "word_problem"] and entry["weights"] == []
    assert "math model: soft-label logistic regression with L2, reading the dense counts and the word-problem counts" in (
        (tmp_path / "math.md").read_text()
    )
    # And it scores as the model in memory does, the many-step problem above the one-step sum
    prompts = [r.prompt for r in rows[:2]]
    assert np.allclose(loaded.predict(prompts), model.predict(prompts), atol=1e-6)
    assert loaded.predict_with_kinds(prompts)[0] == ["math", "math"]
    hard, easy = loaded.predict(prompts)
    assert hard > easy


def test_a_missing_model_the_config_names_by_a_relative_path_says_where_it_was_looked_for(tmp_path: Path, monkeypatch: Any) -> None:
    from schemas.config import ClassifierConfig

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelFileError, match=rf"models/mine.json does not exist.*classifier.model_path.*current directory, {tmp_path}"):
        load_classifier(ClassifierConfig(kind="trained", model_path="models/mine.json"))


def test_a_card_trained_without_cross_validation_says_it_has_no_held_out_figures(stacked: Path) -> None:
    card = stacked.with_suffix(".md").read_text()
    assert "## Held-out metrics" in card and "None: trained with `--folds 0`" in card and "| CPT(20%)" not in card
