"""`turnout run`: the whole pipeline in one command, on the embedded Redis."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from workers.broker import EmbeddedRedis, _answers


def write_batch(path: Path, lines: int, seed: int = 3) -> int:
    """A batch with malformed lines mixed in; returns how many lines it has."""
    rng = random.Random(seed)
    bad = ['{"custom_id": "broken", ', "plain text", '{"custom_id": "x-no-prompt"}', "[]"]
    with open(path, "w") as handle:
        for i in range(lines):
            if rng.random() < 0.05:
                handle.write(rng.choice(bad) + "\n")
            elif i % 2:
                handle.write(json.dumps({"custom_id": f"r{i}", "prompt": f"Question {i}: what is {i} + {i}?"}) + "\n")
            else:
                body = {"model": "auto", "messages": [{"role": "user", "content": f"Explain step by step why {i} is {'even' if i % 2 == 0 else 'odd'}."}]}
                handle.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")
    return lines


def test_run_keeps_the_ledger_on_a_thousand_lines_with_malformed_ones(tmp_path: Path, repo_root: Path) -> None:
    # Given a 1,000-line file with malformed lines, and no Redis configured
    batch = tmp_path / "batch.jsonl"
    total = write_batch(batch, 1000)
    env = {k: v for k, v in os.environ.items() if k not in ("TURNOUT_REDIS_URL", "TURNOUT_FAKE_URL")}

    # When `turnout run` runs it
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "run", str(batch), "-c", str(repo_root / "examples/turnout.yaml"), "-o", "out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    # Then it succeeds and prints the summary
    assert result.returncode == 0, result.stderr[-2000:]
    assert "all-frontier would" in " ".join(result.stdout.split())
    # And every input line is exactly one output or error line
    outputs = [json.loads(line) for line in (tmp_path / "out/output.jsonl").read_text().splitlines()]
    errors = [json.loads(line) for line in (tmp_path / "out/errors.jsonl").read_text().splitlines()]
    assert len(outputs) + len(errors) == total
    assert sorted(line["turnout"]["line"] for line in outputs + errors) == list(range(1, total + 1))
    ids = [line["custom_id"] for line in outputs]
    assert len(ids) == len(set(ids))
    assert errors and all(line["error"]["code"] for line in errors)
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["output_lines"] == len(outputs) and report["error_lines"] == len(errors)
    # And the answers finished while it ran were spilled out of Redis, each once, all collected
    spilled = [json.loads(line)["custom_id"] for spill in (tmp_path / ".turnout/spill").glob("*.jsonl")
               for line in spill.read_text().splitlines()]  # fmt: skip
    assert spilled and len(spilled) == len(set(spilled)) and set(spilled) <= set(ids)
    # And the embedded Redis it started is stopped again
    assert not _answers(EmbeddedRedis(tmp_path / ".turnout").url)
