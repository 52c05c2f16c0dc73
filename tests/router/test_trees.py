"""Boosted depth-2 trees: what they fit that a line cannot, and their round trip through JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from router.trees import BoostedTrees, BoostingSettings, fit_boosted_trees


def _band(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One useful feature x in [0, 1] and one of noise; y is 1 inside the band 0.4 < x < 0.6."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 2))
    return x, ((x[:, 0] > 0.4) & (x[:, 0] < 0.6)).astype(float)


def test_boosted_trees_fit_a_middle_band_a_linear_model_cannot() -> None:
    # Given a target that is 1 only in the middle of x's range
    x, y = _band()
    # When trees and a least-squares line are fitted to it
    trees = fit_boosted_trees(x, y)
    design = np.column_stack([x, np.ones(len(x))])
    line = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    # Then the line explains almost none of it, and the trees nearly all
    assert np.mean((line - y) ** 2) > 0.9 * np.var(y)
    assert np.mean((trees.predict(x) - y) ** 2) < 0.1 * np.var(y)
    inside, outside = trees.predict(np.array([[0.5, 0.5]])), trees.predict(np.array([[0.1, 0.5], [0.9, 0.5]]))
    assert inside[0] > 0.8 and outside.max() < 0.2


def test_boosted_trees_round_trip_through_json_with_identical_predictions() -> None:
    # Given trees fitted to the band
    x, y = _band()
    trees = fit_boosted_trees(x, y)
    # When they go through JSON and back
    again = BoostedTrees.from_dict(json.loads(json.dumps(trees.to_dict())), n_features=2)
    # Then every prediction is bit-for-bit the same, thresholds included
    assert np.array_equal(again.predict(x), trees.predict(x))
    assert np.array_equal(again.threshold, trees.threshold)


def test_too_few_rows_to_split_give_the_mean() -> None:
    # Given fewer rows than two leaves need
    x, y = _band(n=50)
    # Then no tree is grown and every prediction is the mean
    trees = fit_boosted_trees(x, y, BoostingSettings(min_leaf=40))
    assert len(trees.feature) == 0
    assert np.allclose(trees.predict(x), y.mean())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("feature", [[0, 0, 5]], "depth-2 trees over 2 features"),
        ("value", [[0.0, 0.0, 0.0]], "depth-2 trees"),
        ("threshold", [[float("nan"), 0.0, 0.0]], "non-finite"),
    ],
)
def test_tree_arrays_that_do_not_fit_are_refused(field: str, value: list[list[float]], message: str) -> None:
    # Given one tree's arrays with one of them broken
    data = {"feature": [[0, 1, 0]], "threshold": [[0.5, 0.5, 1e300]], "value": [[0.1, 0.2, 0.3, 0.0]], "base": 0.0}
    data[field] = value
    # Then building the trees says what is wrong
    with pytest.raises(ValueError, match=message):
        BoostedTrees.from_dict(data, n_features=2)
