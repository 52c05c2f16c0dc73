"""What a worker process says about its config when it loads its classifier."""

from __future__ import annotations

import logging

import pytest

from schemas.config import Config
from workers.app import Runtime


def _config(classifier: str) -> Config:
    return Config.model_validate(
        {
            "tiers": [
                {"name": "cheap", "deployments": [{"model": "openai/gpt-4o-mini"}]},
                {"name": "frontier", "min_score": 0.6, "min_score_by_kind": {"general": 0.3}, "deployments": [{"model": "openai/gpt-4o"}]},
            ],
            "classifier": {"kind": classifier},
        }
    )


def test_per_kind_thresholds_under_the_heuristic_are_called_out(caplog: pytest.LogCaptureFixture) -> None:
    # Given a tier with a threshold per kind, and the heuristic (which gives no kinds) routing
    with caplog.at_level(logging.WARNING, logger="turnout.app"):
        Runtime(_config("heuristic"), "redis://unused").classifier
    # Then the worker says those thresholds go unused
    assert "min_score_by_kind" in caplog.text and "frontier" in caplog.text


def test_per_kind_thresholds_under_the_trained_model_are_used_quietly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="turnout.app"):
        Runtime(_config("auto"), "redis://unused").classifier
    assert "min_score_by_kind" not in caplog.text
