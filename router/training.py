"""Training and evaluating the trained router on labeled routing data.

Labeled data is JSONL, one ``{"id", "prompt", "weak", "strong"}`` object per line (other
fields ignored), ``weak``/``strong`` being the two models' quality on the prompt.

The target is the strong model's gain, ``(strong − weak + 1) / 2`` in [0, 1]: RouteLLM's
metrics reward ranking prompts by how much the strong model beats the weak one, and a prompt
both models fail (or both pass) is worth no strong call. On the shared data this target beat
"strong wins" and "weak fails" in 5-fold CV. Word problems get a soft-label logistic
regression over the dense and word-problem counts, no n-grams; multiple-choice prompts a stack
(``fit_stacked``), which on MMLU beat the logistic regression in 5-fold CV over five seeds but
overfit GSM8K's few hundred rows.

Run as ``python -m router.training --out router/models/default.json FILE...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import numpy as np

from router.classifier import Classifier, Score
from router.features import SparseRows, Vocabulary, dense_inputs, describe_batch, detect_domain, excerpt
from router.metrics import DEFAULT_NUM_RESULTS, oracle_curve, quality_curve, routing_metrics
from router.trained import TEXT_AND_DENSE, LinearModel, StackedModel, TrainedClassifier, check_model_path, prompt_fingerprint
from router.trees import BoostingSettings, fit_boosted_trees
from schemas.errors import TurnoutError

T = TypeVar("T")

#: A file with fewer labeled rows than this cannot say anything about a router.
MIN_ROWS = 20
#: A prompt kind needs this many training rows for a model of its own; fewer go to the heuristic.
MIN_ROWS_PER_KIND = 50
#: The kinds that get a learned model. ``general`` never does: the labeled sets hold no
#: open-ended prompts, only stragglers of the other kinds, and a model fitted on those would
#: pass for a judgement on chat, writing and code it has never seen.
LEARNED_KINDS = ("choice", "math")
#: Folds of the cross-validation that produces the held-out figures of the model card.
DEFAULT_FOLDS = 5


class TrainingDataError(TurnoutError):
    """Raised when a labeled data file cannot be used; the message names the file and line."""

    def __init__(self, message: str, path: Path, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


#: (weak, strong) price per call, for every dataset or by dataset name (``all`` for them together).
Prices: TypeAlias = tuple[float, float] | Mapping[str, tuple[float, float]] | None

@dataclass(frozen=True)
class LabeledRow:
    """One labeled prompt; ``dataset`` is the file it came from (``mmlu`` for mmlu.train.jsonl)."""

    id: str
    prompt: str
    weak: float
    strong: float
    dataset: str
    #: The row's ``source`` (``mmlu/anatomy``), when the file gives one: a training label only,
    #: for the subject prior (``fit_stacked``); never read at run time.
    source: str = ""


@dataclass(frozen=True)
class FitSettings:
    """How hard each prompt kind's model is regularised and what it reads; chosen by 5-fold CV on the shared data."""

    l2: dict[str, float] = field(default_factory=lambda: {"choice": 1e-3, "math": 3e-2, "general": 3e-3})
    #: The feature sets each kind's model reads (``features.FEATURE_SETS``; a kind not named
    #: here, ``TEXT_AND_DENSE``). Word problems read the dense and word-problem counts and no
    #: n-grams: on GSM8K (5-fold CV, medians over 5 fold seeds) CPT(50%) 38.5% → 33.8% and APGR
    #: 0.588 → 0.606 against n-grams and dense counts at l2 3e-3, better on 4 of 5 seeds. Its
    #: l2, 3e-2, was the best of 3e-3, 3e-2 and 3e-1 in that same CV (with l2 picked by nested
    #: CV instead: 35.3%, 0.596), so those figures carry some selection optimism.
    features: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"choice": TEXT_AND_DENSE, "math": ("dense", "word_problem"), "general": TEXT_AND_DENSE}
    )
    min_df: int = 2
    max_terms: int = 20000
    max_iter: int = 300
    #: Kinds modelled by ``fit_stacked`` rather than ``fit_logistic``.
    stacked: tuple[str, ...] = ("choice",)
    #: A stacked kind with fewer rows gets the logistic model: the stack was measured on MMLU's
    #: ~5,700 rows per fold, and with 40-row leaves a few hundred rows leave the trees little to learn.
    stack_min_rows: int = 1000
    #: The stack's ridge penalty, per row (scikit-learn's Ridge alpha=10 over ~5,700 rows).
    ridge_l2: float = 1.8e-3
    #: The subject prior's ridge penalty: of 6e-4 and 1.8e-3, the better in 5-fold CV on MMLU
    #: (2e-4, tried later, was no clear gain: APGR up 0.004, CPT(50%) mixed).
    prior_l2: float = 6e-4
    #: Pseudo-rows of the overall mean added to each subject's mean: small subjects lean on it.
    prior_shrink: float = 10.0
    #: Inner folds giving the trees out-of-fold ridge scores, as the ridges will score new prompts.
    inner_folds: int = 5
    boosting: BoostingSettings = BoostingSettings()


@dataclass(frozen=True)
class TrainReport:
    """What ``train`` did: where the model went, what it learned from, how it did held out."""

    model_path: Path
    card_path: Path
    rows: dict[str, int]
    held_out: dict[str, dict[str, Any]]
    seconds: float


def read_rows(path: Path, min_rows: int = MIN_ROWS) -> list[LabeledRow]:
    """Every labeled row of a JSONL file; raises TrainingDataError naming the file and line."""
    dataset = Path(path).name.split(".")[0]

    def row(obj: dict[str, Any], path: Path, n: int) -> LabeledRow:
        check_fields(obj, path, n, strings=("prompt",), numbers=("weak", "strong"), others=("id",))
        if not obj["prompt"].strip():
            raise TrainingDataError(f"{path}:{n}: 'prompt' is empty; remove the line or give it its prompt.", path, n)
        source = obj.get("source")
        return LabeledRow(
            str(obj["id"]), obj["prompt"], float(obj["weak"]), float(obj["strong"]), dataset, source if isinstance(source, str) else ""
        )

    return read_jsonl(path, min_rows, "labeled rows", row)


def read_jsonl(path: Path, min_rows: int, what: str, build: Callable[[dict[str, Any], Path, int], T]) -> list[T]:
    """``build`` applied to every JSON object line of ``path`` (blank lines skipped); raises
    TrainingDataError naming the file, and the line, for an unreadable file, a bad line or too few rows."""
    path = Path(path)
    if path.is_dir():
        raise TrainingDataError(f"{path} is a folder; give the JSONL files in it.", path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise TrainingDataError(f"Cannot read labeled data {path}: {exc.strerror or exc}.", path) from exc
    rows = [build(_json_object(path, n, line), path, n) for n, line in enumerate(lines, 1) if line.strip()]
    if len(rows) < min_rows:
        raise TrainingDataError(f"{path} holds {len(rows)} {what}; at least {min_rows} are needed.", path)
    return rows


def _json_object(path: Path, n: int, raw: bytes) -> dict[str, Any]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TrainingDataError(f"{path}:{n}: not UTF-8 (byte {exc.start + 1} of the line); save the file as UTF-8.", path, n) from exc
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TrainingDataError(f"{path}:{n}: not valid JSON ({exc.msg}).", path, n) from exc
    if not isinstance(obj, dict):
        raise TrainingDataError(f"{path}:{n}: expected a JSON object.", path, n)
    return obj


def check_fields(
    obj: dict[str, Any], path: Path, n: int, *, strings: Sequence[str], numbers: Sequence[str], others: Sequence[str] = ()
) -> None:
    """Raise TrainingDataError naming the line when a field is missing, a string is not one, or a
    number is not a finite one."""
    missing = [k for k in (*others, *strings, *numbers) if k not in obj]
    if missing:
        raise TrainingDataError(f"{path}:{n}: missing field(s) {', '.join(missing)}.", path, n)
    for key in strings:
        if not isinstance(obj[key], str):
            raise TrainingDataError(f"{path}:{n}: '{key}' must be a string.", path, n)
    for key in numbers:
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TrainingDataError(f"{path}:{n}: '{key}' must be a number, got {value!r}.", path, n)


def quality_targets(rows: Sequence[LabeledRow]) -> tuple[np.ndarray, np.ndarray]:
    """The weak and the strong model's quality, scaled so that their difference lies in [-1, 1]."""
    weak = np.array([r.weak for r in rows])
    strong = np.array([r.strong for r in rows])
    spread = max(float(np.max(np.abs(strong - weak))), 1.0)  # judge scores may exceed 0..1
    return weak / spread, strong / spread


def gain_target(rows: Sequence[LabeledRow]) -> np.ndarray:
    """The strong model's gain over the weak one, scaled to [0, 1] (0.5 = no gain)."""
    weak, strong = quality_targets(rows)
    gain: np.ndarray = np.clip(strong - weak, -1.0, 1.0)
    return gain / 2.0 + 0.5


def fit(rows: Sequence[LabeledRow], settings: FitSettings = FitSettings(), name: str = "default") -> TrainedClassifier:
    """A classifier with one model per prompt kind that has enough rows."""
    texts = [excerpt(r.prompt) for r in rows]  # what the router reads of each prompt
    vocabulary = Vocabulary.fit(texts, min_df=settings.min_df, max_terms=settings.max_terms)
    kind_list, dense = describe_batch([r.prompt for r in rows])
    kinds = np.array(kind_list)
    weak, strong = quality_targets(rows)
    domains: dict[str, LinearModel | StackedModel] = {}
    for kind in sorted(set(kinds)):
        picked = np.where(kinds == kind)[0]
        if kind not in LEARNED_KINDS or len(picked) < MIN_ROWS_PER_KIND:
            continue
        domains[kind] = _fit_kind(
            kind, [texts[i] for i in picked], dense[picked], strong[picked], weak[picked], [rows[i].source for i in picked],
            vocabulary, settings,
        )
    fingerprints = frozenset(prompt_fingerprint(r.prompt) for r in rows)
    return TrainedClassifier(vocabulary, domains, model_name=name, fingerprints=fingerprints)


def _fit_kind(
    kind: str, texts: list[str], dense: np.ndarray, strong: np.ndarray, weak: np.ndarray, sources: list[str],
    vocabulary: Vocabulary, settings: FitSettings,
) -> LinearModel | StackedModel:
    """One kind's model, reading the feature sets ``settings.features`` names for it."""
    features = settings.features.get(kind, TEXT_AND_DENSE)
    if "text" in features:
        matrix = vocabulary.transform(texts)
    else:
        matrix = SparseRows(np.zeros(len(texts) + 1, dtype=int), np.zeros(0, dtype=int), np.zeros(0), 0)
    inputs = dense_inputs(features, texts, dense)
    model: LinearModel | StackedModel
    if kind in settings.stacked and len(texts) >= settings.stack_min_rows:
        model = fit_stacked(matrix, inputs, strong, weak, settings, sources)
    else:
        target = np.clip(strong - weak, -1.0, 1.0) / 2.0 + 0.5
        model = fit_logistic(matrix, inputs, target, settings.l2.get(kind, 3e-3), settings)
    return dataclasses.replace(model, features=features)


def fit_logistic(rows: SparseRows, dense: np.ndarray, target: np.ndarray, l2: float, settings: FitSettings) -> LinearModel:
    """L2-regularised logistic regression with soft labels, fitted by L-BFGS.

    ``rows`` with no columns give a model of the dense features alone (empty text weights).
    """
    mean, scale = _standardizer(dense)
    theta = _fit_linear(rows, (dense - mean) / scale, target, l2, settings.max_iter, _logistic_loss)
    return LinearModel(theta[:rows.n_cols], theta[rows.n_cols:-1], mean, scale, float(theta[-1]))


def fit_stacked(
    rows: SparseRows, dense: np.ndarray, strong: np.ndarray, weak: np.ndarray, settings: FitSettings,
    sources: Sequence[str] = (),
) -> StackedModel:
    """Ridge regressions for the strong and the weak quality, combined by boosted trees into the gain.

    The trees learn from out-of-fold ridge scores: in-sample ones would be overconfident in
    exactly the way the trees would then learn to trust. The gain's ridge is not fitted: ridge
    regression is linear in its target, so it is the strong ridge minus the weak one.

    With ``sources`` naming more than one subject, a subject prior comes first: two ridge
    regressions from the prompt to its subject's mean strong and weak quality (each row's
    own label left out, shrunk to the overall mean), whose scores join the dense features.
    The subject is a training label only; at run time the prior reads the prompt text. On
    MMLU it took CPT(50%) from 28.1% to 26.0% and APGR from 0.678 to 0.683 (5-fold CV, medians
    over 5 fold seeds).
    """
    p, d = rows.n_cols, dense.shape[1]
    mean, scale = _standardizer(dense)
    prior = np.zeros((0, p + d + 1))
    if len(set(sources) - {""}) > 1:
        prior, prior_scores = _fit_subject_prior(rows, (dense - mean) / scale, strong, weak, list(sources), settings)
        dense = np.hstack([dense, prior_scores])
        mean, scale = _standardizer(dense)
    standard = (dense - mean) / scale
    thetas, out_of_fold = _ridges(rows, standard, lambda picked: [strong[picked], weak[picked]], settings.ridge_l2, settings, seed=0)
    inputs = np.column_stack([out_of_fold[:, 0] - out_of_fold[:, 1], out_of_fold, dense])
    trees = fit_boosted_trees(inputs, strong - weak, settings.boosting)
    return StackedModel(
        weights=thetas[:, :p], dense_weights=thetas[:, p:-1], dense_mean=mean, dense_scale=scale, bias=thetas[:, -1], trees=trees,
        prior_weights=prior[:, :p], prior_dense_weights=prior[:, p : p + d], prior_bias=prior[:, -1],
    )


def _fit_subject_prior(
    rows: SparseRows, standard: np.ndarray, strong: np.ndarray, weak: np.ndarray, sources: list[str], settings: FitSettings
) -> tuple[np.ndarray, np.ndarray]:
    """The prior's two ridges and their out-of-fold scores (``_ridges``). Each fold's targets
    are drawn from the other folds' labels alone, or a held-out row's own label would reach its
    score through its subject-mates' targets."""

    def targets(picked: np.ndarray) -> list[np.ndarray]:
        return [_subject_means([sources[i] for i in picked], y[picked], settings.prior_shrink) for y in (strong, weak)]

    return _ridges(rows, standard, targets, settings.prior_l2, settings, seed=1)


def _ridges(
    rows: SparseRows, standard: np.ndarray, targets: Callable[[np.ndarray], list[np.ndarray]], l2: float,
    settings: FitSettings, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regressions, one per target ``targets(rows picked)`` gives: their weights (a row
    each of text weights, dense weights, bias) fitted on every row, and their out-of-fold
    scores of the rows over ``settings.inner_folds`` folds drawn with ``seed``, as the ridges
    will score prompts they never saw."""
    every = np.arange(rows.n_rows)
    full = targets(every)
    fold = np.random.default_rng(seed).permutation(rows.n_rows) % settings.inner_folds
    out_of_fold = np.zeros((rows.n_rows, len(full)))
    for k in range(settings.inner_folds):
        train, held = np.where(fold != k)[0], np.where(fold == k)[0]
        for column, target in enumerate(targets(train)):
            theta = _fit_linear(rows.take(train), standard[train], target, l2, settings.max_iter, _squared_loss)
            out_of_fold[held, column] = _linear_scores(theta, rows.take(held), standard[held])
    thetas = np.stack([_fit_linear(rows, standard, target, l2, settings.max_iter, _squared_loss) for target in full])
    return thetas, out_of_fold


def _subject_means(sources: list[str], values: np.ndarray, shrink: float) -> np.ndarray:
    """Each row's subject's mean of ``values`` over the subject's other rows, with ``shrink``
    pseudo-rows of the overall mean: no row's target holds its own label. A row naming no
    subject (or alone in its subject, unshrunk) gets the overall mean."""
    totals: dict[str, float] = {}
    counts = Counter(sources)
    for source, value in zip(sources, values):
        totals[source] = totals.get(source, 0.0) + float(value)
    overall = float(np.mean(values))
    return np.array([
        (totals[s] - v + shrink * overall) / (counts[s] - 1 + shrink) if s and counts[s] - 1 + shrink > 0 else overall
        for s, v in zip(sources, values)
    ])


def _standardizer(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, scale = dense.mean(axis=0), dense.std(axis=0)
    # A column constant but for rounding noise (a fitted score with no spread) is left unscaled:
    # blown up to unit variance, that noise would decide the ridges' and the trees' use of it.
    return mean, np.where(scale > 1e-6 * np.maximum(1.0, np.abs(mean)), scale, 1.0)


def _logistic_loss(z: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft-label log loss per row, and its derivative in z."""
    return np.logaddexp(0.0, z) - target * z, 0.5 * (1.0 + np.tanh(0.5 * z)) - target


def _squared_loss(z: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half the squared error per row, and its derivative in z."""
    return 0.5 * (z - target) ** 2, z - target


def _fit_linear(
    rows: SparseRows, standard: np.ndarray, target: np.ndarray, l2: float, max_iter: int,
    loss: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """Text weights, dense weights and bias, concatenated, minimising the mean ``loss`` plus L2
    (the bias unpenalised) by L-BFGS."""
    n, p = rows.n_rows, rows.n_cols

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, v = theta[:p], theta[p:-1]
        per_row, slope = loss(_linear_scores(theta, rows, standard), target)
        residual = slope / n
        gradient = np.concatenate([rows.t_dot(residual) + l2 * w, standard.T @ residual + l2 * v, [residual.sum()]])
        return float(np.mean(per_row) + 0.5 * l2 * (w @ w + v @ v)), gradient

    return _lbfgs(loss_and_gradient, np.zeros(p + standard.shape[1] + 1), max_iter)


def _linear_scores(theta: np.ndarray, rows: SparseRows, standard: np.ndarray) -> np.ndarray:
    p = rows.n_cols
    scores: np.ndarray = rows.dot(theta[:p]) + standard @ theta[p:-1] + theta[-1]
    return scores


def _lbfgs(
    loss_and_gradient: Callable[[np.ndarray], tuple[float, np.ndarray]], x: np.ndarray, max_iter: int, memory: int = 10
) -> np.ndarray:
    """Limited-memory BFGS with a backtracking (Armijo) line search; stops on a tiny gradient."""
    f, g = loss_and_gradient(x)
    steps: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(max_iter):
        direction = -_two_loop(g, steps)
        slope = float(g @ direction)
        if slope >= 0:  # the curvature pairs went stale: restart from steepest descent
            steps, direction, slope = [], -g, -float(g @ g)
        step = 1.0
        while True:
            x_new = x + step * direction
            f_new, g_new = loss_and_gradient(x_new)
            if f_new <= f + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, y = x_new - x, g_new - g
        if s @ y > 1e-12:
            steps = (steps + [(s, y)])[-memory:]
        x, f, g = x_new, f_new, g_new
        if np.abs(g).max() < 1e-6:
            break
    return x


def _two_loop(g: np.ndarray, steps: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    q = g.copy()
    alphas = []
    for s, y in reversed(steps):
        alpha = (s @ q) / (y @ s)
        alphas.append(alpha)
        q -= alpha * y
    if steps:
        s, y = steps[-1]
        q *= (s @ y) / (y @ y)
    for (s, y), alpha in zip(steps, reversed(alphas)):
        q += (alpha - (y @ q) / (y @ s)) * s
    return q


def cross_validated_scores(
    rows: Sequence[LabeledRow], folds: int = DEFAULT_FOLDS, seed: int = 0, settings: FitSettings = FitSettings(),
    log: Callable[[str], None] = lambda message: None,
) -> np.ndarray:
    """Each row's score from a model fitted without its fold; folds are drawn within each dataset."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(rows), dtype=int)
    for dataset in sorted({r.dataset for r in rows}):
        members = np.array([i for i, r in enumerate(rows) if r.dataset == dataset])
        fold[members] = rng.permutation(len(members)) % folds
    scores = np.zeros(len(rows))
    started = time.perf_counter()
    for k in range(folds):
        left = f" (about {(time.perf_counter() - started) / k * (folds - k):.0f} s left)" if k else ""
        log(f"  fold {k + 1} of {folds}{left}…")
        train_idx, test_idx = np.where(fold != k)[0], np.where(fold == k)[0]
        model = fit([rows[i] for i in train_idx], settings)
        scores[test_idx] = model.predict([rows[i].prompt for i in test_idx])
    return scores


def metrics_by_dataset(
    scores: np.ndarray, rows: Sequence[LabeledRow], num_results: int = DEFAULT_NUM_RESULTS,
    prices: Prices = None,
) -> dict[str, dict[str, Any]]:
    """RouteLLM's figures per dataset, plus ``all`` when the rows come from several; ``prices``
    are (weak, strong) per call, for all datasets or by dataset name."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.dataset, []).append(i)
    if len(groups) > 1:
        groups["all"] = list(range(len(rows)))
    result = {}
    for name, idx in groups.items():
        weak = np.array([rows[i].weak for i in idx])
        strong = np.array([rows[i].strong for i in idx])
        priced = prices.get(name) if isinstance(prices, Mapping) else prices
        try:
            result[name] = routing_metrics(scores[idx], weak, strong, num_results, priced).as_dict()
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return result


def evaluate(
    classifier: Classifier,
    rows: Sequence[LabeledRow],
    num_results: int = DEFAULT_NUM_RESULTS,
    prices: Prices = None,
) -> dict[str, Any]:
    """Score the rows with ``classifier`` and return RouteLLM's figures per dataset.

    Each dataset's entry holds ``n``, ``weak_quality``, ``strong_quality``, ``cpt`` (``20%``,
    ``50%``, ``80%``: shares of strong calls), ``apgr``, ``oracle_apgr``, ``share_at_95`` and,
    given ``prices`` as (weak, strong) per call (or such pairs by dataset), ``cost_at_95`` / ``cost_all_strong``. The
    ``curves`` entry holds each dataset's router and oracle curves as ``{"shares", "qualities"}``
    lists, which ``metrics.plot_quality_vs_share`` accepts. Everything is JSON-serialisable.
    A random router scores APGR 0.5 and CPT(x) = x.
    """
    scores = np.array([s.value for s in classifier.score_batch([r.prompt for r in rows])])
    result: dict[str, Any] = metrics_by_dataset(scores, rows, num_results, prices)
    result["curves"] = _curves(scores, rows, num_results)
    return result


def thresholds_for_shares(classifier: Classifier, prompts: Sequence[str], shares: Sequence[float]) -> list[float]:
    """``min_score`` thresholds sending ``shares`` of ``prompts`` to tiers 2..n (cheapest first);
    see ``score_thresholds``."""
    return score_thresholds([s.value for s in score_in_batches(classifier, prompts)], shares)


def score_thresholds(values: Sequence[float], shares: Sequence[float]) -> list[float]:
    """Thresholds sending ``shares`` of the prompts scoring ``values`` to tiers 2..n.

    ``shares[i]`` is the fraction of traffic wanted on tier ``i + 2``; what is left over stays on
    the cheapest tier. Tier ``k`` receives the prompts scoring at or above its threshold and
    below the next one's (the policy's rule), so each threshold is a score quantile: the
    smallest score among the top ``shares[k] + … + shares[-1]`` of the prompts. The result
    rises strictly and lies in (0, 1], as the config requires; tied scores can move a few
    prompts across a boundary, so the realised shares match to within the ties. A share of 0
    gives the tier a threshold of 1 (just under, for a second such tier below it), not one
    just above the sample's highest score, which new prompts could pass.
    """
    wanted = [float(s) for s in shares]
    if not wanted:
        raise ValueError("give a traffic share for at least one tier above the cheapest")
    if any(not math.isfinite(s) or s < 0.0 or s > 1.0 for s in wanted):
        raise ValueError(f"each tier's share must lie in [0, 1], got {wanted}")
    if sum(wanted) > 1.0 + 1e-9:
        raise ValueError(f"the tiers' shares add up to {sum(wanted):.3g}, more than all traffic")
    if not len(values):
        raise ValueError("calibration needs at least one prompt")
    ordered = np.sort(np.asarray(values, dtype=float))[::-1]
    n = len(ordered)
    thresholds = []
    above = 0.0  # the share of traffic on this tier and every dearer one
    ceiling = 1.0  # a tier meant to get nothing takes the highest threshold left: new prompts scoring above the sample's stay out too
    for share in reversed(wanted):
        above += share
        count = min(int(round(above * n)), n)
        if count:
            thresholds.append(float(ordered[count - 1]))
        else:
            thresholds.append(max(ceiling, float(np.nextafter(ordered[0], np.inf))))
            ceiling = float(np.nextafter(ceiling, 0.0))
    thresholds.reverse()
    result: list[float] = []
    floor = 0.0
    for threshold in thresholds:  # strictly rising, above the cheapest tier's 0, at most 1
        value = min(max(threshold, float(np.nextafter(floor, np.inf))), 1.0)
        result.append(value)
        floor = value
    return _tidy(result, ordered)


def _tidy(thresholds: list[float], scores: np.ndarray) -> list[float]:
    """Six decimals for the reader, rounded down, when that moves none of ``scores`` across a
    threshold and keeps them rising; else the thresholds as they are."""
    rounded = [math.floor(t * 1e6) / 1e6 for t in thresholds]
    same = all(int((scores >= r).sum()) == int((scores >= t).sum()) for r, t in zip(rounded, thresholds))
    rising = rounded[0] > 0.0 and all(a < b for a, b in zip(rounded, rounded[1:]))
    return rounded if same and rising else thresholds


def thresholds_by_kind(
    scores: Sequence[Score], shares: Sequence[float], min_prompts: int, separate: Collection[str]
) -> dict[str | None, list[float]]:
    """``score_thresholds`` for each kind in ``separate`` with at least ``min_prompts`` scores,
    over its own scores, and (key None) for every other prompt, over theirs (over all, when
    none are left): each separate kind then sends ``shares`` of its prompts to the tiers, and
    the others together do, however the separate kinds' scores sit against theirs."""
    counts = Counter(s.kind for s in scores)
    own = sorted(kind for kind in separate if counts[kind] >= min_prompts)
    rest = [s.value for s in scores if s.kind not in own]
    thresholds: dict[str | None, list[float]] = {None: score_thresholds(rest or [s.value for s in scores], shares)}
    for kind in own:
        thresholds[kind] = score_thresholds([s.value for s in scores if s.kind == kind], shares)
    return thresholds


def score_in_batches(classifier: Classifier, prompts: Sequence[str], size: int = 1024) -> list[Score]:
    """The classifier's scores of ``prompts``, scored ``size`` at a time."""
    scored = []
    for start in range(0, len(prompts), size):
        scored.extend(classifier.score_batch(prompts[start : start + size]))
    return scored


def _curves(scores: np.ndarray, rows: Sequence[LabeledRow], num_results: int) -> dict[str, dict[str, Any]]:
    curves = {}
    for dataset in sorted({r.dataset for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.dataset == dataset]
        weak = np.array([rows[i].weak for i in idx])
        strong = np.array([rows[i].strong for i in idx])
        curves[dataset] = {
            "router": quality_curve(scores[idx], weak, strong, num_results).as_dict(),
            "oracle": oracle_curve(weak, strong, num_results).as_dict(),
        }
    return curves


def train(
    paths: Sequence[Path],
    out: Path,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    name: str | None = None,
    settings: FitSettings = FitSettings(),
    log: Callable[[str], None] = lambda message: None,
) -> TrainReport:
    """Cross-validate on ``paths`` for the card, fit on all of it, write ``out`` and its card.

    ``folds`` of 0 or 1 skips the cross-validation (the card then says so).
    """
    started = time.perf_counter()
    out = check_model_path(Path(out))
    per_file = {str(p): read_rows(Path(p)) for p in paths}
    rows = [row for file_rows in per_file.values() for row in file_rows]
    check_learnable(rows, folds > 1)
    if note := scale_note(per_file):
        log(note)
    smallest = min(Counter(r.dataset for r in rows).items(), key=lambda item: item[1])
    if folds > smallest[1]:
        raise TrainingDataError(f"--folds {folds} is more than the {smallest[1]} rows of {smallest[0]}; give fewer folds.", Path(smallest[0]))
    held_out: dict[str, dict[str, Any]] = {}
    fold_s = None
    if folds > 1:
        log(f"cross-validating on {len(rows):,} rows ({folds} folds)…")
        cv_started = time.perf_counter()
        held_out = metrics_by_dataset(cross_validated_scores(rows, folds, seed, settings, log), rows)
        fold_s = (time.perf_counter() - cv_started) / folds
    # a fit on all rows takes a little longer than one on a fold's (folds - 1) / folds of them
    log(f"fitting on all {len(rows):,} rows" + (f" (about {fold_s * folds / (folds - 1):.0f} s)…" if fold_s else "…"))
    model = fit(rows, settings, name or out.stem)
    model.card = _card(per_file, rows, model, held_out, folds, seed)
    model_path, card_path = model.save(out)
    return TrainReport(model_path, card_path, {p: len(r) for p, r in per_file.items()}, held_out, time.perf_counter() - started)


def scale_note(per_file: dict[str, list[LabeledRow]]) -> str | None:
    """A word when quality is not 1/0 correctness: ``quality_targets`` divides every gap by the
    widest one, so a single typo (a 10 among 1s and 0s) would shrink what every row teaches."""
    path, widest = max(((p, r) for p, rows in per_file.items() for r in rows), key=lambda item: abs(item[1].strong - item[1].weak))
    spread = abs(widest.strong - widest.weak)
    if spread <= 1.0:
        return None
    return (f"quality read as grades on one scale: the widest strong-weak gap, {spread:g} (id {widest.id!r} in {path}), "
            "counts as the whole range; if the data is 1/0 correctness, that row is a typo")


def check_learnable(rows: Sequence[LabeledRow], held_out: bool) -> None:
    """Refuse, before any fitting, data that would train nothing (no prompt kind with enough rows:
    the "model" would be the heuristic alone) or, with ``held_out`` figures wanted, a file whose
    strong model is on average no better than its weak one (no gap to measure a router by)."""
    kinds = Counter(describe_batch([r.prompt for r in rows])[0])
    if not any(kinds[kind] >= MIN_ROWS_PER_KIND for kind in LEARNED_KINDS):
        found = ", ".join(f"{kind} {kinds[kind]}" for kind in LEARNED_KINDS)
        raise TrainingDataError(
            f"The training data has too few rows of a kind the router learns ({found}; a kind needs {MIN_ROWS_PER_KIND}): "
            "the model would be the heuristic alone. Add multiple-choice or word-problem rows.", Path("."))
    if held_out:
        for dataset in sorted({r.dataset for r in rows}):
            weak, strong = quality_targets([r for r in rows if r.dataset == dataset])
            if not strong.mean() > weak.mean():
                raise TrainingDataError(
                    f"In {dataset}, the strong model's mean quality ({strong.mean():.4g}) is not above the weak one's "
                    f"({weak.mean():.4g}), so held-out figures have no gap to measure; train with --folds 0.", Path(dataset))


def _card(
    per_file: dict[str, list[LabeledRow]], rows: Sequence[LabeledRow], model: TrainedClassifier,
    held_out: dict[str, dict[str, Any]], folds: int, seed: int,
) -> dict[str, Any]:
    kinds = Counter(detect_domain(r.prompt) for r in rows)
    return {
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "files": [{"path": Path(p).name, "rows": len(r)} for p, r in per_file.items()],
        "rows": len(rows),
        "rows_by_kind": dict(sorted(kinds.items())),
        "domains": ", ".join(sorted(model.domains)) + " (others: the heuristic)",
        "vocabulary_terms": len(model.vocabulary.terms),
        "target": "(strong - weak + 1) / 2",
        "models": {kind: _describe_model(model) for kind, model in sorted(model.domains.items())},
        "held_out_method": (
            f"{folds}-fold cross-validation (seed {seed}), folds drawn within each file; every figure is "
            "computed on out-of-fold scores, i.e. on prompts the scoring model never saw."
            if held_out else "No held-out evaluation was run (folds ≤ 1)."
        ),
        "held_out": held_out,
    }


def _describe_model(model: LinearModel | StackedModel) -> str:
    if isinstance(model, StackedModel):
        prior = ("a subject prior (ridge regressions from the prompt to its subject's mean strong and weak quality; "
                 "the data's source field, at training only), then " if len(model.prior_bias) else "")
        return (f"stack: {prior}ridge regressions for strong and weak quality, out-of-fold, with the dense features "
                f"into {len(model.trees.feature)} boosted depth-2 trees")
    reads = " and ".join(_FEATURE_SET_WORDS[f] for f in model.features)
    return f"soft-label logistic regression with L2, reading {reads}" + ("" if model.uses_text else " (no n-grams)")


#: How a model card names each of ``features.FEATURE_SETS``.
_FEATURE_SET_WORDS = {"text": "TF-IDF n-grams", "dense": "the dense counts", "word_problem": "the word-problem counts"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.training", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="labeled JSONL files")
    parser.add_argument("--out", type=Path, required=True, help="model file to write (its card goes beside it)")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="cross-validation folds for the card (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        report = train(args.paths, args.out, folds=args.folds, seed=args.seed, log=lambda m: print(m, file=sys.stderr))
    except TurnoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {report.model_path} and {report.card_path} in {report.seconds:.0f}s")
    for dataset, m in report.held_out.items():
        cpt = m["cpt"]
        print(f"{dataset:>8}: CPT20 {cpt['20%']:.1%}  CPT50 {cpt['50%']:.1%}  CPT80 {cpt['80%']:.1%}  APGR {m['apgr']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
