"""The marks and leases of handed-off calls (workers/stragglers.py), on a real Redis."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator

import pytest
import redis

from schemas.config import Config
from schemas.job import Job
from schemas.result import ResultLine, TurnoutInfo
from tests.conftest import other_db
from workers.app import create_app
from workers.tasks import MAX_DELIVERIES, complete_batch, dump
from workers.stragglers import CLAIMED, NOT_MINE, STILL_OUT, Stragglers, claim, lease_key, mark_key, marked, release


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(other_db(redis_url, 10))
    client.flushdb()
    yield client
    client.flushdb()


def hand_off(client: redis.Redis, token: str, custom_id: str, lease: bool = True) -> None:
    client.set(mark_key("b", custom_id), token)
    if lease:
        client.set(lease_key("b", custom_id), token, ex=15)


def test_a_guard_claims_only_its_own_lapsed_calls(client: redis.Redis) -> None:
    # Given calls handed off under token t: one still out, one whose lease lapsed, one handed off
    # again under another token, and one settled (no mark)
    hand_off(client, "t", "out")
    hand_off(client, "t", "lost", lease=False)
    hand_off(client, "u", "again")

    # Then the guard of t waits for the first, claims the second, and leaves the others
    verdicts = claim(client, "b", "t", ["out", "lost", "again", "settled"])
    assert verdicts == [STILL_OUT, CLAIMED, NOT_MINE, NOT_MINE]


def test_a_claim_holds_until_released_so_a_guard_delivered_again_claims_it_again(client: redis.Redis) -> None:
    # Given a job the guard of t claimed but has not sent on (it failed, and is delivered again)
    hand_off(client, "t", "lost", lease=False)
    assert claim(client, "b", "t", ["lost"]) == [CLAIMED]

    # Then the same guard claims it again, another guard does not, and an ordinary task would
    # run it (a claimed job is no longer a guard's to keep)
    assert claim(client, "b", "t", ["lost"]) == [CLAIMED]
    assert claim(client, "b", "u", ["lost"]) == [NOT_MINE]
    assert marked(client, "b", ["lost"]) == [False]

    # And once released, it is nobody's
    release(client, "b", "t", ["lost"])
    assert claim(client, "b", "t", ["lost"]) == [NOT_MINE]
    assert client.get(mark_key("b", "lost")) is None


def test_only_unsettled_handed_jobs_are_marked(client: redis.Redis) -> None:
    hand_off(client, "t", "out")
    assert marked(client, "b", ["out", "other"]) == [True, False]


def test_settling_a_call_clears_its_keys_unless_a_guard_claimed_it_meanwhile(client: redis.Redis) -> None:
    # Given two handed calls settled by this process: one normally, one after its lease had
    # lapsed and its guard had claimed the job
    settled: list[object] = []

    async def scenario() -> None:
        stragglers = Stragglers(client)
        loop = asyncio.get_running_loop()
        ok, late = loop.create_future(), loop.create_future()
        await stragglers.adopt("b", "t", loop.time() + 60, [("ok", ok, settled.append), ("late", late, settled.append)])
        client.delete(lease_key("b", "late"))
        assert claim(client, "b", "t", ["late"]) == [CLAIMED]
        ok.set_result("answer")
        late.set_result("late answer")
        await asyncio.sleep(0)  # the done callbacks run
        assert stragglers.out == {}

    asyncio.run(scenario())

    # Then both were settled; the normal one's keys are gone, the claimed one's claim stays
    # for its guard to finish
    assert settled == ["answer", "late answer"]
    assert client.get(mark_key("b", "ok")) is None and client.get(lease_key("b", "ok")) is None
    assert client.get(mark_key("b", "late")) == b"claimed:t"


def test_a_task_split_for_its_deliveries_leaves_out_the_jobs_a_guard_owns(redis_url: str) -> None:
    # Given a cheap micro-batch of three delivered a fourth time (its process died each time),
    # one of whose jobs was handed off (its guard owns it) and one already answered
    url = other_db(redis_url, 12)
    client = redis.Redis.from_url(url)
    client.flushdb()
    config = Config.model_validate({"tiers": [{"name": "cheap", "deployments": [{"model": "openai/x"}]}]})
    app = create_app(config, url)
    runtime = app.turnout_runtime
    cheap = config.tier("cheap")
    jobs = [Job(batch_id="b", custom_id=c, line=n, messages=[{"role": "user", "content": "hi"}]) for n, c in enumerate("xyz", 1)]
    client.set("turnout:deliveries:t1:0", MAX_DELIVERIES)
    client.set(mark_key("b", "x"), "0123456789abcdef")
    answered = [jobs[1]]
    runtime.ledger.record_ok_many("b", [(j.custom_id, ResultLine(id="r", custom_id=j.custom_id, turnout=TurnoutInfo(line=j.line)), 0.0) for j in answered])
    task = type("Task", (), {"app": app, "request": type("Request", (), {"id": "t1", "retries": 0})()})()

    # When it runs
    complete_batch(task, runtime, cheap, "b", dump(jobs))

    # Then only the job still to answer and not owned by a guard is sent on, alone
    sent = [json.loads(base64.b64decode(json.loads(m)["body"]))[0][1] for m in client.lrange(cheap.queue, 0, -1)]
    assert [[job["custom_id"] for job in piece] for piece in sent] == [["z"]]
    client.flushdb()
