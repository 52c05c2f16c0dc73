"""A slow call does not hold its micro-batch's process: the task hands it off and goes on,
and nothing is lost or paid twice when the process stops or dies with the call still out
(workers/stragglers.py). The cluster's cheap pool has one process and micro-batches of 8."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from tests.conftest import other_db
from tests.e2e.conftest import Cluster, running_cluster
from tests.e2e.test_crash import assert_ledger_whole, pool, pool_children, run_while
from workers.producer import UNACKED
from workers.run import _holds_tasks
from workers.stragglers import lease_key


def slow_batch(prefix: str, slow: int = 5) -> tuple[list[str], list[dict[str, Any]]]:
    """Sixteen cheap jobs, two micro-batches; the first holds one call the provider keeps 4.5 s."""
    ids = [f"{prefix}{i}" for i in range(16)]
    lines = [{"custom_id": i, "prompt": f"What is {i}?", "model": "tier:cheap"} for i in ids]
    lines[slow]["prompt"] = "A SLOW one"
    return ids, lines


def watch(cluster: Cluster, batch: str, slow_id: str, seen: list[tuple[int, bool]], until: int = 16) -> threading.Thread:
    """Note (lines done, the slow one among them) each time the count changes."""

    def run() -> None:
        ledger = cluster.client.ledger
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = ledger.status(batch)
            done = status.done if status is not None else 0
            if not seen or seen[-1][0] != done:
                seen.append((done, ledger.answered(batch, [slow_id])[0]))
            if done >= until:
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=run, daemon=True)
    watcher.start()
    return watcher


def wait_for_lease(cluster: Cluster, batch: str, custom_id: str, timeout: float = 30) -> None:
    client = redis.Redis.from_url(cluster.redis_url)
    deadline = time.monotonic() + timeout
    while not client.exists(lease_key(batch, custom_id)):
        assert time.monotonic() < deadline, "the slow call was never handed off"
        time.sleep(0.02)


def test_a_slow_call_does_not_hold_the_next_micro_batch(fresh_fake: Cluster) -> None:
    # Given one cheap process and two micro-batches, the first with a call held 4.5 s
    fresh_fake.fake(hang_on=["SLOW"], hang_s=4.5)
    ids, lines = slow_batch("h")
    seen: list[tuple[int, bool]] = []
    try:
        watcher: list[threading.Thread] = []
        result = run_while(fresh_fake, lines, "handoff", lambda: watcher.append(watch(fresh_fake, "handoff", "h5", seen)))
        watcher[0].join(timeout=10)
    finally:
        fresh_fake.fake(hang_on=[])

    # Then the second micro-batch was answered while the slow call was still out (the process
    # did not wait for it), the slow one after, each job once, each call made once
    assert (15, False) in seen, seen
    assert seen[-1] == (16, True)
    assert_ledger_whole(fresh_fake, result, ids, "handoff")
    assert all(line["turnout"]["attempts"] == 1 for line in result["out"])


def test_a_stopping_worker_finishes_its_handed_off_calls_before_it_exits(fresh_fake: Cluster) -> None:
    # Given a slow call handed off, and the rest of the batch answered
    fresh_fake.fake(hang_on=["SLOW"], hang_s=4.5)
    before = fresh_fake.fake_stats()["requests"]
    ids, lines = slow_batch("t")
    cheap = pool(fresh_fake, "cheap")
    try:
        # When the cheap worker is stopped (SIGTERM, a warm shutdown) with the call still out
        def stop_worker() -> None:
            wait_for_lease(fresh_fake, "stop", "t5")
            fresh_fake.wait_for_done("stop", 15)
            os.kill(cheap.process.pid, signal.SIGTERM)
            cheap.process.wait(timeout=30)

        result = run_while(fresh_fake, lines, "stop", stop_worker)
    finally:
        fresh_fake.fake(hang_on=[])
        fresh_fake.supervisor.check()  # the pool back for the tests after this one

    # Then it waited for the call and recorded its answer: nothing run or paid twice
    assert_ledger_whole(fresh_fake, result, ids, "stop")
    assert all(line["turnout"]["attempts"] == 1 for line in result["out"])
    assert fresh_fake.fake_stats()["requests"] - before == 16


def test_a_process_killed_with_a_handed_off_call_out_loses_nothing(fresh_fake: Cluster) -> None:
    # Given a slow call handed off
    fresh_fake.fake(hang_on=["SLOW"], hang_s=4.5)
    ids, lines = slow_batch("x")
    try:
        # When the pool process holding it is killed -9 before the call ends
        def kill_pool_process() -> None:
            wait_for_lease(fresh_fake, "orphan", "x5")
            for child in pool_children(pool(fresh_fake, "cheap").process.pid):
                os.kill(child, signal.SIGKILL)

        result = run_while(fresh_fake, lines, "orphan", kill_pool_process)
    finally:
        fresh_fake.fake(hang_on=[])

    # Then its lease lapses, the guard runs the job again, and the ledger is whole: the lost
    # call counts as an attempt
    assert_ledger_whole(fresh_fake, result, ids, "orphan")
    attempts = Counter(line["turnout"]["attempts"] for line in result["out"] if line["custom_id"] == "x5")
    assert attempts == Counter({2: 1})


def test_a_handed_off_call_that_fails_takes_its_retries_once_not_again_by_its_guard(fresh_fake: Cluster) -> None:
    # Given a call that both deployments hold 1.5 s and then fail with a 500, handed off
    fresh_fake.fake(hang_on=["SLOW"], hang_s=1.5, fail_on={"SLOW": 500})
    before = fresh_fake.fake_stats()["requests"]
    ids, lines = slow_batch("f")
    try:
        result = run_while(fresh_fake, lines[:8], "failing", lambda: None)
    finally:
        fresh_fake.fake(hang_on=[], fail_on={})

    # Then it ends as one error line after its 3 attempts on both deployments, and no more calls
    assert Counter(line["custom_id"] for line in result["out"]) == Counter(ids[:8]) - Counter(["f5"])
    assert [line["custom_id"] for line in result["err"]] == ["f5"]
    assert result["err"][0]["turnout"]["attempts"] == 3
    assert fresh_fake.fake_stats()["requests"] - before == 7 + 3 * 2


ONE_TIER = """
chunk_size: 8
classifier: {kind: heuristic}
fake_provider: {port: 0}
tiers:
  - name: cheap
    batch_size: 8
    deployments:
      - {model: openai/fake-cheap, name: cheap-primary, api_base: fake, timeout_s: 20, input_cost_per_million: 0.15, output_cost_per_million: 0.60}
"""


def stop_with_calls_out(
    redis_url: str, tmp_path: Path, hang_s: float, slow: int = 1, hurry_after: float | None = None
) -> tuple[list[bool], float, list[str]]:
    """Pools started as `turnout run` starts them, given a micro-batch of eight whose calls take
    1 s, ``slow`` of them ``hang_s`` more, stopped once the calls are out (a Ctrl-C on `turnout
    run`), with a second Ctrl-C ``hurry_after`` seconds into the stop. Returns which jobs were
    answered, how long the stop took and what it said; asserts the pools left no message
    unacknowledged (held by a stopped worker, it would wait out the visibility timeout)."""
    url = other_db(redis_url, 11)
    redis.Redis.from_url(url).flushdb()
    ids, lines = slow_batch("p")
    for line in lines[:slow]:
        line["prompt"] = "A SLOW one"
    said: list[str] = []
    with running_cluster(url, tmp_path, ONE_TIER) as cluster:
        cluster.fake(latency_ms=1000, hang_on=["SLOW"], hang_s=hang_s)
        cluster.client.submit([json.dumps(line) for line in lines[:8]], "stopping")
        deadline = time.monotonic() + 60
        while cluster.fake_stats()["in_flight"] < 8:
            assert time.monotonic() < deadline, "the calls never went out"
            time.sleep(0.02)
        hurry = threading.Event()
        if hurry_after is not None:
            threading.Timer(hurry_after, hurry.set).start()
        started = time.monotonic()
        cluster.supervisor.stop(hurry, say=said.append, held=lambda: _holds_tasks(url))  # the pools, then the fake provider
        took = time.monotonic() - started
        answered = cluster.client.ledger.answered("stopping", ids[:8])
        assert redis.Redis.from_url(url).hlen(UNACKED) == 0
    redis.Redis.from_url(url).flushdb()
    return answered, took, said


def test_what_a_stop_waits_for_is_read_from_what_the_workers_hold(redis_url: str) -> None:
    # Given a Redis where no worker holds a task, then one where a worker holds one
    url = other_db(redis_url, 11)
    client = redis.Redis.from_url(url)
    client.flushdb()
    assert _holds_tasks(url) is False  # the stop then says the pools are only shutting down
    client.hset(UNACKED, "tag", "{}")
    assert _holds_tasks(url) is True  # and then that it waits for their calls (Ctrl-C again cuts it)
    client.flushdb()


def test_stopping_the_pools_lets_running_tasks_and_handed_calls_finish(redis_url: str, tmp_path: Path) -> None:
    # When the pools are stopped with a micro-batch's calls out, one of them 4 s slower
    answered, _, said = stop_with_calls_out(redis_url, tmp_path, hang_s=4)

    # Then the task finished and the handed call was waited for: every answer recorded (cut,
    # their calls would be made and paid for again on the next run)
    assert answered == [True] * 8
    # And the stop said what it waited for, and how to cut it short
    assert len(said) == 1 and "pool-cheap" in said[0] and "Ctrl-C again to stop now" in said[0]


def test_a_call_longer_than_ten_seconds_is_waited_for_up_to_its_tiers_longest_run(redis_url: str, tmp_path: Path) -> None:
    # When the pools are stopped with a handed call that ends 13 s later (the tier's longest
    # run is 20 s: its one deployment's timeout)
    answered, took, _ = stop_with_calls_out(redis_url, tmp_path, hang_s=12)

    # Then it was waited for, not cut and paid for again on resume
    assert answered == [True] * 8
    assert took > 10


def test_a_second_ctrl_c_cuts_the_wait_and_hands_the_running_task_back(redis_url: str, tmp_path: Path) -> None:
    # When the pools are stopped with a micro-batch whose every call ends 13 s later (nothing
    # to hand off: the task is running), and told to hurry 3 s into the stop (a second Ctrl-C)
    answered, took, _ = stop_with_calls_out(redis_url, tmp_path, hang_s=12, slow=8, hurry_after=3)

    # Then the stop ends then, nothing answered, and the task was handed back to its queue
    # (asserted by stop_with_calls_out) for the next run, not left for the visibility timeout
    assert took < 10
    assert answered == [False] * 8
