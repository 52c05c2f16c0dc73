"""Scaling a tier while a batch runs, and the views an operator scales by."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

from tests.e2e.conftest import Cluster


def turnout(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TURNOUT_REDIS_URL=cluster.redis_url)
    argv = [sys.executable, "-m", "workers.cli", *args, "-c", str(cluster.config_path)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def test_a_tier_worker_joins_and_leaves_mid_batch_without_losing_or_doubling_jobs(fresh_fake: Cluster) -> None:
    # Given a slow provider and a batch running on the cheap tier
    fresh_fake.fake(latency_ms=300)
    ids = [f"j{i}" for i in range(80)]
    lines = [{"custom_id": i, "prompt": f"What is {i}?", "model": "tier:cheap"} for i in ids]
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(fresh_fake.run(lines, "join-leave", timeout=180)))
    runner.start()

    # When a second cheap worker joins, works for a while, and leaves again
    env = dict(os.environ, TURNOUT_REDIS_URL=fresh_fake.redis_url)
    argv = [sys.executable, "-m", "workers.cli", "worker", "--pool", "cheap", "--name", "cheap-extra@%h", "-c", str(fresh_fake.config_path)]
    extra = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(12)
    os.killpg(extra.pid, signal.SIGTERM)  # a warm shutdown: finish what it holds, take nothing new
    extra.wait(timeout=60)
    runner.join(timeout=180)

    # Then every job is answered exactly once, and its cost counted once
    assert not runner.is_alive()
    assert result["err"] == [] and Counter(line["custom_id"] for line in result["out"]) == Counter(ids)
    status = fresh_fake.client.status("join-leave")
    assert abs(status.cost_usd - sum(line["turnout"]["cost_usd"] for line in result["out"])) < 1e-9


def test_status_and_scale_report_queues_and_recommendations(fresh_fake: Cluster) -> None:
    # Given a batch in flight on a slow provider (10 cheap tasks of 8 jobs, one at a time: ~10 s)
    fresh_fake.fake(latency_ms=1000)
    lines = [{"custom_id": f"v{i}", "prompt": "Hi", "model": "tier:cheap"} for i in range(80)]
    runner = threading.Thread(target=fresh_fake.run, args=(lines, "views"))
    runner.start()
    fresh_fake.wait_for_done("views", 1)  # the cheap worker is at work

    # When an operator asks for status and scaling advice as JSON
    status = turnout(fresh_fake, "status", "views", "--json")
    scale = turnout(fresh_fake, "scale", "--interval", "2", "--json")
    runner.join(timeout=120)

    # Then status shows the batch and every tier with its queue and DLQ
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert view["batches"][0]["batch_id"] == "views" and view["batches"][0]["submitted"] == 80
    assert {t["tier"] for t in view["tiers"]} == {"cheap", "frontier"}
    assert all("dlq" in t and "queued_jobs" in t and "recommended_processes" in t for t in view["tiers"])
    tiers = {t["tier"]: t for t in view["tiers"]}
    assert 1 <= tiers["cheap"]["in_flight_jobs"] <= 8, "the cheap worker holds one task of up to 8 jobs"
    assert tiers["frontier"]["in_flight_jobs"] == 0 and tiers["cheap"]["waiting_retry_jobs"] == 0
    # And scale recommends processes per tier from what it observed
    assert scale.returncode == 0, scale.stderr
    advice = {r["tier"]: r for r in json.loads(scale.stdout)}
    assert set(advice) == {"cheap", "frontier"} and advice["cheap"]["latency_s"] > 0
