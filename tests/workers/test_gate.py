"""The gate's probation after a cooldown (a circuit breaker's half-open state), on a real
Redis: one call at a time until one is answered; a failed one cools the deployment again."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import workers.gate as gate_module
from tests.conftest import other_db
from workers.gate import PROBE_WAIT_S, Gate


def on_gate(redis_url: str, body: Callable[[Gate], Awaitable[None]]) -> None:
    async def run() -> None:
        gate = Gate(other_db(redis_url, 12))
        try:
            await gate.redis.flushdb()
            await body(gate)
        finally:
            await gate.redis.flushdb()
            await gate.redis.aclose()

    asyncio.run(run())


async def cool_down(gate: Gate, name: str, cooldown_s: float) -> None:
    """Fail the deployment until it cools down, then wait the cooldown out."""
    for _ in range(4):
        assert (await gate.admit(name, None, None, 10, probe_s=5)).wait == 0
        await gate.failed(name, None, cooldown_s)
    assert (await gate.admit(name, None, None, 10, probe_s=5)).wait > 0
    await asyncio.sleep(cooldown_s + 0.05)


def test_after_a_cooldown_one_call_at_a_time_probes_until_one_is_answered(redis_url: str) -> None:
    async def body(gate: Gate) -> None:
        # Given a deployment whose cooldown has just ended
        await cool_down(gate, "d", 0.2)

        # Then the first call is a probe, and the next ones pass it over while it is out,
        # looking again within PROBE_WAIT_S (not the probe's whole lease, its call's timeout)
        probe = await gate.admit("d", None, None, 10, probe_s=60)
        assert probe.wait == 0 and probe.probe
        held = await gate.admit("d", None, None, 10, probe_s=60)
        assert 0 < held.wait <= PROBE_WAIT_S and not held.probe
        # And once the probe is answered, calls are admitted freely again, none a probe
        await gate.answered("d")
        assert [(a.wait, a.probe) for a in [await gate.admit("d", None, None, 10, probe_s=5) for _ in range(3)]] == [(0, False)] * 3

    on_gate(redis_url, body)


def test_a_failed_probe_cools_the_deployment_again_and_a_lost_one_lapses(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate_module, "PROBE_MARGIN_S", 0.0)

    async def body(gate: Gate) -> None:
        # Given a deployment on probation whose probe failed
        await cool_down(gate, "d", 0.2)
        assert (await gate.admit("d", None, None, 10, probe_s=5)).probe
        await gate.failed("d", None, 0.2, probe=True)

        # Then it cools down again at once (one failure, not more than 3), then probes again
        assert (await gate.admit("d", None, None, 10, probe_s=5)).wait > 0
        await asyncio.sleep(0.25)
        lost = await gate.admit("d", None, None, 0, probe_s=0.2)
        assert lost.wait == 0 and lost.probe
        # And a probe nobody reports on (its process died) lapses after the time it may take
        assert (await gate.admit("d", None, None, 10, probe_s=0.2)).wait > 0
        await asyncio.sleep(0.3)
        assert (await gate.admit("d", None, None, 10, probe_s=0.2)).probe

    on_gate(redis_url, body)


def test_a_retry_after_cools_a_deployment_without_putting_it_on_probation(redis_url: str) -> None:
    async def body(gate: Gate) -> None:
        await gate.failed("d", 0.2, 0.2)  # a 429 saying: again in 0.2 s
        assert (await gate.admit("d", None, None, 10, probe_s=5)).wait > 0
        await asyncio.sleep(0.25)
        admitted = [await gate.admit("d", None, None, 10, probe_s=5) for _ in range(3)]
        assert [(a.wait, a.probe) for a in admitted] == [(0, False)] * 3

    on_gate(redis_url, body)


def test_a_deployment_that_never_cooled_down_takes_calls_freely(redis_url: str) -> None:
    async def body(gate: Gate) -> None:
        admitted = [await gate.admit("fresh", None, None, 10, probe_s=5) for _ in range(5)]
        assert [(a.wait, a.probe) for a in admitted] == [(0, False)] * 5

    on_gate(redis_url, body)


def test_health_says_whether_a_deployment_cools_down_or_is_on_probation_and_counts_its_minute(redis_url: str) -> None:
    import redis

    from workers.gate import health

    import time

    sync = redis.Redis.from_url(other_db(redis_url, 12))
    seen: list[dict[str, object]] = []
    if time.time() % 60 > 55:  # the counts are this minute's: do not start at its end
        time.sleep(60.1 - time.time() % 60)

    async def body(gate: Gate) -> None:
        seen.append(health(sync, "d"))
        await cool_down(gate, "d", 0.3)  # 4 calls, 4 failures, one refused while cooling
        seen.append(health(sync, "d"))
        assert (await gate.admit("d", None, None, 10, probe_s=5)).probe
        seen.append(health(sync, "d"))
        await gate.failed("d", 2.0, 0.3, probe=True, what="rate_limit_error: slow down")  # a 429 with Retry-After: 2 s
        seen.append(health(sync, "d"))

    on_gate(redis_url, body)
    assert [s["state"] for s in seen] == ["ok", "on probation", "on probation, probe out", "cooling down 2s"]
    # And it keeps the last failure, with its time, for status to show why
    assert seen[0]["last_failure"] is None
    assert re.fullmatch(r"\d\d:\d\d:\d\dZ rate_limit_error: slow down", str(seen[-1]["last_failure"]))
    assert [(s["calls_this_minute"], s["failures_this_minute"]) for s in seen] == [(0, 0), (4, 4), (5, 4), (5, 5)]


async def fail_four_times(gate: Gate, cooldown_s: float, bad_key: Any) -> None:
    """Deployment "d" refuses four calls in a row for good (``bad_key``), "e" fails them the
    passing way: each cools down."""
    for _ in range(4):
        await gate.admit("d", None, None, 10, probe_s=5)
        await gate.failed("d", None, cooldown_s, for_good=bad_key)
        await gate.admit("e", None, None, 10, probe_s=5)
        await gate.failed("e", None, cooldown_s)


def test_a_cooldown_for_a_failure_for_good_says_what_failed_to_those_passing_it_over(redis_url: str) -> None:
    from workers.gate import FailedForGood, health

    bad_key = FailedForGood("authentication_error", "Incorrect API key provided", 401)

    async def body(gate: Gate) -> None:
        # Given a deployment that refused the key on four calls in a row, and another whose
        # failures were the passing kind
        await fail_four_times(gate, 5.0, bad_key)
        # Then a caller passed over the first learns why: its call would fail for good too
        # (so a job every deployment refused ends at once, not after waiting out cooldowns)
        refused = await gate.admit("d", None, None, 10, probe_s=5)
        assert refused.wait > 0 and refused.broken == bad_key
        # And one passed over the second only waits
        waiting = await gate.admit("e", None, None, 10, probe_s=5)
        assert waiting.wait > 0 and waiting.broken is None
        # And status shows the reason beside the cooldown
        import redis as sync_redis

        client = sync_redis.Redis.from_url(other_db(redis_url, 12))
        assert health(client, "d")["state"].endswith("(authentication_error)")
        assert health(client, "e")["state"].startswith("cooling down") and "(" not in health(client, "e")["state"]

    on_gate(redis_url, body)


def test_while_a_probe_tests_a_failure_for_good_the_others_pass_over_it_as_failing_so(redis_url: str) -> None:
    from workers.gate import FailedForGood

    bad_key = FailedForGood("authentication_error", "Incorrect API key provided", 401)

    async def body(gate: Gate) -> None:
        # Given a deployment that cooled down for refusing the key, and another for passing
        # failures, both with their cooldowns over and a probe out on each
        await fail_four_times(gate, 0.2, bad_key)
        await asyncio.sleep(0.25)
        assert (await gate.admit("d", None, None, 10, probe_s=5)).probe
        assert (await gate.admit("e", None, None, 10, probe_s=5)).probe

        # Then a caller passing the first over learns its call would fail as the key did (it
        # is not kept waiting for the probe, a wait that, probe after probe, never ends)
        held = await gate.admit("d", None, None, 10, probe_s=5)
        assert held.wait > 0 and held.broken == bad_key and not held.cooling and not held.probe
        # And one passing the second over only waits for its probe
        waiting = await gate.admit("e", None, None, 10, probe_s=5)
        assert waiting.wait > 0 and waiting.broken is None and not waiting.cooling
        # And once the first's probe is answered (the key was mended), it takes calls freely
        await gate.answered("d")
        assert (await gate.admit("d", None, None, 10, probe_s=5)) == gate_module.Admission(0.0)

    on_gate(redis_url, body)
