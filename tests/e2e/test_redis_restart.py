"""The embedded Redis (append-only) restarts mid-batch: everyone reconnects, the ledger is whole."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CONFIG, running_cluster
from workers.broker import EmbeddedRedis


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "state")
    server.start()
    yield server
    server.stop()


def test_a_redis_restart_mid_batch_loses_nothing(own_redis: EmbeddedRedis, tmp_path: Path) -> None:
    with running_cluster(own_redis.url, tmp_path / "cluster", CONFIG) as cluster:
        # Given a batch running against a slow provider
        cluster.fake(latency_ms=200)
        ids = [f"r{i}" for i in range(60)]
        result: dict[str, Any] = {}
        runner = threading.Thread(target=lambda: result.update(cluster.run(_lines(ids), "restart", timeout=180)))
        runner.start()
        cluster.wait_for_done("restart", 5)

        # When Redis stops and starts again on the same append-only file
        own_redis.stop()
        time.sleep(2)
        own_redis.start()
        runner.join(timeout=180)

        # Then the batch completes with every job exactly once
        assert not runner.is_alive()
        assert result["err"] == []
        assert Counter(line["custom_id"] for line in result["out"]) == Counter(ids)


def _lines(ids: list[str]) -> list[dict[str, Any]]:
    return [{"custom_id": i, "prompt": f"What is {i}?", "model": "tier:cheap"} for i in ids]
