"""The trained router: per-kind models over TF-IDF n-grams and dense features, in one versioned JSON file.

The score is (1 + expected quality gain of the strong model over the weak one) / 2, so 0.5
means "the strong model buys nothing here" and 1.0 "the weak model fails where the strong
one succeeds". Each prompt kind (``features.DOMAINS``) has its own model, because one model
trained on every kind lets the biggest data set decide the others' ranking; a kind with no
trained model (open-ended chat, writing, code: ``general``) is scored by the hand-set
heuristic (``router/heuristic.py``), which on MT-Bench's open-ended prompts ranks far better
than random where no fitted model could (the shared data has none of them to fit on).
A kind's model is a ``LinearModel`` (logistic regression) or a ``StackedModel`` (linear scores
combined by boosted trees), whichever ``training.fit`` found better for it, and reads the
feature sets its entry in the file names (``features.FEATURE_SETS``).

The file is plain JSON (no pickle: loading a model must never run code); ``save`` also
writes the model card ``<stem>.md`` beside it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from router.classifier import Classifier, Score
from router.heuristic import HeuristicClassifier
from router.features import (
    DENSE_NAMES, DOMAINS, FEATURE_SETS, WORD_PROBLEM_NAMES, SparseRows, Vocabulary, dense_inputs, dense_width, describe_batch,
    excerpt,
)
from router.trees import BoostedTrees
from schemas.errors import ModelFileError

T = TypeVar("T")

_HEURISTIC = HeuristicClassifier()

#: What the ``format`` field of a model file must say.
MODEL_FORMAT = "turnout.router.trained"
#: Bumped whenever a change to features or file layout would make old files score wrongly, or
#: new files unreadable to an older turnout. 4: each kind's model names its feature sets, and a
#: model may read the word-problem counts.
MODEL_VERSION = 4
#: The feature sets every kind's model read before version 4; a model's unless it is given others.
TEXT_AND_DENSE = ("text", "dense")
#: Significant digits kept for weights in the file: enough for identical rankings, half the size.
_DIGITS = 6
#: For what a stack's trees read straight from the standardised features (the subject prior's
#: weights, the standardising means and scales; x − mean loses the mean's relative error many
#: times over): the trees' thresholds are exact, and a prompt moved by 1e-5 can cross one.
_PRIOR_DIGITS = 9


@dataclass
class LinearModel:
    """Logistic regression over the shared TF-IDF rows plus standardised dense features.

    Empty ``weights`` mean a model of the dense features alone (the text is not tokenized);
    ``features`` name what it reads, and with ``word_problem`` its dense columns go on past
    ``DENSE_NAMES`` into ``WORD_PROBLEM_NAMES``.
    """

    weights: np.ndarray
    dense_weights: np.ndarray
    dense_mean: np.ndarray
    dense_scale: np.ndarray
    bias: float
    features: tuple[str, ...] = TEXT_AND_DENSE

    @property
    def uses_text(self) -> bool:
        return len(self.weights) > 0

    def predict(self, rows: SparseRows | None, dense: np.ndarray) -> np.ndarray:
        z = ((dense - self.dense_mean) / self.dense_scale) @ self.dense_weights + self.bias
        if rows is not None and self.uses_text:
            z = z + rows.dot(self.weights)
        return _sigmoid(z)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": _rounded(self.weights),
            "dense_weights": _rounded(self.dense_weights),
            "dense_mean": _rounded(self.dense_mean),
            "dense_scale": _rounded(self.dense_scale),
            "bias": float(self.bias),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], n_terms: int, features: tuple[str, ...]) -> LinearModel:
        model = cls(
            weights=np.asarray(data["weights"], dtype=float),
            dense_weights=np.asarray(data["dense_weights"], dtype=float),
            dense_mean=np.asarray(data["dense_mean"], dtype=float),
            dense_scale=np.asarray(data["dense_scale"], dtype=float),
            bias=float(data["bias"]),
            features=features,
        )
        n_dense = (dense_width(features),)
        shapes = (model.dense_weights.shape, model.dense_mean.shape, model.dense_scale.shape)
        if model.weights.shape != _text_shape(features, n_terms) or shapes != (n_dense, n_dense, n_dense):
            raise ValueError("weight vectors do not match the vocabulary and the feature sets it names")
        _check_numbers(model.weights, model.dense_weights, model.dense_mean, model.dense_scale, np.array([model.bias]))
        return model


#: The stacked model's tree inputs ahead of the dense features: its ridges' predicted gain,
#: strong quality and weak quality.
STACKED_INPUTS = ("gain", "strong", "weak")
#: What a stacked model's subject prior predicts, one ridge each; its scores follow the dense features.
PRIOR_OUTPUTS = ("subject_strong", "subject_weak")


@dataclass
class StackedModel:
    """Boosted trees over two ridge regressions and the raw dense features.

    The ridges read the same inputs as ``LinearModel`` and predict the strong and the weak
    model's quality; the trees see their difference, both of them and the dense features, and
    predict the gain in [-1, 1], mapped to the router's scale as (1 + gain) / 2. Row 0 of
    ``weights``, ``dense_weights`` and ``bias`` is the strong model's ridge, row 1 the weak's.

    An optional subject prior (``prior_*``, one row per ``PRIOR_OUTPUTS``, empty without one)
    runs first: two more ridges over the same text and the standardised dense features, whose
    scores are appended to the dense features; ``dense_mean``/``dense_scale`` and the trees
    then cover those columns too. ``features`` name what it reads, as ``LinearModel``'s do.
    """

    weights: np.ndarray
    dense_weights: np.ndarray
    dense_mean: np.ndarray
    dense_scale: np.ndarray
    bias: np.ndarray
    trees: BoostedTrees
    prior_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    prior_dense_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, len(DENSE_NAMES))))
    prior_bias: np.ndarray = field(default_factory=lambda: np.zeros(0))
    features: tuple[str, ...] = TEXT_AND_DENSE

    @property
    def uses_text(self) -> bool:
        return self.weights.shape[1] > 0

    def predict(self, rows: SparseRows | None, dense: np.ndarray) -> np.ndarray:
        full = self.with_prior(rows, dense)
        gain = self.trees.predict(np.hstack([self.ridge_scores(rows, full), full]))
        clipped: np.ndarray = np.clip((1.0 + gain) / 2.0, 0.0, 1.0)
        return clipped

    def with_prior(self, rows: SparseRows | None, dense: np.ndarray) -> np.ndarray:
        """The dense features, and the subject prior's scores after them when there is one."""
        if not len(self.prior_bias):
            return dense
        n = dense.shape[1]
        prior = ((dense - self.dense_mean[:n]) / self.dense_scale[:n]) @ self.prior_dense_weights.T + self.prior_bias
        if rows is not None and self.uses_text:
            prior += np.stack([rows.dot(w) for w in self.prior_weights], axis=1)
        return np.hstack([dense, prior])

    def ridge_scores(self, rows: SparseRows | None, dense: np.ndarray) -> np.ndarray:
        """The trees' first inputs, one column each as named in ``STACKED_INPUTS``, given
        ``with_prior``'s features."""
        quality = ((dense - self.dense_mean) / self.dense_scale) @ self.dense_weights.T + self.bias
        if rows is not None and self.uses_text:
            quality += np.stack([rows.dot(w) for w in self.weights], axis=1)
        return np.column_stack([quality[:, 0] - quality[:, 1], quality])

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": [_rounded(w) for w in self.weights],
            "dense_weights": [_rounded(w) for w in self.dense_weights],
            "dense_mean": _rounded(self.dense_mean, _PRIOR_DIGITS),
            "dense_scale": _rounded(self.dense_scale, _PRIOR_DIGITS),
            "bias": _rounded(self.bias),
            "trees": self.trees.to_dict(),
            "prior_weights": [_rounded(w, _PRIOR_DIGITS) for w in self.prior_weights],
            "prior_dense_weights": [_rounded(w, _PRIOR_DIGITS) for w in self.prior_dense_weights],
            "prior_bias": _rounded(self.prior_bias, _PRIOR_DIGITS),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], n_terms: int, features: tuple[str, ...]) -> StackedModel:
        n = dense_width(features)
        priors = len(data["prior_bias"])
        if priors not in (0, len(PRIOR_OUTPUTS)):
            raise ValueError(f"its stacked model's subject prior has {priors} outputs, not {len(PRIOR_OUTPUTS)}")
        n_dense = n + priors
        model = cls(
            weights=np.asarray(data["weights"], dtype=float),
            dense_weights=np.asarray(data["dense_weights"], dtype=float),
            dense_mean=np.asarray(data["dense_mean"], dtype=float),
            dense_scale=np.asarray(data["dense_scale"], dtype=float),
            bias=np.asarray(data["bias"], dtype=float),
            trees=BoostedTrees.from_dict(data["trees"], len(STACKED_INPUTS) + n_dense),
            prior_weights=np.asarray(data["prior_weights"], dtype=float) if priors else np.zeros((0, 0)),
            prior_dense_weights=np.asarray(data["prior_dense_weights"], dtype=float) if priors else np.zeros((0, n)),
            prior_bias=np.asarray(data["prior_bias"], dtype=float),
            features=features,
        )
        shapes = (model.weights.shape, model.dense_weights.shape, model.dense_mean.shape, model.dense_scale.shape)
        if shapes[0] != (2, *_text_shape(features, n_terms)) or shapes[1:] != ((2, n_dense), (n_dense,), (n_dense,)):
            raise ValueError("its stacked model's weights do not match the vocabulary and the feature sets it names")
        if model.bias.shape != (2,):
            raise ValueError("its stacked model needs two biases, the strong and the weak ridge's")
        prior_shapes = (model.prior_weights.shape, model.prior_dense_weights.shape, model.prior_bias.shape)
        if priors and prior_shapes != ((priors, shapes[0][1]), (priors, n), (priors,)):
            raise ValueError("its subject prior's weights do not match the vocabulary and dense features")
        _check_numbers(
            model.weights, model.dense_weights, model.dense_mean, model.dense_scale, model.bias,
            model.prior_weights, model.prior_dense_weights, model.prior_bias,
        )
        return model


def _text_shape(features: tuple[str, ...], n_terms: int) -> tuple[int]:
    """The shape of a text weight vector: one weight per vocabulary term, or none without ``text``."""
    return (n_terms if "text" in features else 0,)


def _check_numbers(*arrays: np.ndarray) -> None:
    """Finite weights, and standardising scales above zero (the last but one array): a NaN
    here would score every prompt NaN, mid-batch, instead of failing the load."""
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("it holds non-finite weights")
    if not (arrays[3] > 0).all():
        raise ValueError("its dense feature scales must be above zero")


#: A prompt kind's model, by the ``type`` its entry in the file names.
MODEL_TYPES: dict[str, type[LinearModel] | type[StackedModel]] = {"linear": LinearModel, "stacked": StackedModel}


@dataclass
class TrainedClassifier(Classifier):
    """Scores prompts with the model of their kind; see the module docstring for the scale."""

    vocabulary: Vocabulary
    domains: dict[str, LinearModel | StackedModel]
    model_name: str = "default"
    card: dict[str, Any] = field(default_factory=dict)
    name: str = "trained"
    #: ``prompt_fingerprint`` of each training prompt, so ``turnout eval`` can tell in-sample
    #: rows from held-out ones whatever file they come in (empty in files written before).
    fingerprints: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        return f"{self.name} ({self.model_name})"

    def score(self, text: str) -> Score:
        return self.score_batch([text])[0]

    def score_batch(self, texts: Sequence[str]) -> list[Score]:
        kinds, values, signs = self._scored(texts)
        return [
            Score(float(v), [f"trained:{self.model_name}", f"kind:{k}", *signs.get(i, [])], kind=k)
            for i, (v, k) in enumerate(zip(values, kinds))
        ]

    def kinds_on_own_scale(self) -> set[str]:
        """The kinds the heuristic scores: its score is not the strong model's expected gain."""
        return {kind for kind in DOMAINS if kind not in self.domains}

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Scores as an array, in the order of ``texts``."""
        return self._scored(texts)[1]

    def predict_with_kinds(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Each text's detected kind and score."""
        kinds, values, _ = self._scored(texts)
        return kinds, values

    def _scored(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray, dict[int, list[str]]]:
        """Kinds, scores, and the heuristic's signs for the texts it scored (by position)."""
        if not texts:
            return [], np.zeros(0), {}
        kinds, dense = describe_batch(texts)
        values = np.zeros(len(texts))
        signs: dict[int, list[str]] = {}
        for kind in set(kinds):
            picked = np.array([i for i, k in enumerate(kinds) if k == kind], dtype=int)
            model = self.domains.get(kind)
            if model is None:
                for i in picked:
                    score = _HEURISTIC.score(texts[i])
                    values[i], signs[i] = score.value, [f"heuristic:{r}" for r in score.reasons]
                continue
            excerpts = [excerpt(texts[i]) for i in picked]
            rows = self.vocabulary.transform(excerpts) if model.uses_text else None
            values[picked] = model.predict(rows, dense_inputs(model.features, excerpts, dense[picked]))
        return kinds, values, signs

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "name": self.model_name,
            "dense_features": list(DENSE_NAMES),
            "word_problem_features": list(WORD_PROBLEM_NAMES),
            "vocabulary": self.vocabulary.terms,
            "idf": _rounded(self.vocabulary.idf),
            "domains": {
                kind: {"type": _type_name(model), "features": list(model.features), **model.to_dict()}
                for kind, model in self.domains.items()
            },
            "card": self.card,
            "prompt_fingerprints": sorted(self.fingerprints),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainedClassifier:
        """Build from a parsed file; raises ValueError/KeyError/TypeError on any inconsistency."""
        if list(data["dense_features"]) != list(DENSE_NAMES) or list(data["word_problem_features"]) != list(WORD_PROBLEM_NAMES):
            raise ValueError("its dense or word-problem features differ from this version's")
        vocabulary = Vocabulary([str(t) for t in data["vocabulary"]], np.asarray(data["idf"], dtype=float))
        if vocabulary.idf.shape != (len(vocabulary.terms),) or not np.isfinite(vocabulary.idf).all():
            raise ValueError("its idf must hold one finite number per vocabulary term")
        unknown = set(data["domains"]) - set(DOMAINS)
        if unknown:
            raise ValueError(f"it names unknown prompt kinds {sorted(unknown)}")
        domains = {kind: _domain_model(kind, m, len(vocabulary.terms)) for kind, m in data["domains"].items()}
        fingerprints = frozenset(str(f) for f in data.get("prompt_fingerprints", []))
        return cls(vocabulary, domains, str(data["name"]), dict(data["card"]), fingerprints=fingerprints)

    @classmethod
    def load(cls, path: Path) -> TrainedClassifier:
        """Read a model file; raises ModelFileError saying what is wrong with it."""
        return read_model_file(path, MODEL_FORMAT, MODEL_VERSION, "router model", "`turnout train`", cls.from_dict)

    def save(self, path: Path) -> tuple[Path, Path]:
        """Write the model JSON and its card ``<stem>.md``; returns both paths."""
        return write_model_file(path, self.to_dict(), render_card(self.model_name, self.card))


def prompt_fingerprint(prompt: str) -> str:
    """A prompt's 32-bit fingerprint (8 hex digits): among the 10,000 prompts of a model's
    training data, a new prompt matches one by chance about once in 400,000."""
    return hashlib.sha1(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _type_name(model: LinearModel | StackedModel) -> str:
    return next(name for name, cls in MODEL_TYPES.items() if isinstance(model, cls))


def _domain_model(kind: str, data: Mapping[str, Any], n_terms: int) -> LinearModel | StackedModel:
    model_type = data.get("type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"its {kind} model is of unknown type {model_type!r}")
    return MODEL_TYPES[model_type].from_dict(data, n_terms, _feature_sets(kind, data["features"]))


def _feature_sets(kind: str, named: Any) -> tuple[str, ...]:
    """The feature sets a kind's entry names, in ``FEATURE_SETS`` order; every model reads ``dense``."""
    if not isinstance(named, list) or not all(isinstance(f, str) for f in named):
        raise ValueError(f"its {kind} model's features must be a list of names")
    unknown = sorted(set(named) - set(FEATURE_SETS))
    if unknown or "dense" not in named or len(set(named)) != len(named):
        known = list(FEATURE_SETS)
        raise ValueError(f"its {kind} model names features {named}; this version knows {known}, dense always among them")
    return tuple(f for f in FEATURE_SETS if f in named)


def read_model_file(
    path: Path, fmt: str, version: int, kind: str, retrain: str, build: Callable[[dict[str, Any]], T]
) -> T:
    """Read and check a JSON model file of ``fmt``/``version``, then ``build`` the model from it.

    Every problem (missing, unreadable, another format or version, corrupt) is a
    ModelFileError of one sentence naming the file, so a worker fails at start, not mid-batch.
    """
    data = _read_json(Path(path), retrain)
    if data.get("format") != fmt:
        raise ModelFileError(f"Model file {path} is not a turnout {kind} (format {data.get('format')!r}).")
    found = data.get("version")
    if found != version:
        newer = isinstance(found, int) and found > version
        raise ModelFileError(
            f"Model file {path} is {kind} version {found!r} but this turnout reads version {version}; "
            + (f"upgrade turnout, or retrain it with {retrain}." if newer else f"retrain it with {retrain}.")
        )
    try:
        return build(data)
    except KeyError as exc:
        raise ModelFileError(f"Model file {path} is corrupt: it lacks the field {exc}; retrain it with {retrain}.") from exc
    except (TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        raise ModelFileError(f"Model file {path} is corrupt: {exc or type(exc).__name__}; retrain it with {retrain}.") from exc


def check_model_path(path: Path) -> Path:
    """Refuse, before any training, an output path ``write_model_file`` could not use: a folder,
    a name not ending in ``.json`` (a ``.md`` one, its card would overwrite), a place that cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"-o {path} is a folder; give a file path, such as {path / 'model.json'}")
    if path.suffix.lower() != ".json":
        raise ModelFileError(f"-o {path}: a model file is JSON (its card goes beside it as .md); give it a .json name")
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ModelFileError(f"-o {path}: cannot write in {existing}; give a path in a folder that is writable")
    return path


def write_model_file(path: Path, data: dict[str, Any], card: str) -> tuple[Path, Path]:
    """Write a model's JSON and its card ``<stem>.md`` beside it; returns both paths. Each file is
    written whole to a temporary name first: a worker never loads half a model."""
    path = check_model_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    card_path = path.with_suffix(".md")
    for target, text in ((path, json.dumps(data, separators=(",", ":")) + "\n"), (card_path, card)):
        partial = target.with_name(f".{target.name}.tmp")
        try:
            partial.write_text(text, encoding="utf-8")
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    return path, card_path


def render_card(model_name: str, card: Mapping[str, Any]) -> str:
    """The model card as Markdown: what it was trained on, when, and how it did on held-out data."""
    lines = [f"# Router model `{model_name}`", ""]
    lines += [f"- format: `{MODEL_FORMAT}` version {MODEL_VERSION}"]
    for key in ("created", "trained_on", "rows", "domains", "vocabulary_terms", "evaluation"):
        if key in card and not isinstance(card[key], (dict, list)):
            lines.append(f"- {key.replace('_', ' ')}: {card[key]}")
    for kind, description in card.get("models", {}).items():
        lines.append(f"- {kind} model: {description}")
    files = card.get("files", [])
    if files:
        lines += ["", "## Training data", "", "| file | rows |", "|---|---|"]
        lines += [f"| `{f['path']}` | {f['rows']:,} |" for f in files]
    kinds = card.get("rows_by_kind", {})
    if kinds:
        lines += ["", "Rows per prompt kind (as the router detects it): " + ", ".join(f"{k} {v:,}" for k, v in kinds.items())]
    held_out = card.get("held_out", {})
    if held_out:
        lines += ["", "## Held-out metrics", "", str(card.get("held_out_method", "")), ""]
        lines += ["| data | rows | weak | strong | CPT(20%) | CPT(50%) | CPT(80%) | APGR | oracle APGR |", "|---|---|---|---|---|---|---|---|---|"]
        for data_name, m in held_out.items():
            cpt = m["cpt"]
            lines.append(
                f"| {data_name} | {m['n']:,} | {m['weak_quality']:.3f} | {m['strong_quality']:.3f} | "
                f"{cpt['20%']:.1%} | {cpt['50%']:.1%} | {cpt['80%']:.1%} | {m['apgr']:.3f} | {m['oracle_apgr']:.3f} |"
            )
        lines += ["", "CPT(x): share of calls sent to the strong model to recover x of the quality gap "
                  "(lower is better). APGR: normalised area under the quality curve (random ≈ 0.5)."]
    elif card.get("held_out_method"):
        lines += ["", "## Held-out metrics", "", "None: trained with `--folds 0`, no cross-validation was run. Measure it with "
                  "`turnout eval` on labeled prompts it never saw."]
    notes = card.get("notes")
    if notes:
        lines += ["", "## Notes", "", str(notes)]
    return "\n".join(lines) + "\n"


def _read_json(path: Path, retrain: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFileError(f"Model file {path} does not exist; make one with {retrain}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"Model file {path} cannot be read: {exc}.") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"Model file {path} is corrupt: not valid JSON ({exc.msg}, line {exc.lineno}).") from exc
    if not isinstance(data, dict):
        raise ModelFileError(f"Model file {path} is corrupt: it holds a JSON {type(data).__name__}, not an object.")
    return data


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def _rounded(values: np.ndarray, digits: int = _DIGITS) -> list[float]:
    return [float(f"{v:.{digits}g}") if math.isfinite(v) else 0.0 for v in np.asarray(values, dtype=float).tolist()]
