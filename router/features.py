"""Cheap text features for the trained router: TF-IDF word n-grams, a few counts, word-problem
cues, and the prompt's kind.

Everything here runs per prompt in well under a millisecond: a regex tokenizer, dict look-ups
against a fixed vocabulary, and numpy over a whole batch at once. No hashing of strings with
``hash()`` (it changes between processes); the vocabulary is stored as a list in the model file.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import compress, repeat

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


#: Word-problem cues, each a group of whole words (lower case) counted together; a word ending
#: in ``*`` counts every word it begins, and ``%``/``$`` count the character.
_CUES: dict[str, tuple[str, ...]] = {
    "each": ("each",),
    "per": ("per", "an hour", "a day", "a week"),
    "times": ("times",),
    "twice": ("twice", "double", "triple", "thrice"),
    "half": ("half", "third", "quarter", "fourth"),
    "remain": ("remain*", "left", "rest", "leftover"),
    "total": ("total", "altogether", "combined", "in all", "sum"),
    "average": ("average", "mean"),
    "percent": ("%", "percent*"),
    "money": ("$", "dollar", "dollars", "cent", "cents"),
    "compare": ("more", "less", "fewer", "longer", "shorter", "older", "younger", "than"),
    "time": tuple(f"{unit}{s}" for unit in ("hour", "minute", "second", "day", "week", "month", "year") for s in ("", "s")),
    "condition": ("if", "after", "then", "before", "until", "instead", "but", "however", "while"),
    "rate": tuple(f"{w}*" for w in ("rate", "speed", "mph", "profit", "discount", "interest", "tax", "tip", "cost", "price")),
    "every": ("every",),
    "ratio": ("ratio", "proportion", "fraction"),
}
_CUE_GROUPS = tuple(_CUES)
_CUE_WORDS = {w: g for g, ws in enumerate(_CUES.values()) for w in ws if not w.endswith("*")}
_CUE_PREFIX_GROUPS = tuple((w[:-1], g) for g, ws in enumerate(_CUES.values()) for w in ws if w.endswith("*"))
_CUE_PREFIXES = tuple(prefix for prefix, _ in _CUE_PREFIX_GROUPS)
_CUE_PHRASES = tuple(w for w in _CUE_WORDS if " " in w)
_CUE_PHRASE = re.compile(r"\b(?:" + "|".join(_CUE_PHRASES) + r")\b")
_NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred thousand "
    "million twice double triple half third quarter dozen".split()
)
_WORD = re.compile(r"\w+")
_DIGIT = re.compile(r"\d")
_SENTENCE_END = re.compile(r"[.!?]+\s")
_FRACTION = re.compile(r"\b\d+/\d+\b")
#: ``log_largest_number`` stops here (log1p ≈ 27.6): far above any word problem's numbers.
_LARGEST_NUMBER = 1e12

#: Names of the word-problem features, in the order ``word_problem_features`` returns them. The
#: first eleven read the prompt's quantities and shape; four of them repeat a dense count
#: (numbers, distinct numbers, question marks, words), as in the model measured in CV. Then
#: one count per cue group.
WORD_PROBLEM_NAMES = (
    "log_numbers",
    "log_distinct_numbers",
    "log_number_words",
    "log_sentences",
    "log_question_marks",
    "log_fractions",
    "has_decimal_point",
    "log_largest_number",
    "log_words",
    "numbers_per_word",
    "log_quantity_sentences",
    *(f"log_cue_{group}" for group in _CUE_GROUPS),
)


#: The feature sets a kind's model can read, as a model file names them: ``text`` the TF-IDF
#: n-grams of the excerpt, ``dense`` the counts of ``DENSE_NAMES`` (every model reads them),
#: ``word_problem`` those of ``WORD_PROBLEM_NAMES`` (after the dense ones).
FEATURE_SETS = ("text", "dense", "word_problem")


def dense_width(features: Collection[str]) -> int:
    """How many dense columns a model reading the feature sets ``features`` takes."""
    return len(DENSE_NAMES) + (len(WORD_PROBLEM_NAMES) if "word_problem" in features else 0)


def dense_inputs(features: Collection[str], texts: Sequence[str], dense: np.ndarray) -> np.ndarray:
    """The dense columns of ``texts`` for a model reading ``features``: their ``describe_batch``
    counts ``dense``, then their word-problem counts when it reads those."""
    if "word_problem" not in features:
        return dense
    return np.hstack([dense, word_problem_matrix(texts)])


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


def word_problem_features(text: str) -> list[float]:
    """The counts named in ``WORD_PROBLEM_NAMES``, of the prompt's ``excerpt``, log-scaled."""
    text = excerpt(text)
    numbers = _NUMBER.findall(text)
    words = text.split()
    lower = text.lower()
    tokens = _WORD.findall(lower)
    sentences = [s for s in _SENTENCE_END.split(lower) if s.strip()]
    # Most sentences of a word problem hold a digit, so few are tokenized a second time.
    quantity_sentences = sum(1 for s in sentences if _DIGIT.search(s) or not _NUMBER_WORDS.isdisjoint(_WORD.findall(s)))
    return [
        math.log1p(len(numbers)),
        math.log1p(len(set(numbers))),
        math.log1p(sum(map(_NUMBER_WORDS.__contains__, tokens))),
        math.log1p(len(sentences)),
        math.log1p(text.count("?")),
        math.log1p(len(_FRACTION.findall(text)) if "/" in text else 0),
        float(any("." in n for n in numbers)),
        math.log1p(_largest(numbers)),
        math.log1p(len(words)),
        len(numbers) / max(len(words), 1),
        math.log1p(quantity_sentences),
        *map(math.log1p, _cue_counts(lower, tokens)),
    ]


def _cue_counts(lower: str, tokens: list[str]) -> list[int]:
    """How many words of each ``_CUES`` group the lower-cased text holds, given its ``\\w+`` tokens.

    Whole words are dict look-ups mapped in C, and only tokens that begin with a prefix cue, or
    texts that hold a phrase cue, take a second look: one regex per group cost five times as much.
    """
    counts = [0] * len(_CUES)
    for group, n in Counter(map(_CUE_WORDS.get, tokens)).items():
        if group is not None:
            counts[group] += n
    for token in compress(tokens, map(str.startswith, tokens, repeat(_CUE_PREFIXES))):
        counts[next(g for prefix, g in _CUE_PREFIX_GROUPS if token.startswith(prefix))] += 1
    if any(map(lower.__contains__, _CUE_PHRASES)):
        for phrase in _CUE_PHRASE.findall(lower):
            counts[_CUE_WORDS[phrase]] += 1
    for symbol in "%$":
        counts[_CUE_WORDS[symbol]] += lower.count(symbol)
    return counts


def _largest(numbers: Sequence[str]) -> float:
    """The largest of the numbers (thousands commas dropped), capped so that a run of digits
    cannot make an infinite feature; ones like ``1.2.3`` are skipped."""
    largest = 0.0
    for number in numbers:
        try:
            largest = max(largest, float(number.replace(",", "")))
        except ValueError:
            continue
    return min(largest, _LARGEST_NUMBER)


def word_problem_matrix(texts: Sequence[str]) -> np.ndarray:
    """``word_problem_features`` for each text, as rows of a float matrix."""
    rows = [word_problem_features(t) for t in texts]
    return np.array(rows, dtype=float).reshape(len(texts), len(WORD_PROBLEM_NAMES))


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
        result = np.zeros(self.n_rows)
        filled = self._filled_rows
        if len(filled):  # reduceat sums each row's products; an empty row would take its neighbour's
            result[filled] = np.add.reduceat(self.data * weights[self.indices], self.indptr[filled])
        return result

    def t_dot(self, values: np.ndarray) -> np.ndarray:
        """X.T @ v."""
        return np.bincount(self.indices, weights=self.data * values[self._row_of_entry], minlength=self.n_cols)

    @cached_property
    def _filled_rows(self) -> np.ndarray:
        return np.flatnonzero(np.diff(self.indptr) > 0)

    @cached_property
    def _row_of_entry(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_rows), np.diff(self.indptr))

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
