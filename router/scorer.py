"""The answer-scorer interface: (prompt, answer) in, a score in [0, 1] out (higher = more likely good).

A cascade answers with the cheap tier first and escalates the answers scoring below its
threshold. The kinds live here, each small: ``FormatScorer`` (cheap checks), ``LogprobScorer``
(token log-probabilities), ``VerifierScorer`` (the trained verifier of ``verifier.py``),
``JudgeScorer`` (an LLM judge: prompt building and reply parsing here, the call in the worker)
and ``CombinedScorer`` (format checks gate another scorer). ``load_scorer`` picks one by name.
``cost_weighted`` turns any of their scores into one that also weighs what escalating costs.
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import numpy as np

from router.features import detect_domain
from schemas.config import ScorerKind

if TYPE_CHECKING:
    from router.verifier import AnswerVerifier

#: Names ``load_scorer`` accepts; ``format+<kind>`` gates ``<kind>`` with the format checks.
SCORER_KINDS: tuple[str, ...] = get_args(ScorerKind)
#: What a scorer says when it has nothing to go on: neither keep nor escalate by default.
NEUTRAL = 0.5
#: Reasons that mark a ``NEUTRAL`` score as "no verdict" rather than a probability.
UNJUDGED = ("no_logprobs", "judge_unparsed", "judge_failed")


#: Prompt + answer characters at which ``cost_weighted`` leaves a score as it is (about a
#: GSM8K word problem and its worked answer).
REFERENCE_CHARS = 500.0


def cost_weighted(values: Sequence[float] | np.ndarray, prompts: Sequence[str], answers: Sequence[str], reference_chars: float = REFERENCE_CHARS) -> np.ndarray:
    """Scores whose odds are scaled by the size of the escalation each answer would cost.

    ``values`` read as P(answer good); escalating an answer pays the next tier for the prompt
    and an answer of about its size, so ``p/(1-p) * (len(prompt) + len(answer)) / reference_chars``
    ranks answers by their odds of being wrong per character of that call, and a threshold on
    it escalates the cheap fixes first. Same order as ``values`` among answers of one size;
    equal to them at ``reference_chars``; 0 and 1 stay (nearly) 0 and 1. Sizes are counted
    from one character, so an empty prompt and answer do not turn every score into 0.
    """
    p = np.clip(np.asarray(values, dtype=float), 1e-9, 1.0 - 1e-9)
    chars = np.fromiter((len(q) + len(a) for q, a in zip(prompts, answers)), dtype=float, count=len(p))
    odds = p / (1.0 - p) * np.maximum(chars, 1.0) / reference_chars
    weighted: np.ndarray = odds / (1.0 + odds)
    return weighted


@dataclass(frozen=True)
class AnswerScore:
    """A scorer's verdict on one answer: ``value`` in [0, 1], and why."""

    value: float
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Candidate:
    """One answer to score, with what the provider said about it."""

    prompt: str
    answer: str
    finish_reason: str | None = None
    logprobs: list[float] | None = None
    max_tokens: int | None = None


class AnswerScorer(abc.ABC):
    """Scores answers; ``score_batch`` is what a tier task calls on its micro-batch."""

    name: str = "scorer"

    @abc.abstractmethod
    def score(
        self, prompt: str, answer: str, *, finish_reason: str | None = None,
        logprobs: list[float] | None = None, max_tokens: int | None = None,
    ) -> AnswerScore:
        """Score one answer."""

    def score_batch(self, items: Sequence[Candidate]) -> list[AnswerScore]:
        """Score many answers; kinds with vectorised scoring override this."""
        return [
            self.score(c.prompt, c.answer, finish_reason=c.finish_reason, logprobs=c.logprobs, max_tokens=c.max_tokens)
            for c in items
        ]


# --- format checks ----------------------------------------------------------------------------

# Matched against the head of the lower-cased answer, apostrophes straightened: a refusal
# opens the reply, while "I cannot see why…" deep inside a solution is no refusal.
_REFUSALS = (
    "i cannot", "i can't", "i can not", "i'm sorry, but", "i am sorry, but", "sorry, but i", "as an ai",
    "i'm unable to", "i am unable to", "i won't be able", "i'm not able to", "i am not able to",
)
_REFUSAL_HEAD_CHARS = 200
_FINAL_ANSWER = re.compile(r"####|answer\s+is|\\boxed|final answer", re.IGNORECASE)
_DIGIT = re.compile(r"\d")
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
#: Without a finish reason, an answer this close to ``max_tokens`` (at ~4 characters a token)
#: is taken as cut off.
_TRUNCATION_MARGIN = 0.98


class FormatScorer(AnswerScorer):
    """0.0 with the failed checks as reasons, else 1.0.

    Binary on purpose: the checks find known-bad answers and say nothing about the good ones,
    so a pass is "no objection" (1.0) and any threshold in (0, 1] escalates exactly the failures.
    """

    name = "format"

    def score(
        self, prompt: str, answer: str, *, finish_reason: str | None = None,
        logprobs: list[float] | None = None, max_tokens: int | None = None,
    ) -> AnswerScore:
        failures = format_failures(prompt, answer, finish_reason=finish_reason, max_tokens=max_tokens)
        return AnswerScore(0.0 if failures else 1.0, failures or ["format:ok"])


#: Finish reasons of an answer that calls a tool: its text is empty by design.
TOOL_CALL_FINISHES = ("tool_calls", "function_call")


def format_failures(prompt: str, answer: str, *, finish_reason: str | None = None, max_tokens: int | None = None) -> list[str]:
    """The names of the format checks the answer fails: empty, refusal, truncated, no_final_answer.

    An answer that calls a tool is not judged by its (empty) text: it passes."""
    text = answer.strip()
    if not text:
        return [] if finish_reason in TOOL_CALL_FINISHES else ["empty"]
    failures = []
    head = text[:_REFUSAL_HEAD_CHARS].lower().replace("\u2019", "'")
    if any(phrase in head for phrase in _REFUSALS):
        failures.append("refusal")
    if finish_reason == "length" or (
        finish_reason is None and max_tokens is not None and len(answer) / 4 >= _TRUNCATION_MARGIN * max_tokens
    ):
        failures.append("truncated")
    if detect_domain(prompt) == "math" and not _states_final_answer(text):
        failures.append("no_final_answer")
    return failures


def _states_final_answer(text: str) -> bool:
    """True when a marker ("####", "answer is", ``\\boxed``) or a number ends the answer."""
    sentences = [s for s in _SENTENCES.split(text) if s.strip()]
    return bool(_FINAL_ANSWER.search(text)) or bool(sentences and _DIGIT.search(sentences[-1]))


# --- log-probabilities ------------------------------------------------------------------------

#: A token log-probability below this counts as this: -inf (probability 0) must not make the
#: mean -inf and swallow every other token.
_LOGPROB_FLOOR = -20.0


class LogprobScorer(AnswerScorer):
    """exp(mean token log-probability): the geometric mean of the token probabilities.

    With ``window`` set, the lowest mean over any ``window`` consecutive tokens instead: on a
    long answer one confused step is diluted in the overall mean but stands out in a window.
    """

    name = "logprob"

    def __init__(self, window: int | None = None) -> None:
        if window is not None and window < 1:
            raise ValueError("the logprob window must be at least one token")
        self.window = window

    def score(
        self, prompt: str, answer: str, *, finish_reason: str | None = None,
        logprobs: list[float] | None = None, max_tokens: int | None = None,
    ) -> AnswerScore:
        if not answer.strip() and finish_reason not in TOOL_CALL_FINISHES:
            return AnswerScore(0.0, ["empty"])  # no tokens to judge, and no good answer is empty
        values = [max(v, _LOGPROB_FLOOR) if not math.isnan(v) else _LOGPROB_FLOOR for v in logprobs or []]
        if not values:
            return AnswerScore(NEUTRAL, ["no_logprobs"])
        mean = _lowest_window_mean(values, self.window) if self.window else sum(values) / len(values)
        label = f"min{self.window}" if self.window else "mean"
        return AnswerScore(math.exp(mean), [f"logprob:{label}={mean:.3f}"])


def _lowest_window_mean(values: list[float], window: int) -> float:
    if len(values) <= window:
        return sum(values) / len(values)
    total = sum(values[:window])
    lowest = total
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        lowest = min(lowest, total)
    return lowest / window


# --- the trained verifier ---------------------------------------------------------------------


class VerifierScorer(AnswerScorer):
    """P(answer correct) from the trained verifier (``router/verifier.py``)."""

    name = "verifier"

    def __init__(self, verifier: AnswerVerifier) -> None:
        self.verifier = verifier

    @classmethod
    def load(cls, path: Path | None = None) -> VerifierScorer:
        """The verifier in ``path`` (default: the shipped model); raises ModelFileError if unusable."""
        from router.verifier import DEFAULT_VERIFIER_PATH, AnswerVerifier

        return cls(AnswerVerifier.load(Path(path) if path else DEFAULT_VERIFIER_PATH))

    def score(
        self, prompt: str, answer: str, *, finish_reason: str | None = None,
        logprobs: list[float] | None = None, max_tokens: int | None = None,
    ) -> AnswerScore:
        return self.score_batch([Candidate(prompt, answer)])[0]

    def score_batch(self, items: Sequence[Candidate]) -> list[AnswerScore]:
        values = self.verifier.predict([c.prompt for c in items], [c.answer for c in items])
        tag = f"verifier:{self.verifier.model_name}"
        return [AnswerScore(float(v), [tag]) for v in values]


# --- the LLM judge ----------------------------------------------------------------------------

JUDGE_SYSTEM = (
    "You grade answers. Read the question and the proposed answer, check the reasoning and the "
    "final result, and end your reply with one line of the form 'Score: N/10', where 10 means "
    "certainly correct and complete and 0 means wrong, empty or a refusal."
)
_FRACTION = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_BRACKETED = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_LABELLED = re.compile(r"\b(?:score|rating|grade)\s*[:=]?\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
# Negative verdicts first: "INCORRECT" contains "CORRECT", "NOT GOOD" contains "GOOD".
# "yes"/"no"/"wrong" only count as the whole reply: in prose ("no error", "nothing wrong") they mislead.
_BAD_WORDS = re.compile(r"\b(?:bad|incorrect|fail(?:ed)?|invalid|not\s+(?:good|correct|valid))\b", re.IGNORECASE)
_GOOD_WORDS = re.compile(r"\b(?:good|correct|pass(?:ed)?|valid)\b", re.IGNORECASE)
_BARE_VERDICTS = {"yes": 1.0, "no": 0.0, "right": 1.0, "wrong": 0.0, "true": 1.0, "false": 0.0}


def judge_prompt(prompt: str, answer: str) -> list[dict[str, str]]:
    """The chat messages asking a judge model to grade ``answer``; ``parse_judge_reply`` reads its reply."""
    user = f"Question:\n{prompt}\n\nProposed answer:\n{answer}\n\nGrade the proposed answer."
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_judge_reply(text: str) -> float:
    """A judge's reply as a score in [0, 1]; raises ValueError when it holds no verdict.

    Reads, in order: "N/10" or "N out of M"; "[[N]]" (MT-Bench, out of 10); "N%"; "Score: N"
    (a number above 1 read as out of 10); then a verdict word (GOOD/CORRECT/PASS/VALID against
    BAD/INCORRECT/FAIL/INVALID; the last one wins, as judges state the verdict at the end), or a
    reply that is just YES/NO/RIGHT/WRONG.
    """
    for reader in (_read_fraction, _read_bracketed, _read_percent, _read_labelled, _read_verdict):
        value = reader(text)
        if value is not None:
            return min(max(value, 0.0), 1.0)
    raise ValueError(f"the judge's reply holds no score or verdict: {text[:80]!r}")


def _read_fraction(text: str) -> float | None:
    found = _FRACTION.findall(text)
    if not found:
        return None
    numerator, denominator = (float(x) for x in found[-1])
    return numerator / denominator if denominator > 0 else None


def _read_bracketed(text: str) -> float | None:
    found = _BRACKETED.findall(text)
    return float(found[-1]) / 10.0 if found else None


def _read_percent(text: str) -> float | None:
    found = _PERCENT.findall(text)
    return float(found[-1]) / 100.0 if found else None


def _read_labelled(text: str) -> float | None:
    found = _LABELLED.findall(text)
    if not found:
        return None
    value = float(found[-1])
    return value if value <= 1.0 else value / 10.0


def _read_verdict(text: str) -> float | None:
    bare = text.strip().strip(".!*").lower()
    if bare in _BARE_VERDICTS:
        return _BARE_VERDICTS[bare]
    bad_spans = [(m.start(), m.end()) for m in _BAD_WORDS.finditer(text)]
    verdicts = [(start, 0.0) for start, _ in bad_spans]
    for m in _GOOD_WORDS.finditer(text):
        if not any(start <= m.start() < end for start, end in bad_spans):  # the "correct" of "not correct"
            verdicts.append((m.start(), 1.0))
    return max(verdicts)[1] if verdicts else None


class JudgeScorer(AnswerScorer):
    """An LLM judge. ``ask`` sends chat messages to the judge deployment and returns its reply text.

    This class holds no provider code (``router/`` never calls a model): the worker passes an
    ``ask`` that makes the call and counts its cost. An unreadable reply scores ``NEUTRAL``.
    """

    name = "judge"

    def __init__(self, ask: Callable[[list[dict[str, str]]], str] | None = None) -> None:
        self.ask = ask

    def score(
        self, prompt: str, answer: str, *, finish_reason: str | None = None,
        logprobs: list[float] | None = None, max_tokens: int | None = None,
    ) -> AnswerScore:
        if self.ask is None:
            raise NotImplementedError("JudgeScorer needs an ask function that calls the judge deployment.")
        return self.from_reply(self.ask(judge_prompt(prompt, answer)))

    @staticmethod
    def from_reply(reply: str) -> AnswerScore:
        """The score of a judge reply the caller obtained itself."""
        try:
            return AnswerScore(parse_judge_reply(reply), ["judge"])
        except ValueError:
            return AnswerScore(NEUTRAL, ["judge_unparsed"])


# --- combining and loading --------------------------------------------------------------------


class CombinedScorer(AnswerScorer):
    """The format checks gate: a failed check scores 0.0, a pass defers to ``then``."""

    def __init__(self, then: AnswerScorer, gate: FormatScorer | None = None) -> None:
        self.gate = gate or FormatScorer()
        self.then = then
        self.name = f"format+{then.name}"

    def score(
        self, prompt: str, answer: str, *, finish_reason: str | None = None,
        logprobs: list[float] | None = None, max_tokens: int | None = None,
    ) -> AnswerScore:
        return self.score_batch([Candidate(prompt, answer, finish_reason, logprobs, max_tokens)])[0]

    def score_batch(self, items: Sequence[Candidate]) -> list[AnswerScore]:
        gated = self.gate.score_batch(items)
        passed = [i for i, s in enumerate(gated) if s.value > 0.0]
        # Only answers that pass the gate reach ``then``: a failed one costs no judge call.
        for i, scored in zip(passed, self.then.score_batch([items[i] for i in passed])):
            gated[i] = scored
        return gated


def load_scorer(kind: str, model_path: str | None = None) -> AnswerScorer:
    """The scorer named ``kind`` (one of ``SCORER_KINDS``).

    ``model_path`` is the verifier file for the ``verifier`` kinds (default: the shipped model);
    an unusable file raises ModelFileError with one sentence, so a worker fails at start.
    A ``judge`` scorer comes without its ``ask`` function: set ``scorer.ask`` (or
    ``scorer.then.ask`` for ``format+judge``) or use ``JudgeScorer.from_reply``.
    """
    if kind not in SCORER_KINDS:
        raise ValueError(f"unknown scorer {kind!r}; choose one of {', '.join(SCORER_KINDS)}")
    gated, _, base = kind.rpartition("+")
    scorer: AnswerScorer
    if base == "format":
        return FormatScorer()
    if base == "logprob":
        scorer = LogprobScorer()
    elif base == "verifier":
        scorer = VerifierScorer.load(Path(model_path) if model_path else None)
    else:
        scorer = JudgeScorer()
    return CombinedScorer(scorer) if gated else scorer
