"""The trained answer verifier: (prompt, answer) in, the chance the answer is correct out.

It learns from (prompt, answer, correct) triples; a labeled file whose rows carry both
models' answers (``weak_response``/``strong_response`` with ``weak``/``strong`` correctness,
as ``gsm8k.train.jsonl`` does) gives two triples per row. The features are cheap and
model-agnostic: n-grams of the answer (the router's TF-IDF vocabulary code), and dense
checks of the answer against itself and the prompt. The strongest of these on GSM8K is
arithmetic: every ``a op b = c`` the answer writes (inline or as a ``<<a*b=c>>``
annotation) is evaluated, and one wrong step usually means a wrong final answer.

The model is the router's logistic regression (``training.fit_logistic``) in a versioned JSON
file (no pickle), with a Markdown card beside it. Run as
``python -m router.verifier --out router/models/verifier.json FILE...``.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import math
import operator
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router.features import Vocabulary
from router.trained import LinearModel, check_model_path, read_model_file, write_model_file
from router.training import FitSettings, TrainingDataError, check_fields, fit_logistic, read_jsonl
from schemas.errors import TurnoutError

#: What the ``format`` field of a verifier file must say.
MODEL_FORMAT = "turnout.router.verifier"
#: Bumped whenever a change to features or file layout would make old files score wrongly.
MODEL_VERSION = 1
#: The verifier shipped with the project (``python -m router.verifier``).
DEFAULT_VERIFIER_PATH = Path(__file__).parent / "models" / "verifier.json"
#: Folds of the cross-validation that produces the card's held-out figures.
DEFAULT_FOLDS = 5
#: A file with fewer labeled rows than this cannot say anything about a verifier.
MIN_ROWS = 10

#: Names of the dense features, in the order ``answer_features`` returns them.
DENSE_NAMES = (
    "log_answer_chars",
    "log_prompt_chars",
    "answer_prompt_ratio",
    "has_final_marker",
    "number_in_last_sentence",
    "looks_truncated",
    "log_checked_steps",
    "log_wrong_steps",
    "wrong_step_share",
    "final_is_integer",
    "final_is_negative",
    "final_in_prompt",
    "final_was_derived",
    "prompt_numbers_used",
    "log_answer_numbers",
    "log_prompt_numbers",
    "log_hedges",
    "uses_algebra",
    "log_unsupported_operands",
    "text_after_final",
    "negative_result",
    "fractional_results",
)

_NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?"
_OPERAND = rf"\$?{_NUMBER}%?"
_OPERATOR = r"(?:\s*[-+*/×÷]\s*|\s+[xX]\s+)"
# The answer's own arithmetic: "3 x $60 = $180" inline, "<<3*60=180>>" as GSM8K annotates it.
_INLINE_STEP = re.compile(rf"(?<![\d.,$])({_OPERAND}(?:{_OPERATOR}{_OPERAND})+)\s*=\s*(-?\$?{_NUMBER}%?)")
_ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
_ANY_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_FINAL_MARKERS = (
    re.compile(rf"####\s*\$?\s*(-?{_NUMBER})"),
    re.compile(rf"answer\s+is\s*:?\s*\$?\s*(-?{_NUMBER})", re.IGNORECASE),
    re.compile(rf"\\boxed\{{\s*\$?(-?{_NUMBER})"),
)
_HEDGES = re.compile(
    r"\b(?:approximately|assum(?:e|ing)|probably|not sure|seems|might|perhaps|wait|mistake|actually|"
    r"re-?evaluate|recalculate|however|unclear|estimate|round(?:ed|ing)?)\b"
)
_ALGEBRA = re.compile(r"\b(?:let\s+[a-z]\s+(?:be|=)|[a-z]\s*=\s*\d|\d\s*[a-z]\s*[-+=])", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_OPERATORS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}


@dataclass(frozen=True)
class AnsweredRow:
    """One labeled prompt with both models' answers and their correctness (1/0)."""

    id: str
    prompt: str
    weak_response: str
    strong_response: str
    weak: float
    strong: float


@dataclass(frozen=True)
class StepCheck:
    """The arithmetic steps an answer writes: how many, how many wrong, and what they used.

    ``unsupported`` counts operands that are neither in the prompt, nor a result of an
    earlier step, nor a common constant: a number the answer made up is a classic slip.
    """

    checked: int
    wrong: int
    unsupported: int = 0
    negative: int = 0
    fractional: int = 0


def check_steps(answer: str, prompt: str = "") -> StepCheck:
    """Evaluate every ``a op b = c`` in the answer; a step counts as wrong beyond rounding of ``c``."""
    checked = wrong = unsupported = negative = fractional = 0
    known = _numbers(prompt) | _CONSTANTS
    inline_text = _ANNOTATION.sub(" ", answer)
    pairs = _ANNOTATION.findall(answer) + _INLINE_STEP.findall(inline_text)
    for expression, result in pairs:
        verdict = _step_is_right(expression, result)
        if verdict is None:
            continue
        checked += 1
        wrong += not verdict
        unsupported += len(_numbers(expression) - known)
        stated = _to_number(result) or 0.0
        negative += stated < 0 or result.lstrip().startswith("-")
        fractional += not stated.is_integer()
        known.add(stated)
    return StepCheck(checked, wrong, unsupported, negative, fractional)


#: Numbers an answer may use without the prompt giving them: units, halves, percentages, time.
_CONSTANTS = {0.0, 1.0, 2.0, 3.0, 4.0, 7.0, 10.0, 12.0, 24.0, 30.0, 52.0, 60.0, 100.0, 365.0, 1000.0}


def _numbers(text: str) -> set[float]:
    return {n for n in (_to_number(t.lstrip("-")) for t in _ANY_NUMBER.findall(text)) if n is not None}


def _step_is_right(expression: str, result: str) -> bool | None:
    """True/False for a step that can be evaluated, None for one that cannot."""
    value = _evaluate(expression)
    stated = _to_number(result)
    if value is None or stated is None:
        return None
    decimals = len(result.split(".")[1].rstrip("%").strip()) if "." in result else 0
    # "10/3 = 3.33" and "7/2 = 4" are rounding, not mistakes: allow half a unit of the last digit.
    return abs(value - stated) <= 0.5 * 10.0**-decimals + 1e-9 * abs(stated)


def _evaluate(expression: str) -> float | None:
    text = expression.replace("$", "").replace(",", "").replace("×", "*").replace("÷", "/")
    text = re.sub(r"\s[xX]\s", " * ", text).replace("%", "/100")
    try:
        return _eval_node(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None


def _eval_node(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval_node(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_eval_node(node.left), _eval_node(node.right))
    raise ValueError("not plain arithmetic")


def _to_number(text: str) -> float | None:
    cleaned = text.replace("$", "").replace(",", "").strip()
    scale = 0.01 if cleaned.endswith("%") else 1.0
    try:
        return float(cleaned.rstrip("%")) * scale
    except ValueError:
        return None


def final_answer(answer: str) -> tuple[float | None, bool]:
    """The answer's final number and whether a marker (``####``, "answer is", ``\\boxed``) stated it."""
    for marker in _FINAL_MARKERS:
        found = marker.findall(answer)
        if found:
            return _to_number(found[-1]), True
    numbers = _ANY_NUMBER.findall(answer)
    return (_to_number(numbers[-1]) if numbers else None), False


def looks_truncated(answer: str) -> bool:
    """True when the answer stops mid-expression: an open ``<<``, or a trailing operator or ``=``."""
    tail = answer.rstrip()
    return answer.count("<<") > answer.count(">>") or tail.endswith(("=", "+", "-", "*", "/", "x", "(", ",", ":"))


def last_sentence(answer: str) -> str:
    """The last non-empty sentence or line of the answer."""
    parts = [p for p in _SENTENCE_END.split(answer.strip()) if p.strip()]
    return parts[-1] if parts else ""


def answer_features(prompt: str, answer: str) -> list[float]:
    """The dense features named in ``DENSE_NAMES`` for one (prompt, answer) pair."""
    steps = check_steps(answer, prompt)
    final, marked = final_answer(answer)
    prompt_numbers = {_to_number(n) for n in _ANY_NUMBER.findall(prompt)} - {None}
    answer_number_list = [_to_number(n) for n in _ANY_NUMBER.findall(answer)]
    answer_numbers = set(answer_number_list) - {None}
    before_final = answer_number_list[:-1] if answer_number_list else []
    return [
        math.log1p(len(answer)),
        math.log1p(len(prompt)),
        min(len(answer) / max(len(prompt), 1), 10.0),
        float(marked),
        float(bool(_ANY_NUMBER.search(last_sentence(answer)))),
        float(looks_truncated(answer)),
        math.log1p(steps.checked),
        math.log1p(steps.wrong),
        steps.wrong / steps.checked if steps.checked else 0.0,
        float(final is not None and float(final).is_integer()),
        float(final is not None and final < 0),
        float(final is not None and final in prompt_numbers),
        float(final is not None and final in before_final),
        len(prompt_numbers & answer_numbers) / len(prompt_numbers) if prompt_numbers else 1.0,
        math.log1p(len(answer_number_list)),
        math.log1p(len(prompt_numbers)),
        math.log1p(len(_HEDGES.findall(answer.lower()))),
        float(bool(_ALGEBRA.search(answer))),
        math.log1p(steps.unsupported),
        float(_text_after_final(answer)),
        float(steps.negative > 0),
        math.log1p(steps.fractional),
    ]


def _text_after_final(answer: str) -> bool:
    """True when words follow the ``####`` number ("#### 520 (Thursday's revenue)"): a hedged answer."""
    tail = answer.rsplit("####", 1)[1] if "####" in answer else ""
    return bool(re.search(r"[A-Za-z]", tail))


def feature_matrix(prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """``answer_features`` for each pair, as rows of a float matrix."""
    rows = [answer_features(p, a) for p, a in zip(prompts, answers)]
    return np.array(rows, dtype=float).reshape(len(rows), len(DENSE_NAMES))


@dataclass
class AnswerVerifier:
    """A logistic model over the answer's n-grams and the dense checks; ``predict`` gives P(correct)."""

    vocabulary: Vocabulary
    model: LinearModel
    model_name: str = "verifier"
    card: dict[str, Any] = field(default_factory=dict)

    def predict(self, prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """P(answer is correct) for each pair, in order."""
        if len(prompts) != len(answers):
            raise ValueError("give one answer per prompt")
        if not prompts:
            return np.zeros(0)
        rows = self.vocabulary.transform(answers) if self.model.uses_text else None
        return self.model.predict(rows, feature_matrix(prompts, answers))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "name": self.model_name,
            "dense_features": list(DENSE_NAMES),
            "vocabulary": self.vocabulary.terms,
            "idf": self.vocabulary.idf.tolist(),
            "model": self.model.to_dict(),
            "card": self.card,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnswerVerifier:
        """Build from a parsed file; raises ValueError/KeyError/TypeError on any inconsistency."""
        if list(data["dense_features"]) != list(DENSE_NAMES):
            raise ValueError("its dense features differ from this version's")
        vocabulary = Vocabulary([str(t) for t in data["vocabulary"]], np.asarray(data["idf"], dtype=float))
        m = data["model"]
        model = LinearModel(
            weights=np.asarray(m["weights"], dtype=float),
            dense_weights=np.asarray(m["dense_weights"], dtype=float),
            dense_mean=np.asarray(m["dense_mean"], dtype=float),
            dense_scale=np.asarray(m["dense_scale"], dtype=float),
            bias=float(m["bias"]),
        )
        dense_sizes = {len(model.dense_weights), len(model.dense_mean), len(model.dense_scale)}
        if len(vocabulary.idf) != len(vocabulary.terms) or len(model.weights) not in (0, len(vocabulary.terms)):
            raise ValueError("its weights do not match its vocabulary")
        if dense_sizes != {len(DENSE_NAMES)}:
            raise ValueError("its dense weights do not match the dense features")
        return cls(vocabulary, model, str(data["name"]), dict(data["card"]))

    @classmethod
    def load(cls, path: Path) -> AnswerVerifier:
        """Read a verifier file; raises ModelFileError saying, in one sentence, what is wrong with it."""
        return read_model_file(path, MODEL_FORMAT, MODEL_VERSION, "answer verifier", "`turnout train-verifier`", cls.from_dict)

    def save(self, path: Path) -> tuple[Path, Path]:
        """Write the model JSON and its card ``<stem>.md``; returns both paths."""
        return write_model_file(path, self.to_dict(), render_card(self.model_name, self.card))


# --- training -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifierSettings:
    """How the verifier is fitted; the defaults were chosen by 5-fold CV on gsm8k.train.jsonl."""

    l2: float = 1e-3
    use_text: bool = True
    min_df: int = 3
    max_terms: int = 5000
    max_iter: int = 300
    #: Which answers of each row become training triples. Only the weak ones by default: a
    #: cascade scores the cheap tier's answers, and adding the strong model's (another style,
    #: 87% correct) lowered held-out AUC on weak answers from 0.80 to 0.74 in 5-fold CV.
    responses: tuple[str, ...] = ("weak",)


@dataclass(frozen=True)
class VerifierReport:
    """What ``train_verifier`` did: the files it wrote and the held-out figures."""

    model_path: Path
    card_path: Path
    rows: int
    held_out: dict[str, Any]
    seconds: float


def read_answered_rows(path: Path, min_rows: int = MIN_ROWS) -> list[AnsweredRow]:
    """Every row of a JSONL file with both answers; raises TrainingDataError naming the file and line."""

    def row(obj: dict[str, Any], path: Path, n: int) -> AnsweredRow:
        check_fields(obj, path, n, strings=("prompt", "weak_response", "strong_response"), numbers=("weak", "strong"), others=("id",))
        return AnsweredRow(
            str(obj["id"]), obj["prompt"], obj["weak_response"], obj["strong_response"], float(obj["weak"]), float(obj["strong"])
        )

    return read_jsonl(path, min_rows, "answered rows", row)


def triples(rows: Sequence[AnsweredRow], responses: Sequence[str] = ("weak", "strong")) -> tuple[list[str], list[str], np.ndarray]:
    """(prompts, answers, correctness) with one triple per row and named response."""
    prompts: list[str] = []
    answers: list[str] = []
    labels: list[float] = []
    for which in responses:
        for row in rows:
            prompts.append(row.prompt)
            answers.append(getattr(row, f"{which}_response"))
            labels.append(getattr(row, which))
    return prompts, answers, np.clip(np.array(labels, dtype=float), 0.0, 1.0)


def fit_verifier(
    prompts: Sequence[str], answers: Sequence[str], correct: np.ndarray,
    settings: VerifierSettings = VerifierSettings(), name: str = "verifier",
) -> AnswerVerifier:
    """A verifier fitted on (prompt, answer, correct) triples; ``correct`` may be soft (0..1)."""
    vocabulary = Vocabulary.fit(answers, min_df=settings.min_df, max_terms=settings.max_terms if settings.use_text else 0)
    rows = vocabulary.transform(answers)
    dense = feature_matrix(prompts, answers)
    model = fit_logistic(rows, dense, np.asarray(correct, dtype=float), settings.l2, FitSettings(max_iter=settings.max_iter))
    return AnswerVerifier(vocabulary, model, name)


def cross_validated_scores(
    rows: Sequence[AnsweredRow], folds: int = DEFAULT_FOLDS, seed: int = 0,
    settings: VerifierSettings = VerifierSettings(),
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold scores of each row's weak and strong answers.

    Folds are drawn over prompts, so both answers of a prompt are held out together: the
    model never saw the prompt (nor the other model's answer to it) it is scoring.
    """
    fold = np.random.default_rng(seed).permutation(len(rows)) % folds
    weak_scores, strong_scores = np.zeros(len(rows)), np.zeros(len(rows))
    for k in range(folds):
        train_rows = [rows[i] for i in np.where(fold != k)[0]]
        test_idx = np.where(fold == k)[0]
        verifier = fit_verifier(*triples(train_rows, settings.responses), settings=settings)
        prompts = [rows[i].prompt for i in test_idx]
        weak_scores[test_idx] = verifier.predict(prompts, [rows[i].weak_response for i in test_idx])
        strong_scores[test_idx] = verifier.predict(prompts, [rows[i].strong_response for i in test_idx])
    return weak_scores, strong_scores


def auc(scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (ties count half): P(a correct answer outscores a wrong one)."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float) >= 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    start = 0
    for end in range(1, len(s) + 1):  # average ranks over runs of tied scores
        if end == len(s) or sorted_s[end] != sorted_s[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def held_out_figures(rows: Sequence[AnsweredRow], weak_scores: np.ndarray, strong_scores: np.ndarray) -> dict[str, Any]:
    """AUC and accuracy at 0.5 on each model's answers, from out-of-fold scores."""
    figures: dict[str, Any] = {"rows": len(rows)}
    for which, scores in (("weak", weak_scores), ("strong", strong_scores)):
        labels = np.array([getattr(r, which) for r in rows]) >= 0.5
        figures[which] = {
            "answers_correct": float(labels.mean()),
            "auc": auc(scores, labels),
            "accuracy_at_0.5": float(((scores >= 0.5) == labels).mean()),
        }
    both_scores = np.concatenate([weak_scores, strong_scores])
    both_labels = np.array([r.weak for r in rows] + [r.strong for r in rows])
    figures["both"] = {"auc": auc(both_scores, both_labels)}
    return figures


def train_verifier(
    paths: Sequence[Path], out: Path, folds: int = DEFAULT_FOLDS, *, seed: int = 0,
    settings: VerifierSettings = VerifierSettings(), log: Callable[[str], None] = lambda message: None,
) -> VerifierReport:
    """Cross-validate on ``paths`` for the card, fit on all of it, write ``out`` and its card."""
    started = time.perf_counter()
    check_model_path(Path(out))
    per_file = {Path(p).name: read_answered_rows(Path(p)) for p in paths}
    for name, file_rows in per_file.items():
        wrong = next((r for r in file_rows if not (0 <= r.weak <= 1 and 0 <= r.strong <= 1)), None)
        if wrong:
            raise TrainingDataError(f"{name}: row {wrong.id!r} has weak {wrong.weak:g}, strong {wrong.strong:g}; the verifier "
                                    "learns whether an answer is correct, 1 or 0 (a judge's grade: scale it to 0..1).", Path(name))
    rows = [row for file_rows in per_file.values() for row in file_rows]
    if folds > len(rows):
        raise TrainingDataError(f"--folds {folds} is more than the {len(rows)} prompts; give fewer folds.", Path(out))
    held_out: dict[str, Any] = {}
    if folds > 1:
        log(f"cross-validating on {len(rows):,} prompts ({folds} folds)…")
        held_out = held_out_figures(rows, *cross_validated_scores(rows, folds, seed, settings))
    log(f"fitting on all {len(rows):,} prompts…")
    verifier = fit_verifier(*triples(rows, settings.responses), settings=settings, name=Path(out).stem)
    verifier.card = {
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "files": [{"path": name, "rows": len(r)} for name, r in per_file.items()],
        "rows": len(rows),
        "triples": len(rows) * len(settings.responses),
        "responses": ", ".join(settings.responses),
        "vocabulary_terms": len(verifier.vocabulary.terms),
        "l2": settings.l2,
        "held_out_method": (
            f"{folds}-fold cross-validation over prompts (seed {seed}): both answers to a prompt are scored by a "
            "model fitted without that prompt." if held_out else "No held-out evaluation was run (folds ≤ 1)."
        ),
        "held_out": held_out,
    }
    model_path, card_path = verifier.save(Path(out))
    return VerifierReport(model_path, card_path, len(rows), held_out, time.perf_counter() - started)


def render_card(model_name: str, card: Mapping[str, Any]) -> str:
    """The verifier's card as Markdown: its data, its features and its held-out figures."""
    lines = [f"# Answer verifier `{model_name}`", "", f"- format: `{MODEL_FORMAT}` version {MODEL_VERSION}"]
    for key in ("created", "rows", "triples", "responses", "vocabulary_terms", "l2"):
        if key in card:
            lines.append(f"- {key.replace('_', ' ')}: {card[key]}")
    files = card.get("files", [])
    if files:
        lines += ["", "## Training data", "", "| file | rows |", "|---|---|"]
        lines += [f"| `{f['path']}` | {f['rows']:,} |" for f in files]
    lines += ["", "## What it reads", "", "Answer n-grams (TF-IDF, the router's vocabulary code) and the dense checks: "
              + ", ".join(f"`{n}`" for n in DENSE_NAMES) + ". Score: P(answer correct)."]
    held_out = card.get("held_out", {})
    if held_out:
        lines += ["", "## Held-out figures", "", str(card.get("held_out_method", "")), ""]
        lines += ["| answers | correct | AUC | accuracy at 0.5 |", "|---|---|---|---|"]
        for which in ("weak", "strong"):
            m = held_out[which]
            lines.append(f"| {which} model's | {m['answers_correct']:.3f} | {m['auc']:.3f} | {m['accuracy_at_0.5']:.3f} |")
        lines.append(f"| both | | {held_out['both']['auc']:.3f} | |")
    lines += ["", "## Limits", "", "Trained on GSM8K answers of two models only: it knows grade-school arithmetic "
              "word problems and these models' styles. On other prompt kinds its score is a weak signal; pair it "
              "with the format checks (`format+verifier`)."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.verifier", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="labeled JSONL files with weak_response/strong_response")
    parser.add_argument("--out", type=Path, default=DEFAULT_VERIFIER_PATH, help="model file (its card goes beside it)")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="cross-validation folds for the card (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        report = train_verifier(args.paths, args.out, args.folds, seed=args.seed, log=lambda m: print(m, file=sys.stderr))
    except TurnoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {report.model_path} and {report.card_path} in {report.seconds:.1f}s")
    if report.held_out:
        h = report.held_out
        print(f"held-out AUC: weak answers {h['weak']['auc']:.3f}, strong answers {h['strong']['auc']:.3f}, both {h['both']['auc']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
