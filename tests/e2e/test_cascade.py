"""The cascade through real workers: the cheap tier answers, a scorer judges, the rejected
answers go up a tier, and the output carries both calls."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from router.scorer import format_failures
from tests.conftest import other_db
from tests.e2e.conftest import Cluster, running_cluster

CONFIG = """
chunk_size: 16
visibility_timeout_s: 20
classifier: {kind: heuristic}
fake_provider: {port: 0}
tiers:
  - name: cheap
    batch_size: 8
    cooldown_s: 1
    policy: cascade
    scorer: {kind: format, threshold: 0.5}
    deployments:
      - {model: openai/fake-cheap, name: cheap-primary, api_base: fake, timeout_s: 5, input_cost_per_million: 0.15, output_cost_per_million: 0.60}
  - name: frontier
    min_score: 0.5
    batch_size: 8
    cooldown_s: 1
    deployments:
      - {model: openai/fake-frontier, name: frontier-primary, api_base: fake, timeout_s: 5, input_cost_per_million: 2.5, output_cost_per_million: 10.0}
"""


@pytest.fixture(scope="module")
def cascade(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    url = other_db(redis_url, 12)  # its own queues: the session's cluster must not take these tasks
    redis.Redis.from_url(url).flushdb()
    with running_cluster(url, tmp_path_factory.mktemp("cascade"), CONFIG) as started:
        started.fake(bad_answer_rate={"fake-cheap": 0.4})
        yield started
    redis.Redis.from_url(url).flushdb()


def jobs(prefix: str, n: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}{i}", "prompt": f"What is {i} plus {i}?", "model": "tier:cheap"} for i in range(n)]


def check_cascade(result: dict[str, list[dict[str, Any]]], ids: list[str]) -> int:
    """Every line whole and costed; returns how many were escalated."""
    assert result["err"] == []
    assert Counter(line["custom_id"] for line in result["out"]) == Counter(ids)
    escalated = 0
    for line in result["out"]:
        info = line["turnout"]
        calls = info["calls"]
        final_answer = line["response"]["body"]["choices"][0]["message"]["content"]
        if len(calls) == 2:  # rejected by the scorer: both calls on record, the frontier answer returned
            escalated += 1
            assert [c["tier"] for c in calls] == ["cheap", "frontier"] and info["tier"] == "frontier"
            assert format_failures("", calls[0]["answer"]) and calls[0]["score"] < 0.5
        else:  # accepted: one call, the cheap answer returned
            assert [c["tier"] for c in calls] == ["cheap"] and info["tier"] == "cheap"
            assert not format_failures("", final_answer) and calls[0]["score"] >= 0.5
        assert abs(info["cost_usd"] - sum(c["cost_usd"] for c in calls)) < 1e-12
    return escalated


def test_exactly_the_rejected_answers_are_escalated_and_costs_add_up(cascade: Cluster) -> None:
    # Given a cheap model that answers some prompts badly (empty or a refusal)
    ids = [f"c{i}" for i in range(40)]

    # When a batch runs on the cascading cheap tier
    result = cascade.run(jobs("c", 40), "cascade", timeout=120)

    # Then the bad answers, and only those, went up to the frontier, with both calls recorded
    escalated = check_cascade(result, ids)
    assert 0 < escalated < 40
    status = cascade.client.status("cascade")
    assert abs(status.cost_usd - sum(line["turnout"]["cost_usd"] for line in result["out"])) < 1e-9


def test_killing_the_frontier_worker_during_escalations_loses_and_doubles_nothing(cascade: Cluster) -> None:
    # Given a slow frontier, so escalated jobs are in its worker when it dies
    cascade.fake(latency_ms=400)
    ids = [f"e{i}" for i in range(40)]
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(cascade.run(jobs("e", 40), "cascade-kill", timeout=180)))
    runner.start()

    # When the frontier worker is killed -9 mid-batch, and restarted
    time.sleep(3)
    frontier = next(c for c in cascade.supervisor.children if c.name == "pool-frontier")
    os.killpg(frontier.process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 180
    while runner.is_alive() and time.monotonic() < deadline:
        cascade.supervisor.check()
        runner.join(timeout=0.5)
    cascade.fake(latency_ms=0)

    # Then every job has one line, escalations included, and the cost is counted once
    assert not runner.is_alive()
    assert check_cascade(result, ids) > 0
    status = cascade.client.status("cascade-kill")
    assert abs(status.cost_usd - sum(line["turnout"]["cost_usd"] for line in result["out"])) < 1e-9
