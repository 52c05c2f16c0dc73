"""Operating turnout: Flower sees every pool and task, Prometheus scrapes turnout's metrics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.e2e.conftest import Cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()  # type: ignore[no-any-return]


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {seconds}s")


def start(cluster: Cluster, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TURNOUT_REDIS_URL=cluster.redis_url)
    argv = [sys.executable, "-m", "workers.cli", *args, "-c", str(cluster.config_path)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextmanager
def serving(cluster: Cluster, command: str, ready_path: str) -> Iterator[str]:
    """Run `turnout COMMAND --port P` against the cluster until the test ends; yields its base URL
    once ``ready_path`` answers."""
    port = free_port()
    process = start(cluster, command, "--port", str(port))
    try:
        wait_for(f"http://127.0.0.1:{port}{ready_path}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def flower_url(cluster: Cluster) -> Iterator[str]:
    with serving(cluster, "flower", "/healthcheck") as url:
        yield url


@pytest.fixture
def metrics_url(cluster: Cluster) -> Iterator[str]:
    with serving(cluster, "metrics", "/metrics") as url:
        yield f"{url}/metrics"


def test_flower_finds_every_pool_and_the_batchs_tasks_by_custom_id(cluster: Cluster, flower_url: str) -> None:
    # Given Flower running on the test broker, receiving events (a first batch shows it is)
    deadline = time.monotonic() + 60
    warmups = 0
    while not json.loads(get(f"{flower_url}/api/tasks")) and time.monotonic() < deadline:
        cluster.run([{"custom_id": "warm", "prompt": "Hi"}], f"flower-warmup-{warmups}")
        warmups += 1
        time.sleep(1.0)

    # When a batch runs
    cluster.run([{"custom_id": f"fl{i}", "prompt": "What is 2 + 2?"} for i in range(10)], "flower-batch")

    # Then Flower's API lists each pool's worker online
    workers: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(workers) < 3:
        workers = json.loads(get(f"{flower_url}/api/workers?refresh=1", timeout=30))
        time.sleep(0.5)
    pools = {name.split("@")[0] for name in workers}
    assert {"classify", "cheap", "frontier"} <= pools
    # And the batch's tasks with readable names and states, their args showing ids, not prompts
    tasks: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tasks = json.loads(get(f"{flower_url}/api/tasks"))
        mine = [t for t in tasks.values() if "flower-batch" in (t.get("args") or "")]
        if any(t["name"] == "turnout.complete.cheap" and t["state"] == "SUCCESS" for t in mine):
            break
        time.sleep(0.5)
    names = {t["name"] for t in mine}
    assert {"turnout.classify", "turnout.complete.cheap"} <= names
    assert all(t["state"] == "SUCCESS" for t in mine)
    shown = " ".join(t["args"] for t in mine)
    assert "fl3" in shown and "What is 2 + 2" not in shown


def test_flower_refuses_to_listen_beyond_localhost_without_a_password(cluster: Cluster) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"} | {"TURNOUT_REDIS_URL": cluster.redis_url}
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "flower", "--host", "0.0.0.0", "-c", str(cluster.config_path)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "FLOWER_BASIC_AUTH" in result.stderr


def test_metrics_are_scraped_during_a_batch(fresh_fake: Cluster, metrics_url: str) -> None:
    # Given a slow provider, so the batch is still running while we scrape, and a batch with a cap
    fresh_fake.fake(latency_ms=300)
    fresh_fake.client.ledger.set_max_cost("metrics-batch", 100)
    lines = [{"custom_id": f"mx{i}", "prompt": "What is 2 + 2?", "model": "tier:cheap"} for i in range(40)]
    runner = threading.Thread(target=fresh_fake.run, args=(lines, "metrics-batch"))
    runner.start()

    # When Prometheus scrapes during the batch
    time.sleep(1.0)
    during = get(metrics_url).decode()
    runner.join(timeout=120)
    after = get(metrics_url).decode()

    # Then queue depths are listed for every tier, and the batch's progress, cost and latency show
    assert 'turnout_queue_messages{queue="turnout.tier.frontier",tier="frontier"}' in during
    assert 'turnout_batch_lines{batch="metrics-batch",state="submitted"}' in during
    assert 'turnout_batch_lines{batch="metrics-batch",state="done"} 40.0' in after
    assert 'turnout_batch_max_cost_usd{batch="metrics-batch"} 100.0' in after
    assert 'turnout_jobs_total{outcome="done",tier="cheap"}' in after
    assert "turnout_provider_latency_seconds_bucket" in after
    assert 'turnout_dlq_jobs{tier="cheap"}' in after
