"""Workers die mid-batch (kill -9): nothing is lost, nothing is doubled."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from typing import Any

from tests.e2e.conftest import Cluster


def pool(cluster: Cluster, name: str) -> Any:
    return next(child for child in cluster.supervisor.children if child.name == f"pool-{name}")


def pool_children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


def run_while(cluster: Cluster, lines: list[dict[str, Any]], batch: str, action: Any) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(cluster.run(lines, batch, timeout=180)))
    runner.start()
    action()
    deadline = time.monotonic() + 180
    while runner.is_alive() and time.monotonic() < deadline:
        cluster.supervisor.check()  # what `turnout run` does: restart a pool that died
        runner.join(timeout=0.5)
    assert not runner.is_alive(), "the batch did not complete"
    return result


def assert_ledger_whole(cluster: Cluster, result: dict[str, list[dict[str, Any]]], ids: list[str], batch: str) -> None:
    outputs = Counter(line["custom_id"] for line in result["out"])
    assert result["err"] == []
    assert outputs == Counter(ids), "every custom_id exactly once"
    status = cluster.client.status(batch)
    assert abs(status.cost_usd - sum(line["turnout"]["cost_usd"] for line in result["out"])) < 1e-9, "cost counted once"


def test_killing_a_pool_process_mid_batch_loses_and_doubles_nothing(fresh_fake: Cluster) -> None:
    # Given a slow provider and a batch on the cheap tier
    fresh_fake.fake(latency_ms=400)
    ids = [f"k{i}" for i in range(48)]
    lines = [{"custom_id": i, "prompt": f"What is {i}?", "model": "tier:cheap"} for i in ids]

    # When the cheap pool's worker process is killed -9 while it holds a micro-batch
    def kill_pool_process() -> None:
        fresh_fake.wait_for_done("kill-child", 1)
        main = pool(fresh_fake, "cheap").process.pid
        for child in pool_children(main):
            os.kill(child, signal.SIGKILL)

    result = run_while(fresh_fake, lines, "kill-child", kill_pool_process)

    # Then the batch completes with every job once and its cost counted once
    assert_ledger_whole(fresh_fake, result, ids, "kill-child")


def test_killing_a_whole_worker_then_starting_a_new_one_loses_and_doubles_nothing(fresh_fake: Cluster) -> None:
    # Given a slow provider and a batch on the cheap tier
    fresh_fake.fake(latency_ms=400)
    ids = [f"w{i}" for i in range(48)]
    lines = [{"custom_id": i, "prompt": f"What is {i}?", "model": "tier:cheap"} for i in ids]

    # When the whole cheap worker (main process and pool) is killed -9 mid-batch, and a new one starts
    def kill_worker() -> None:
        fresh_fake.wait_for_done("kill-worker", 1)
        os.killpg(pool(fresh_fake, "cheap").process.pid, signal.SIGKILL)

    result = run_while(fresh_fake, lines, "kill-worker", kill_worker)

    # Then the tasks it held are delivered again and the ledger is whole, nothing doubled
    assert_ledger_whole(fresh_fake, result, ids, "kill-worker")
    assert pool(fresh_fake, "cheap").restarts >= 1


def test_answers_waiting_on_a_slow_call_of_their_micro_batch_are_recorded_before_it_ends(fresh_fake: Cluster) -> None:
    # Given a micro-batch of eight on the cheap tier, one of whose calls the provider holds 4.5 s
    # (under the deployment's 5 s timeout: it is answered in the end)
    fresh_fake.fake(hang_on=["SLOW"], hang_s=4.5)
    ids = [f"s{i}" for i in range(8)]
    lines = [{"custom_id": i, "prompt": f"What is {i}?", "model": "tier:cheap"} for i in ids]
    lines[5]["prompt"] = "A SLOW one"
    seen: list[tuple[int, bool]] = []  # (lines done, the slow one among them), as they change

    def watch() -> None:
        ledger = fresh_fake.client.ledger
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = ledger.status("slow")
            done = status.done if status is not None else 0
            if not seen or seen[-1][0] != done:
                seen.append((done, ledger.answered("slow", ["s5"])[0]))
            if done == 8:
                return
            time.sleep(0.02)

    try:
        watcher = threading.Thread(target=watch, daemon=True)
        result = run_while(fresh_fake, lines, "slow", watcher.start)
        watcher.join(timeout=10)
    finally:
        fresh_fake.fake(hang_on=[])

    # Then the seven fast answers were recorded while the slow call was still out (a worker dying
    # then would have lost only that call), and the slow one after, each once
    assert (7, False) in seen, seen
    assert seen[-1] == (8, True)
    assert Counter(line["custom_id"] for line in result["out"]) == Counter(ids)
    assert all(line["turnout"]["attempts"] == 1 for line in result["out"])
