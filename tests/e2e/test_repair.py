"""A batch whose messages a killed worker took with it (Redis's BRPOP window) is repaired by
whoever waits for it: here `turnout collect --wait` on the machine that submitted it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Cluster
from workers.ledger import BatchKeys


def test_collect_wait_sends_again_the_lines_lost_with_a_killed_worker(fresh_fake: Cluster, tmp_path: Path) -> None:
    # Given a batch submitted from a file, sealed, whose every message then vanished with a worker
    lines = [{"custom_id": f"lost{i}", "prompt": f"What is {i}?", "model": "tier:cheap"} for i in range(12)]
    source = tmp_path / "batch.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ledger = fresh_fake.client.ledger
    ledger.open_batch("lost")
    ledger.claim_ids("lost", [(line["custom_id"], n) for n, line in enumerate(lines, 1)])
    ledger.seal("lost", len(lines))
    ledger.redis.hset(BatchKeys("lost").meta, "input_path", str(source))  # as `turnout submit FILE` records it

    # When its owner waits for it with `turnout collect --wait`
    env = dict(os.environ, TURNOUT_REDIS_URL=fresh_fake.redis_url, TURNOUT_STALL_S="2")
    argv = [sys.executable, "-m", "workers.cli", "collect", "lost", "-o", "out", "--wait", "-c", str(fresh_fake.config_path)]
    collected = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    # Then the stall is noticed, the missing lines are sent again, and every line is answered once
    assert collected.returncode == 0, collected.stderr
    assert "12 lines had gone missing" in collected.stderr
    outputs = [json.loads(line)["custom_id"] for line in (tmp_path / "out" / "output.jsonl").read_text().splitlines()]
    assert sorted(outputs) == sorted(line["custom_id"] for line in lines)


def test_submit_records_where_its_input_came_from(fresh_fake: Cluster, tmp_path: Path) -> None:
    source = tmp_path / "batch.jsonl"
    source.write_text(json.dumps({"custom_id": "w1", "prompt": "Hi", "model": "tier:cheap"}) + "\n")
    fresh_fake.client.submit_report(str(source), "with-input")
    assert fresh_fake.client.input_path("with-input") == source.resolve()
    fresh_fake.client.wait("with-input", timeout=60)
