"""Gradient-boosted depth-2 regression trees in plain numpy, stored as three small arrays.

The trained router's stacked model (``trained.StackedModel``) uses them to combine a few
linear scores with the dense features: a depth-2 tree can say "a large predicted gain counts
only for short prompts", which a linear model cannot. Squared loss, L2 on leaf values, split
thresholds drawn from feature quantiles (the histogram method of LightGBM and scikit-learn's
HistGradientBoosting, minus everything a handful of features does not need).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The threshold of a node that does not split: every row goes left. JSON has no infinity.
NO_SPLIT = 1e300


@dataclass(frozen=True)
class BoostingSettings:
    """The booster's knobs; the defaults were chosen by 5-fold CV on the shared MMLU data."""

    trees: int = 200
    learning_rate: float = 0.05
    #: Fewest training rows a leaf may hold.
    min_leaf: int = 40
    #: L2 penalty on leaf values, in rows: a leaf's value is its residual sum / (rows + l2).
    l2: float = 1.0
    #: Candidate thresholds per feature (its quantiles).
    bins: int = 64


@dataclass
class BoostedTrees:
    """``base`` plus a sum of depth-2 trees.

    Tree ``t`` has nodes 0 (root), 1 (left child) and 2 (right child); a row goes right at
    node ``k`` when ``x[feature[t, k]] > threshold[t, k]``. Its leaves, left to right, hold
    ``value[t, 0..3]``.
    """

    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    base: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        trees = np.arange(len(self.feature))
        right = x[:, self.feature[:, 0]] > self.threshold[:, 0]  # (rows, trees)
        child = 1 + right
        below_right = np.take_along_axis(x, self.feature[trees, child], axis=1) > self.threshold[trees, child]
        leaves: np.ndarray = self.value[trees, 2 * right + below_right]
        return self.base + leaves.sum(axis=1)

    def to_dict(self) -> dict[str, Any]:
        # Full precision: a rounded threshold would send rows near it down the other branch.
        return {
            "feature": self.feature.tolist(),
            "threshold": self.threshold.tolist(),
            "value": self.value.tolist(),
            "base": float(self.base),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], n_features: int) -> BoostedTrees:
        """Build from a parsed file; raises ValueError unless the arrays fit ``n_features`` inputs."""
        features = np.asarray(data["feature"], dtype=float)
        if not (features == np.round(features)).all():
            raise ValueError("its trees' features must be whole numbers")
        if not ((features >= 0) & (features < n_features)).all():
            raise ValueError(f"its trees' arrays do not describe depth-2 trees over {n_features} features")
        arrays = [features.astype(int), *(np.asarray(data[key], dtype=float) for key in ("threshold", "value"))]
        shapes = [a.shape if a.size else (0, width) for a, width in zip(arrays, (3, 3, 4))]
        n_trees = shapes[0][0] if shapes[0] else -1
        if shapes != [(n_trees, 3), (n_trees, 3), (n_trees, 4)] or not ((arrays[0] >= 0) & (arrays[0] < n_features)).all():
            raise ValueError(f"its trees' arrays do not describe depth-2 trees over {n_features} features")
        feature, threshold, value = (a.reshape(shape) for a, shape in zip(arrays, shapes))
        trees = cls(feature, threshold, value, float(data["base"]))
        if not (np.isfinite(trees.threshold).all() and np.isfinite(trees.value).all() and np.isfinite(trees.base)):
            raise ValueError("its trees hold non-finite numbers")
        return trees


def fit_boosted_trees(x: np.ndarray, y: np.ndarray, settings: BoostingSettings = BoostingSettings()) -> BoostedTrees:
    """Trees fitted one after another to what the ones before left unexplained (squared loss)."""
    x = np.asarray(x, dtype=float)
    cuts = [np.unique(np.quantile(column, np.linspace(0, 1, settings.bins + 1)[1:-1])) for column in x.T]
    # bins[i, j] <= k exactly when x[i, j] <= cuts[j][k]: each split search is then a bincount.
    bins = np.stack([np.searchsorted(c, column, side="left") for c, column in zip(cuts, x.T)], axis=1)
    gaps = [_midpoints(c, column) for c, column in zip(cuts, x.T)]
    model = BoostedTrees(np.zeros((0, 3), dtype=int), np.zeros((0, 3)), np.zeros((0, 4)), float(np.mean(y)))
    fitted = model.predict(x)
    for _ in range(settings.trees):
        tree = _fit_tree(bins, gaps, y - fitted, settings)
        if tree is None:  # no split leaves min_leaf rows on both sides, so no later tree finds one
            break
        fitted += tree.predict(x)
        model = BoostedTrees(
            np.vstack([model.feature, tree.feature]), np.vstack([model.threshold, tree.threshold]),
            np.vstack([model.value, tree.value]), model.base,
        )
    return model


def _midpoints(cuts: np.ndarray, column: np.ndarray) -> np.ndarray:
    """Each cut moved up to halfway to the next value the column holds: the same split of the
    training rows, but a prompt a rounding error from a training row's value (a quantile is
    one) no longer lands on the other side."""
    values = np.unique(column)
    above = values[np.minimum(np.searchsorted(values, cuts, side="right"), len(values) - 1)]
    middle = (cuts + above) / 2.0
    midpoints: np.ndarray = np.where((above > cuts) & (middle < above), middle, cuts)  # adjacent floats keep the cut
    return midpoints


def _fit_tree(bins: np.ndarray, gaps: list[np.ndarray], residual: np.ndarray, settings: BoostingSettings) -> BoostedTrees | None:
    """One depth-2 tree fitted to ``residual`` (its values already scaled by the learning rate),
    or None when the root cannot split; ``gaps`` holds each bin boundary's threshold."""
    root = _best_split(bins, residual, settings)
    if root is None:
        return None
    feature, threshold, value = np.zeros(3, dtype=int), np.full(3, NO_SPLIT), np.zeros(4)
    feature[0], threshold[0] = root[0], gaps[root[0]][root[1]]
    goes_right = bins[:, root[0]] > root[1]
    for node, members in ((1, ~goes_right), (2, goes_right)):
        split = _best_split(bins[members], residual[members], settings)
        leaf_right = np.zeros(int(members.sum()), dtype=bool)
        if split is not None:
            feature[node], threshold[node] = split[0], gaps[split[0]][split[1]]
            leaf_right = bins[members, split[0]] > split[1]
        for side in (0, 1):
            in_leaf = residual[members][leaf_right == bool(side)]
            value[2 * node - 2 + side] = settings.learning_rate * in_leaf.sum() / (len(in_leaf) + settings.l2)
    return BoostedTrees(feature[None], threshold[None], value[None], 0.0)


def _best_split(bins: np.ndarray, residual: np.ndarray, settings: BoostingSettings) -> tuple[int, int] | None:
    """The (feature, cut index) that most reduces the penalised squared loss, or None if none does."""
    n, lam, min_leaf = len(residual), settings.l2, settings.min_leaf
    if n < 2 * min_leaf:
        return None
    total = residual.sum()
    best, best_gain = None, 0.0
    for j in range(bins.shape[1]):
        width = int(bins[:, j].max()) + 1
        left_sum = np.cumsum(np.bincount(bins[:, j], weights=residual, minlength=width))[:-1]
        left_n = np.cumsum(np.bincount(bins[:, j], minlength=width))[:-1]
        gain = left_sum**2 / (left_n + lam) + (total - left_sum) ** 2 / (n - left_n + lam) - total**2 / (n + lam)
        gain[(left_n < min_leaf) | (n - left_n < min_leaf)] = -np.inf
        k = int(np.argmax(gain)) if len(gain) else -1
        if k >= 0 and gain[k] > best_gain:
            best, best_gain = (j, k), float(gain[k])
    return best
