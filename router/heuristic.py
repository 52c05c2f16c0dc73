"""A zero-training classifier: a weighted sum of cheap signs that a prompt is hard.

It exists so turnout routes sensibly before anyone has labeled data, and as the fallback
when no trained model file is present. The weights are hand-set, not fitted: read each
as "this sign moves the score by about this much in log-odds".
"""

from __future__ import annotations

import math
import re
from itertools import islice

from router.classifier import Classifier, Score
from router.features import excerpt  # a long prompt is read as the trained router reads it

# Matched against the lower-cased excerpt (case-insensitive alternations cost several times
# more), and only when one of the sign's cues, plain substrings every match contains, is
# there: a substring test is ~100x cheaper than the regex, and most prompts show few signs.
_SIGNS: tuple[tuple[str, tuple[str, ...], re.Pattern[str], float], ...] = (
    (
        "code",
        ("```", "def ", "class ", "function", "#include", "select", "=>", "import "),
        re.compile(r"```|\bdef |\bclass |\bfunction\b|#include|\bselect\b|=>|\bimport \w"),
        1.1,
    ),
    (
        "math",
        ("\\frac", "\\sum", "\\int", "integral", "derivative", "prove", "theorem", "equation"),
        re.compile(r"\\frac|\\sum|\\int|\bintegral\b|\bderivative\b|\bprove\b|\btheorem\b|\bequation\b"),
        1.2,
    ),
    (
        "reasoning",
        ("step", "explain why", "analy", "compare", "trade", "justify"),
        re.compile(r"\bstep[- ]by[- ]step\b|\bexplain why\b|\banaly[sz]e\b|\bcompare\b|\btrade-?offs?\b|\bjustify\b"),
        0.8,
    ),
    (
        "design",
        ("architect", "design ", "optimi", "algorithm", "complexity"),
        re.compile(r"\barchitect|\bdesign (a|an|the)\b|\boptimi[sz]e\b|\balgorithm\b|\bcomplexity\b"),
        0.9,
    ),
    (
        "constraints",
        ("must", "exactly", "at least", "at most", "without", "ensure"),
        re.compile(r"\bmust\b|\bexactly\b|\bat least\b|\bat most\b|\bwithout\b|\bensure\b"),
        0.35,
    ),
    (
        "numbers",
        ("",),  # no cue: always scanned
        re.compile(r"\d+(\.\d+)?\s*(%|percent|dollars|\$|km|kg|hours|minutes)|\$\d"),
        0.5,
    ),
)
_SIMPLE = re.compile(r"^\s*(hi|hello|thanks|thank you|what is|who is|define|translate|list)\b")
#: A sign counts up to this many times; scanning stops there.
_MAX_HITS = 3
_BIAS = -1.6


class HeuristicClassifier(Classifier):
    """Scores prompts by length, code, math, reasoning words and stacked constraints."""

    name = "heuristic"

    def score(self, text: str) -> Score:
        head = excerpt(text).lower()
        logit = _BIAS + _length_logit(len(text))
        reasons: list[str] = []
        for name, cues, pattern, weight in _SIGNS:
            if not any(cue in head for cue in cues):
                continue
            hits = sum(1 for _ in islice(pattern.finditer(head), _MAX_HITS))
            if hits:
                logit += weight * hits**0.5
                reasons.append(name)
        questions = head.count("?")
        if questions > 1:
            logit += 0.25 * min(questions - 1, 4)
            reasons.append("several_questions")
        if _SIMPLE.match(head) and len(text) < 200:
            logit -= 1.0
            reasons.append("simple_opening")
        return Score(_sigmoid(logit), reasons or ["plain"])


def _length_logit(chars: int) -> float:
    """Longer prompts tend to be harder; the effect flattens on a log scale past ~2k chars."""
    return 0.55 * (math.log1p(chars) - math.log1p(200))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
