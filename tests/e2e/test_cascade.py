"""The cascade through real workers: the cheap tier answers, a scorer judges, the rejected
answers go up a tier, and the output carries both calls."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
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


THREE_TIERS = """
chunk_size: 16
visibility_timeout_s: 20
classifier: {kind: heuristic}
fake_provider: {port: 0}
tiers:
  - name: cheap
    batch_size: 8
    policy: cascade
    scorer: {kind: logprob, threshold: 0.5}
    deployments:
      - {model: openai/fake-cheap, name: cheap-primary, api_base: fake, timeout_s: 5, input_cost_per_million: 0.15, output_cost_per_million: 0.60}
  - name: mid
    min_score: 0.4
    batch_size: 8
    policy: cascade
    scorer:
      kind: judge
      threshold: 0.5
      cost_aware: true
      judge: {model: openai/fake-judge, name: judge, api_base: fake, timeout_s: 5, input_cost_per_million: 1.0, output_cost_per_million: 1.0}
    deployments:
      - {model: openai/fake-mid, name: mid-primary, api_base: fake, timeout_s: 5, input_cost_per_million: 0.5, output_cost_per_million: 1.5}
  - name: frontier
    min_score: 0.7
    batch_size: 8
    deployments:
      - {model: openai/fake-frontier, name: frontier-primary, api_base: fake, timeout_s: 5, input_cost_per_million: 2.5, output_cost_per_million: 10.0}
"""


def test_logprob_and_judge_scorers_escalate_through_three_tiers(redis_url: str, tmp_path: Path) -> None:
    # Given a cheap tier scored by its answers' logprobs, a mid tier graded by an LLM judge, and
    # models that answer badly on 50% (cheap) and a 20% subset (mid) of the prompts
    url = other_db(redis_url, 11)
    redis.Redis.from_url(url).flushdb()
    ids = [f"t{i}" for i in range(40)]
    with running_cluster(url, tmp_path, THREE_TIERS) as cluster:
        cluster.fake(bad_answer_rate={"fake-cheap": 0.5, "fake-mid": 0.2})

        # When a batch runs on the cheap tier
        result = cluster.run(jobs("t", 40), "three-tiers", timeout=150)
        judge_calls = cluster.fake_stats()["by_model"].get("fake-judge", 0)
        status = cluster.client.status("three-tiers")
    redis.Redis.from_url(url).flushdb()

    # Then each tier kept exactly the answers its scorer accepted, and passed the bad ones up
    assert result["err"] == [] and Counter(line["custom_id"] for line in result["out"]) == Counter(ids)
    paths: Counter[tuple[str, ...]] = Counter()
    for line in result["out"]:
        info, calls = line["turnout"], line["turnout"]["calls"]
        paths[tuple(c["tier"] for c in calls)] += 1
        for call in calls[:-1]:  # every rejected answer was a bad one, and scored low
            assert format_failures("", call["answer"]) and call["score"] < 0.5
        final = line["response"]["body"]["choices"][0]["message"]["content"]
        assert info["tier"] == calls[-1]["tier"]
        if info["tier"] != "frontier":  # an accepted answer was a good one
            assert not format_failures("", final) and calls[-1]["score"] >= 0.5
        # the cheap answer was judged by its logprobs (an empty one has none, and is rejected)
        assert calls[0]["score_reasons"] == ["empty"] or calls[0]["score_reasons"][0].startswith("logprob:")
        if len(calls) > 1:  # graded by the judge, then weighed by what escalating it would cost
            assert calls[1]["score_reasons"][0] == "judge" and calls[1]["score_reasons"][1].startswith("cost_weighted_from:")
        assert abs(info["cost_usd"] - sum(c["cost_usd"] for c in calls)) < 1e-12
    assert set(paths) == {("cheap",), ("cheap", "mid"), ("cheap", "mid", "frontier")}
    # And the judge was asked once per mid answer, its cost counted in the lines and the batch
    assert judge_calls == paths[("cheap", "mid")] + paths[("cheap", "mid", "frontier")]
    assert abs(status.cost_usd - sum(line["turnout"]["cost_usd"] for line in result["out"])) < 1e-9
