"""Cheap text features for the trained router: TF-IDF word n-grams, a few counts, and the prompt's kind.

Everything here runs per prompt in well under a millisecond: a regex tokenizer, dict look-ups
against a fixed vocabulary, and numpy over a whole batch at once. No hashing of strings with
``hash()`` (it changes between processes); the vocabulary is stored as a list in the model file.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from schemas.config import PROMPT_KINDS

#: The router reads at most this much of a prompt (``excerpt``): its n-grams, counts and kind
#: come from the excerpt, and only ``log_chars`` sees the whole length. A pasted document then
#: costs no more to score than a page; ~1% of the shared data's prompts are longer.
SCAN_CHARS = 2000
#: Of a longer prompt's excerpt, the characters taken from its end: the question and the
#: options of a multiple-choice prompt, or the instruction after a pasted text, sit there.
TAIL_CHARS = 1000
#: What ``tokens`` reads of a text at most: the answer verifier's working, whose final answer
#: sits at the end, is read this far.
MAX_TOKENIZED_CHARS = 6000

_TOKEN = re.compile(r"[a-z]+|\d+(?:[.,/]\d+)*|[^\sa-z\d]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CHOICE_LINE = re.compile(r"^[ \t]*\(?[A-Ea-e][.)][ \t]", re.MULTILINE)
# Plain substring counts: a regex alternation with word boundaries costs ~20x more per prompt.
# Code markers are ones English prose rarely contains ("class", "return" and "import" do).
_CODE_MARKERS = ("```", "def ", "()", ";\n", "{", "}", "=>", "#include", "</")
_MATH_MARKERS = ("=", "+", "*", "/", "^", "%", "$", "\\frac", "\\sqrt")
_QUESTION_CUES = ("?", "how many", "how much", "how long", "how far", "how old", "calculate", "find", "what is")
# Applied to lower-cased text: case-insensitive alternations are several times slower.
_NUMBER_WORD = re.compile(
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|hundred|"
    r"thousand|million|twice|double|triple|half|third|quarter|percent|dozen)\b"
)

#: The prompt kinds the router keeps a sub-model for; ``general`` has no training data of its
#: own and is scored by the heuristic. A tier's ``min_score_by_kind`` names them too.
DOMAINS = PROMPT_KINDS

#: Names of the dense features, in the order ``dense_features`` returns them.
DENSE_NAMES = (
    "log_chars",
    "log_words",
    "log_lines",
    "log_numbers",
    "log_distinct_numbers",
    "max_number_digits",
    "has_decimal",
    "log_math_symbols",
    "log_code_markers",
    "log_question_marks",
    "mean_word_length",
    "long_word_share",
    "is_choice",
)


def excerpt(text: str) -> str:
    """The text itself up to ``SCAN_CHARS``; past that, its head and its last ``TAIL_CHARS``."""
    if len(text) <= SCAN_CHARS:
        return text
    return text[: SCAN_CHARS - TAIL_CHARS - 1] + "\n" + text[-TAIL_CHARS:]


def tokens(text: str) -> list[str]:
    """Lower-cased words, numbers folded to ``<n>``, punctuation, and adjacent-pair bigrams
    (of the first ``MAX_TOKENIZED_CHARS``; the router passes ``excerpt``s, shorter still)."""
    words = ["<n>" if t[0].isdigit() else t for t in _TOKEN.findall(text[:MAX_TOKENIZED_CHARS].lower())]
    return words + list(map(" ".join, zip(words, words[1:])))


def detect_domain(text: str) -> str:
    """``choice`` for multiple-choice questions, ``math`` for word problems, else ``general``."""
    return describe(text)[0]


def dense_features(text: str) -> list[float]:
    """The counts named in ``DENSE_NAMES``, log-scaled so one huge prompt cannot dominate."""
    return describe(text)[1]


def describe(prompt: str) -> tuple[str, list[float]]:
    """The prompt's kind and its dense features, in one pass over its ``excerpt``."""
    text = excerpt(prompt)
    words = text.split()
    numbers = _NUMBER.findall(text)
    code_markers = sum(map(text.count, _CODE_MARKERS))
    is_choice = len(_CHOICE_LINE.findall(text)) >= 3
    n_words = max(len(words), 1)
    dense = [
        math.log1p(len(prompt)),
        math.log1p(len(words)),
        math.log1p(text.count("\n")),
        math.log1p(len(numbers)),
        math.log1p(len(set(numbers))),
        float(max(map(len, numbers), default=0)),
        float(any("." in n or "," in n for n in numbers)),
        math.log1p(sum(map(text.count, _MATH_MARKERS))),
        math.log1p(code_markers),
        math.log1p(text.count("?")),
        sum(map(len, words)) / n_words,
        sum(map((9).__le__, map(len, words))) / n_words,  # words of 9+ characters (as \S{9,} finds them)
        float(is_choice),
    ]
    return _kind(text, is_choice, len(numbers), code_markers), dense


def _kind(text: str, is_choice: bool, n_numbers: int, code_markers: int) -> str:
    if is_choice:
        return "choice"
    if code_markers:
        return "general"
    lower = text.lower()
    if not any(cue in lower for cue in _QUESTION_CUES):  # first: the cheap test rules most prompts out
        return "general"
    quantities = n_numbers if n_numbers >= 2 else n_numbers + len(_NUMBER_WORD.findall(lower))
    return "math" if quantities >= 2 else "general"


def describe_batch(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``describe`` for each text: the kinds, and the dense features as rows of a matrix."""
    described = [describe(t) for t in texts]
    dense = np.array([d for _, d in described], dtype=float).reshape(len(texts), len(DENSE_NAMES))
    return [k for k, _ in described], dense


def dense_matrix(texts: Sequence[str]) -> np.ndarray:
    """``dense_features`` for each text, as rows of a float matrix."""
    return describe_batch(texts)[1]


@dataclass(frozen=True)
class SparseRows:
    """A CSR matrix in three numpy arrays; just enough algebra for logistic regression."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    n_cols: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def dot(self, weights: np.ndarray) -> np.ndarray:
        """X @ w."""
        products = self.data * weights[self.indices]
        sums: np.ndarray = np.concatenate([[0.0], np.cumsum(products)])
        result: np.ndarray = sums[self.indptr[1:]] - sums[self.indptr[:-1]]
        return result

    def t_dot(self, values: np.ndarray) -> np.ndarray:
        """X.T @ v."""
        rows = np.repeat(np.arange(self.n_rows), np.diff(self.indptr))
        return np.bincount(self.indices, weights=self.data * values[rows], minlength=self.n_cols)

    def take(self, rows: np.ndarray) -> SparseRows:
        """The sub-matrix of the given rows, in that order."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        picks = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(rows) else np.array([], int)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        return SparseRows(indptr, self.indices[picks], self.data[picks], self.n_cols)


@dataclass
class Vocabulary:
    """The n-grams the model knows, with their inverse document frequencies."""

    terms: list[str]
    idf: np.ndarray
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {term: i for i, term in enumerate(self.terms)}

    @classmethod
    def fit(cls, texts: Iterable[str], min_df: int = 3, max_terms: int = 20000) -> Vocabulary:
        """The ``max_terms`` most frequent n-grams seen in at least ``min_df`` texts."""
        df: Counter[str] = Counter()
        n = 0
        for text in texts:
            df.update(set(tokens(text)))
            n += 1
        kept = sorted((t for t, c in df.items() if c >= min_df), key=lambda t: (-df[t], t))[:max_terms]
        idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in kept])
        return cls(kept, idf)

    def transform(self, texts: Sequence[str]) -> SparseRows:
        """Sublinear TF-IDF rows, each scaled to unit length."""
        lookup = self.index.get
        ids: list[int] = []
        lengths: list[int] = []
        for text in texts:
            grams = tokens(text)
            ids.extend(map(lookup, grams, repeat(-1)))  # C-level loop; unknown n-grams become -1
            lengths.append(len(grams))
        n_terms = len(self.terms)
        rows = np.repeat(np.arange(len(texts)), lengths)
        cols = np.asarray(ids, dtype=np.int64)
        known = cols >= 0
        keys, counts = np.unique(rows[known] * n_terms + cols[known], return_counts=True)
        row_of, col = np.divmod(keys, max(n_terms, 1))
        values = (1.0 + np.log(counts)) * self.idf[col]
        norms = np.sqrt(np.bincount(row_of, weights=values**2, minlength=len(texts)))
        values = values / norms[row_of]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row_of, minlength=len(texts)))])
        return SparseRows(indptr, col, values, n_terms)
