"""A real cluster for end-to-end tests: the fake provider and one Celery worker process per
pool, started once per session against the test Redis, like `turnout run` starts them."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from schemas.config import Config, load_config
from workers.app import CLASSIFY_QUEUE
from workers.client import Client
from workers.fake_provider import FakeProviderOptions, configure, fetch_stats, reset
from workers.ledger import PREFIX
from workers.producer import UNACKED
from workers.supervisor import Supervisor

CONFIG = """
chunk_size: 16
high_water: 10000
visibility_timeout_s: 20     # a task whose worker died is delivered again after this long
classifier: {kind: heuristic}
limits: {max_prompt_chars: 2000, max_line_bytes: 20000}
fake_provider: {port: 0}
tiers:
  - name: cheap
    min_score: 0.0
    batch_size: 8
    max_attempts: 3
    cooldown_s: 1
    models: [gpt-4o-mini]
    deployments:
      - {model: openai/fake-cheap, name: cheap-primary, api_base: fake, timeout_s: 5,
         api_key: os.environ/TURNOUT_TEST_PLANTED_KEY,
         input_cost_per_million: 0.15, output_cost_per_million: 0.60}
      - {model: openai/fake-cheap-backup, name: cheap-backup, api_base: fake, timeout_s: 5,
         input_cost_per_million: 0.20, output_cost_per_million: 0.80}
  - name: frontier
    min_score: 0.5
    batch_size: 8
    processes: 2
    max_attempts: 3
    max_waits: 0                 # an outage spends attempts at once: dead letters to replay
    cooldown_s: 1
    models: [gpt-4o]
    deployments:
      - {model: openai/fake-frontier, name: frontier-primary, api_base: fake, timeout_s: 5, rpm: 30,
         input_cost_per_million: 2.5, output_cost_per_million: 10.0}
      - {model: openai/fake-frontier-backup, name: frontier-backup, api_base: fake, timeout_s: 5,
         input_cost_per_million: 3.0, output_cost_per_million: 15.0}
"""


#: A secret the tests plant in the environment and then look for everywhere it must not be.
PLANTED_KEY = "sk-planted-7f3a9c2e1d"


@dataclass
class Cluster:
    config: Config
    config_path: Path
    client: Client
    fake_url: str
    supervisor: Supervisor
    redis_url: str

    def run(self, lines: list[Any], batch_id: str, timeout: float = 90) -> dict[str, list[dict[str, Any]]]:
        """Submit lines (dicts or raw strings), wait, and return the parsed output and error lines."""
        raw = [line if isinstance(line, str) else json.dumps(line) for line in lines]
        self.client.submit(raw, batch_id)
        self.client.wait(batch_id, timeout=timeout)
        return {
            "out": [json.loads(v) for v in self.client.ledger.lines(batch_id, "out")],
            "err": [json.loads(v) for v in self.client.ledger.error_lines(batch_id)],
        }

    def wait_for_done(self, batch_id: str, at_least: int, timeout: float = 60) -> None:
        """Block until the batch has at least this many lines recorded (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.ledger.status(batch_id)
            if status is not None and status.done >= at_least:
                return
            time.sleep(0.05)

    def fake(self, **changes: Any) -> None:
        configure(self.fake_url, **changes)

    def fake_stats(self) -> dict[str, Any]:
        return fetch_stats(self.fake_url)


@contextmanager
def running_cluster(redis_url: str, home: Path, config_text: str) -> Iterator[Cluster]:
    """The fake provider and one worker per pool for ``config_text``, stopped on exit."""
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / "turnout.yaml"
    config_path.write_text(config_text)
    config = load_config(config_path)
    os.environ["TURNOUT_TEST_PLANTED_KEY"] = PLANTED_KEY
    env = dict(os.environ, TURNOUT_REDIS_URL=redis_url, TURNOUT_CONFIG=str(config_path))
    env.pop("TURNOUT_FAKE_URL", None)
    supervisor = Supervisor(config, config_path, env, home / "logs")
    try:
        fake_url = supervisor.start_fake_provider()
        assert fake_url is not None
        os.environ["TURNOUT_FAKE_URL"] = fake_url
        supervisor.start_pools()
        yield Cluster(config, config_path, Client(config, redis_url), fake_url, supervisor, redis_url)
    finally:
        supervisor.stop()


@pytest.fixture(scope="session")
def cluster(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(redis_url, tmp_path_factory.mktemp("cluster"), CONFIG) as started:
        yield started


@pytest.fixture
def fresh_fake(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with the fake provider back to well-behaved after the test, and its
    deployments' gate state (cooldowns, probations, rate windows) cleared."""
    reset(cluster.fake_url)
    settle(cluster)  # let calls an earlier test's tasks still make end, then clear their cooldowns
    clear_gates(cluster.redis_url)
    yield cluster
    cluster.fake(**FakeProviderOptions().as_json())  # every option a test may have changed
    reset(cluster.fake_url)
    time.sleep(0.1)


def settle(cluster: Cluster, most_s: float = 1.2) -> None:
    """Wait up to ``most_s`` for the cluster to hold no task: none unacknowledged (running, or
    counting down a retry) and none queued, handed-off calls' guards included. A task's calls
    end before it is acknowledged, so an idle cluster has none out; the old fixed 1.2 s wait,
    paid by some 30 tests, was mostly spent on a cluster already idle."""
    client = redis.Redis.from_url(cluster.redis_url)
    queues = [CLASSIFY_QUEUE] + [q for tier in cluster.config.tiers for q in (tier.queue, tier.guard_queue)]
    deadline = time.monotonic() + most_s
    try:
        while time.monotonic() < deadline:
            if not client.hlen(UNACKED) and not any(client.llen(q) for q in queues):
                time.sleep(0.1)  # a task acknowledged this instant may still be recording
                return
            time.sleep(0.05)
    finally:
        client.close()


def clear_gates(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{PREFIX}:gate:*", count=1000):
        client.delete(key)
