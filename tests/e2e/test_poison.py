"""A job that kills its worker every time: bounded, then dead-lettered, and its neighbours finish."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

from tests.e2e.conftest import Cluster
from tests.e2e.test_crash import pool, pool_children, run_while
from workers.dlq import DeadLetters
from workers.tasks import MAX_DELIVERIES


def test_a_job_that_kills_its_worker_every_time_is_dead_lettered_and_its_neighbours_finish(fresh_fake: Cluster) -> None:
    # Given one poison prompt in a micro-batch of eight: the provider hangs on it, and each
    # time it does, the cheap pool's process is killed -9 (as a segfault or OOM kill would)
    fresh_fake.fake(hang_on=["POISON"], hang_s=120)
    ids = [f"p{i}" for i in range(8)]
    lines = [{"custom_id": i, "prompt": f"What is {i}?", "model": "tier:cheap"} for i in ids]
    lines[3]["prompt"] = "This POISON prompt kills its worker"
    kills: list[int] = []
    stop = threading.Event()

    def kill_on_every_hang() -> None:
        seen = 0
        while not stop.is_set():
            hangs = fresh_fake.fake_stats()["hangs"]
            if hangs > seen:
                seen = hangs
                for child in pool_children(pool(fresh_fake, "cheap").process.pid):
                    os.kill(child, signal.SIGKILL)
                kills.append(hangs)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_on_every_hang, daemon=True)
    try:
        result = run_while(fresh_fake, lines, "poison", killer.start)
    finally:
        stop.set()
        killer.join(timeout=5)
        fresh_fake.fake(hang_on=[])

    # Then the poison job ends as one error line (worker_lost) and in the cheap DLQ ...
    assert [line["custom_id"] for line in result["err"]] == ["p3"]
    assert result["err"][0]["error"]["code"] == "worker_lost"
    entries = list(DeadLetters(fresh_fake.client.ledger.redis).entries(["cheap"], "poison"))
    assert [e.job.custom_id for e in entries] == ["p3"]
    # ... its seven neighbours are answered exactly once ...
    assert Counter(line["custom_id"] for line in result["out"]) == Counter(i for i in ids if i != "p3")
    # ... and the loop was bounded: the micro-batch's deliveries, then the single job's, no more
    assert len(kills) <= 2 * MAX_DELIVERIES
    stats = fresh_fake.fake_stats()
    assert stats["hangs"] <= 2 * MAX_DELIVERIES
    # and the neighbours were paid for at most once per delivery of their micro-batch, plus once alone
    assert stats["by_status"].get("200", 0) <= 7 * (MAX_DELIVERIES + 1)
