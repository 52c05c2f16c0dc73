"""A zero-training classifier: a weighted sum of cheap signs that a prompt is hard.

It exists so turnout routes sensibly before anyone has labeled data, and as the fallback
when no trained model file is present. The weights are hand-set, not fitted: read each
as "this sign moves the score by about this much in log-odds".
"""

from __future__ import annotations

import math
import re

from router.classifier import Classifier, Score

#: Only the head of a long prompt is scanned: the signs show early, and this bounds the cost.
SCAN_CHARS = 4000

_SIGNS: tuple[tuple[str, re.Pattern[str], float], ...] = (
    ("code", re.compile(r"```|\bdef |\bclass |\bfunction\b|#include|\bSELECT\b|=>|\bimport \w", re.I), 1.1),
    ("math", re.compile(r"\\frac|\\sum|\\int|\bintegral\b|\bderivative\b|\bprove\b|\btheorem\b|\bequation\b", re.I), 1.2),
    (
        "reasoning",
        re.compile(r"\bstep[- ]by[- ]step\b|\bexplain why\b|\banaly[sz]e\b|\bcompare\b|\btrade-?offs?\b|\bjustify\b", re.I),
        0.8,
    ),
    ("design", re.compile(r"\barchitect|\bdesign (a|an|the)\b|\boptimi[sz]e\b|\balgorithm\b|\bcomplexity\b", re.I), 0.9),
    ("constraints", re.compile(r"\bmust\b|\bexactly\b|\bat least\b|\bat most\b|\bwithout\b|\bensure\b", re.I), 0.35),
    ("numbers", re.compile(r"\d+(\.\d+)?\s*(%|percent|dollars|\$|km|kg|hours|minutes)|\$\d", re.I), 0.5),
)
_SIMPLE = re.compile(r"^\s*(hi|hello|thanks|thank you|what is|who is|define|translate|list)\b", re.I)
_QUESTION = re.compile(r"\?")
_BIAS = -1.6


class HeuristicClassifier(Classifier):
    """Scores prompts by length, code, math, reasoning words and stacked constraints."""

    name = "heuristic"

    def score(self, text: str) -> Score:
        head = text[:SCAN_CHARS]
        logit = _BIAS + _length_logit(len(text))
        reasons: list[str] = []
        for name, pattern, weight in _SIGNS:
            hits = len(pattern.findall(head))
            if hits:
                logit += weight * min(hits, 3) ** 0.5
                reasons.append(name)
        questions = len(_QUESTION.findall(head))
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
