"""A task that raises goes back on its queue (workers.tasks.requeued_on_error): Celery alone
rejects it without requeue, which on Redis deletes it with its jobs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery.exceptions import Reject, Retry

from tests.conftest import other_db
from workers import tasks
from workers.tasks import requeued_on_error


class FakeTask:
    name = "turnout.complete.cheap"

    def __init__(self, task_id: str) -> None:
        self.request = type("Request", (), {"id": task_id, "retries": 0})()


class FakeRuntime:
    def __init__(self, client: redis.Redis) -> None:
        self.ledger = type("Ledger", (), {"redis": client})()


@pytest.fixture
def runtime(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(tasks, "REQUEUE_PAUSE_S", 0.0)
    client = redis.Redis.from_url(other_db(redis_url, 10))
    client.flushdb()
    yield FakeRuntime(client)
    client.flushdb()


def test_an_exception_becomes_a_requeue(runtime: Any) -> None:
    with pytest.raises(Reject) as raised:
        with requeued_on_error(FakeTask("t1"), runtime):
            raise ValueError("a bug of ours")
    assert raised.value.requeue is True


def test_a_retry_that_could_not_be_sent_is_requeued_not_dropped(runtime: Any) -> None:
    # Celery's Task.retry raises Reject(requeue=False) when it cannot publish the retry
    with pytest.raises(Reject) as raised:
        with requeued_on_error(FakeTask("t1"), runtime):
            raise Reject("publish failed", requeue=False)
    assert raised.value.requeue is True


def test_a_retry_passes_through() -> None:
    with pytest.raises(Retry):
        with requeued_on_error(FakeTask("t1"), None):  # type: ignore[arg-type]
            raise Retry()


def test_a_failure_of_redis_does_not_count_as_a_delivery(runtime: Any) -> None:
    # Given a task whose delivery was counted, then which failed on Redis
    key = "turnout:deliveries:t2:0"
    runtime.ledger.redis.set(key, 2)
    with pytest.raises(Reject):
        with requeued_on_error(FakeTask("t2"), runtime):
            raise redis.ResponseError("MISCONF Errors writing to the AOF file")
    assert runtime.ledger.redis.get(key) == b"1"

    # But a bug of ours does
    with pytest.raises(Reject):
        with requeued_on_error(FakeTask("t2"), runtime):
            raise KeyError("oops")
    assert runtime.ledger.redis.get(key) == b"1"
