"""Freeing Redis: `collect --spill` while a batch runs, `collect --delete` and `turnout delete` after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Cluster
from tests.e2e.test_scaling import turnout
from workers.dlq import DeadLetters


def test_collect_then_delete_frees_the_batch_and_its_dead_letters(fresh_fake: Cluster, tmp_path: Path) -> None:
    # Given a finished batch with one line dead-lettered (a 400 from the provider)
    fresh_fake.fake(context_limit=30)  # the long prompt is refused at every tier
    lines = [{"custom_id": f"d{i}", "prompt": f"What is {i}?", "model": "tier:cheap"} for i in range(6)]
    lines.append({"custom_id": "long", "prompt": "word " * 200, "model": "tier:frontier"})
    fresh_fake.run(lines, "to-delete")
    letters = DeadLetters(fresh_fake.client.ledger.redis)
    assert [letter.job.custom_id for letter in letters.entries(["cheap", "frontier"], "to-delete")] == ["long"]

    # When it is collected with --delete
    collected = turnout(fresh_fake, "collect", "to-delete", "-o", str(tmp_path), "--delete")

    # Then the files hold every line, and Redis holds nothing of the batch but its tombstone
    assert collected.returncode == 0, collected.stderr
    assert len((tmp_path / "output.jsonl").read_text().splitlines()) == 6
    assert [json.loads(line)["custom_id"] for line in (tmp_path / "errors.jsonl").read_text().splitlines()] == ["long"]
    redis = fresh_fake.client.ledger.redis
    assert redis.keys("turnout:batch:to-delete:*") == [b"turnout:batch:to-delete:deleted"]
    assert list(letters.entries(["cheap", "frontier"], "to-delete")) == []
    status = turnout(fresh_fake, "status", "--json")
    assert "to-delete" not in [b["batch_id"] for b in json.loads(status.stdout)["batches"]]


def test_an_incomplete_batch_is_not_deleted_without_force(fresh_fake: Cluster) -> None:
    # Given a batch opened but never sealed (a submit still running, say)
    fresh_fake.client.ledger.open_batch("half-done")

    # Then `turnout delete` refuses in one sentence, and --force deletes it
    refused = turnout(fresh_fake, "delete", "half-done", "--yes")
    assert refused.returncode == 2 and "not complete" in refused.stderr and "Traceback" not in refused.stderr
    assert fresh_fake.client.ledger.status("half-done") is not None
    forced = turnout(fresh_fake, "delete", "half-done", "--yes", "--force")
    assert forced.returncode == 0, forced.stderr
    assert fresh_fake.client.ledger.status("half-done") is None


def test_collect_wait_spill_moves_answers_out_of_redis_while_the_batch_runs(fresh_fake: Cluster, tmp_path: Path) -> None:
    # Given a batch that takes a few seconds (5 cheap tasks of 8 jobs, 1 s a call)
    fresh_fake.fake(latency_ms=1000)
    ids = [f"s{i}" for i in range(40)]
    fresh_fake.client.submit([json.dumps({"custom_id": i, "prompt": f"What is {i}?", "model": "tier:cheap"}) for i in ids], "spilling")

    # When it is collected with --wait --spill from a directory of the operator's
    env = dict(os.environ, TURNOUT_REDIS_URL=fresh_fake.redis_url)
    argv = [sys.executable, "-m", "workers.cli", "collect", "spilling", "-o", "out", "--wait", "--spill", "-c", str(fresh_fake.config_path)]
    collected = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    # Then the output holds every answer once, and Redis kept only a done mark on the spilled ones' ids
    assert collected.returncode == 0, collected.stderr
    outputs = [json.loads(line)["custom_id"] for line in (tmp_path / "out" / "output.jsonl").read_text().splitlines()]
    assert sorted(outputs) == sorted(ids)
    spill_file = tmp_path / ".turnout" / "spill" / "spilling.output.jsonl"
    spilled = [json.loads(line)["custom_id"] for line in spill_file.read_text().splitlines()]
    assert spilled and len(spilled) == len(set(spilled))
    held = fresh_fake.client.ledger.redis.hmget("turnout:batch:spilling:out", spilled)
    assert held == [None] * len(spilled)
    marks = fresh_fake.client.ledger.owners("spilling", spilled)
    assert all(mark is not None and mark.endswith(b"!") for mark in marks)
