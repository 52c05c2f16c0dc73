"""How a tier task waits for its micro-batch's calls (workers.tasks._gather): plain asyncio,
no Redis, no Celery."""

from __future__ import annotations

import asyncio
from typing import Any

from workers.tasks import _gather


async def answer(value: str, after: float, release: asyncio.Event | None = None) -> str:
    await asyncio.sleep(after)
    if release is not None:
        await release.wait()
    return value


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_without_hand_off_every_call_is_waited_for() -> None:
    async def scenario() -> list[Any]:
        release = asyncio.Event()
        asyncio.get_running_loop().call_later(0.8, release.set)
        calls = [answer(f"a{i}", 0.01) for i in range(3)] + [answer("slow", 0.0, release)]
        return await _gather(calls)

    assert run(scenario()) == ["a0", "a1", "a2", "slow"]


def test_calls_still_out_long_after_half_answered_are_handed_back_running() -> None:
    async def scenario() -> tuple[list[Any], bool]:
        release = asyncio.Event()
        calls = [answer(f"a{i}", 0.01) for i in range(3)] + [answer("slow", 0.0, release)]
        outcomes = await _gather(calls, hand_off_after=3.0, room=lambda: 8)
        handed = outcomes[3]
        running = isinstance(handed, asyncio.Future) and not handed.done()
        release.set()
        assert isinstance(handed, asyncio.Future)
        assert await handed == "slow", "the handed call goes on and ends with its own answer"
        return outcomes[:3], running

    answered, running = run(scenario())
    assert answered == ["a0", "a1", "a2"]
    assert running, "the slow call was handed back while still out"


def test_no_hand_off_while_fewer_than_half_have_answered() -> None:
    async def scenario() -> list[Any]:
        release = asyncio.Event()
        asyncio.get_running_loop().call_later(1.0, release.set)  # well past the 0.5 s floor
        calls = [answer("a0", 0.01)] + [answer(f"slow{i}", 0.0, release) for i in range(3)]
        return await _gather(calls, hand_off_after=3.0, room=lambda: 8)

    assert run(scenario()) == ["a0", "slow0", "slow1", "slow2"]


def test_no_hand_off_beyond_the_room_the_process_has() -> None:
    async def scenario() -> list[Any]:
        release = asyncio.Event()
        asyncio.get_running_loop().call_later(1.2, release.set)
        calls = [answer(f"a{i}", 0.01) for i in range(2)] + [answer(f"slow{i}", 0.0, release) for i in range(2)]
        return await _gather(calls, hand_off_after=3.0, room=lambda: 1)

    assert run(scenario()) == ["a0", "a1", "slow0", "slow1"]


def test_a_failed_call_is_given_as_its_exception() -> None:
    async def fails() -> str:
        raise ValueError("boom")

    outcomes = run(_gather([answer("a", 0.0), fails()], hand_off_after=3.0, room=lambda: 8))
    assert outcomes[0] == "a"
    assert isinstance(outcomes[1], ValueError)


def test_early_answers_are_reported_once_each_while_others_are_out() -> None:
    reported: list[list[int]] = []

    async def scenario() -> list[Any]:
        release = asyncio.Event()
        asyncio.get_running_loop().call_later(2.5, release.set)  # past one EARLY_RECORD_S tick
        calls = [answer("a0", 0.01), answer("a1", 0.01), answer("slow", 0.0, release)]
        return await _gather(calls, lambda ready: reported.append([i for i, _ in ready]))

    assert run(scenario()) == ["a0", "a1", "slow"]
    assert reported == [[0, 1]]
