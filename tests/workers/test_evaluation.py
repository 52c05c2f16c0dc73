"""`turnout eval`'s cost figures: each dataset priced at its own prompts' length."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

from rich.console import Console

from schemas.config import Config
from workers.evaluation import run_eval

CONFIG = Config.model_validate({
    "tiers": [
        {"name": "cheap", "deployments": [{"model": "openai/a", "input_cost_per_million": 0.15, "output_cost_per_million": 0.6}]},
        {"name": "frontier", "min_score": 0.5, "deployments": [{"model": "openai/b", "input_cost_per_million": 2.5, "output_cost_per_million": 10.0}]},
    ],
})  # fmt: skip


def _write(path: Path, prompt_chars: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for i in range(40):
            prompt = f"Question {i}: " + "x" * prompt_chars
            handle.write(json.dumps({"id": f"{path.stem}{i}", "prompt": prompt, "weak": rng.choice([0, 1]), "strong": 1}) + "\n")
    return path


def _eval(tmp_path: Path, *files: Path) -> dict[str, Any]:
    return run_eval(list(files), "heuristic", CONFIG, tmp_path / "eval.png", Console(file=io.StringIO()))


def test_each_dataset_is_priced_at_its_own_prompt_length_when_evaluated_with_others(tmp_path: Path) -> None:
    short = _write(tmp_path / "short.train.jsonl", 100, seed=1)
    long = _write(tmp_path / "long.train.jsonl", 8000, seed=2)
    together = _eval(tmp_path, short, long)
    for path in (short, long):
        alone = _eval(tmp_path, path)[path.name.split(".")[0]]
        assert together[path.name.split(".")[0]]["cost_all_strong"] == alone["cost_all_strong"]
    assert together["long"]["cost_all_strong"] > together["all"]["cost_all_strong"] > together["short"]["cost_all_strong"]


def test_a_dataset_named_all_is_priced_like_any_other(tmp_path: Path) -> None:
    result = _eval(tmp_path, _write(tmp_path / "all.train.jsonl", 100, seed=3))
    assert result["all"]["n"] == 40 and result["all"]["cost_all_strong"] > 0
