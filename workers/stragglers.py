"""Calls a tier task stopped waiting for: they finish on the process's event loop while the
process runs its next task.

A micro-batch's task waits for its slowest call, so one long answer holds the rest of its
process's slots idle: with 5% of calls 3 s slower than the others, a pool ran at a third of
the rate the same number of calls in flight allows (bench/throughput.py --slow-share). So once half of a route tier's
micro-batch has answered and the calls still out have taken ``hand_off_after`` times as long,
the task records what it has and hands those calls to this process's loop, which settles
each when it ends as the task would have (answer recorded, failure retried or
dead-lettered), and the process takes its next task.

Nothing is lost if the process dies meanwhile. Before the task is acknowledged it sends a
guard, a task for the same jobs delivered after a countdown on the tier's guard queue,
carrying a token; then each handed call gets two keys in Redis: a mark naming the token (kept
a day) and a lease (renewed every few seconds while the call is out, lapsing when the process
dies). Settling a call deletes both. The guard skips a job whose mark is gone or names another
token (settled, or handed off again), waits again while the lease lives, and otherwise claims
the job (atomically; the claim holds until the job is sent on) and sends it on as an ordinary
job: its process died with the call out, so that attempt counts as spent. A task delivered
again skips a job marked by a guard: so a task whose process died after handing off but
before it was acknowledged does not run the call a second time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import redis

log = logging.getLogger("turnout.stragglers")

#: A lease not renewed for this long means its process died with the call out.
LEASE_S = 15
#: How often a process renews the leases of its calls still out.
RENEW_S = 3.0
#: How long a handed call's mark is kept for its guard to read.
MARK_S = 86_400
#: The guard's countdown: by then a dead process's leases have lapsed.
GUARD_S = LEASE_S + RENEW_S
#: A task never hands off sooner than this after its calls went out: below it a guard costs
#: more than the wait it saves.
MIN_WAIT_S = 0.5

#: A guard's verdict on one of its jobs.
NOT_MINE, CLAIMED, STILL_OUT = 0, 1, 2
#: The mark of a job a guard claimed, until it has sent the job on (so a guard delivered again
#: claims it again rather than skipping it).
CLAIMED_PREFIX = "claimed:"

# KEYS: the mark, the lease. ARGV: the guard's token, its claimed mark, the mark's lifetime.
_CLAIM = """
local mark = redis.call('GET', KEYS[1])
if mark == ARGV[2] then return 1 end
if mark ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""

# KEYS: the mark, the lease. ARGV: the mark's expected value. Deletes both if the mark holds it.
_CLEAR = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

# KEYS: the mark, the lease. ARGV: the token, the lease's lifetime. Renews while the mark is the token's.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return 1
"""

Settle = Callable[[object], None]


def mark_key(batch_id: str, custom_id: str) -> str:
    return f"turnout:handed:{batch_id}:{custom_id}"


def lease_key(batch_id: str, custom_id: str) -> str:
    return f"turnout:lease:{batch_id}:{custom_id}"


class Stragglers:
    """This process's handed-off calls and their leases. Every method but ``drain`` runs on
    the process's event loop."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self.redis = redis_client
        #: (batch, custom_id, token) of each call out or being settled → when to stop renewing its lease
        self.out: dict[tuple[str, str, str], float] = {}
        self._renewing: asyncio.Task[None] | None = None
        self._clear = redis_client.register_script(_CLEAR)
        self._renew_one = redis_client.register_script(_RENEW)

    def room(self, limit: int) -> int:
        """How many more calls this process may hand off, holding at most ``limit`` out."""
        return max(0, limit - len(self.out))

    async def adopt(self, batch_id: str, token: str, deadline: float,
                    calls: list[tuple[str, asyncio.Future[Any], Settle]]) -> None:
        """Mark and lease each call, and settle it when it ends: ``settle`` gets its result or
        exception. Past ``deadline`` (monotonic; a call's every timeout run out) a lease is no
        longer renewed: a call stuck beyond its timeouts is left to the guard."""
        pipe = self.redis.pipeline(transaction=False)
        for custom_id, _, _ in calls:
            pipe.set(mark_key(batch_id, custom_id), token, ex=MARK_S)
            pipe.set(lease_key(batch_id, custom_id), token, ex=LEASE_S)
        pipe.execute()
        for custom_id, future, settle in calls:
            self.out[(batch_id, custom_id, token)] = deadline
            future.add_done_callback(partial(self._settled, batch_id, custom_id, token, settle))
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.ensure_future(self._renew())

    def _settled(self, batch_id: str, custom_id: str, token: str, settle: Settle, future: asyncio.Future[Any]) -> None:
        try:
            if future.cancelled():  # the loop is closing: its lease lapses and the guard runs the job
                return
            outcome: object = future.exception() or future.result()
            try:
                settle(outcome)
            except Exception:  # its lease lapses and the guard runs the job again
                log.exception("a handed-off call ended but could not be settled; its guard will run it again")
                return
            try:  # unless a guard has claimed the job meanwhile (this call outlived its lease)
                self._clear(keys=[mark_key(batch_id, custom_id), lease_key(batch_id, custom_id)], args=[token])
            except redis.RedisError:  # the guard finds it answered, or runs it once more
                log.exception("could not clear a settled call's mark")
        finally:  # only now: drain() waits for settling too
            self.out.pop((batch_id, custom_id, token), None)

    async def _renew(self) -> None:
        while self.out:
            await asyncio.sleep(RENEW_S)
            now = time.monotonic()
            live = [call for call, deadline in self.out.items() if deadline > now]
            if not live:
                continue
            pipe = self.redis.pipeline(transaction=False)
            for batch_id, custom_id, token in live:
                self._renew_one(keys=[mark_key(batch_id, custom_id), lease_key(batch_id, custom_id)], args=[token, LEASE_S], client=pipe)
            try:
                pipe.execute()
            except redis.RedisError:
                log.warning("could not renew %d leases of handed-off calls; trying again in %g s", len(live), RENEW_S)

    def drain(self, timeout: float) -> int:
        """Wait (from another thread) up to ``timeout`` seconds for the calls still out to end
        and be settled; returns how many are left. A process about to exit calls it, so its
        calls are not cut."""
        deadline = time.monotonic() + timeout
        while self.out and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(self.out)


def marked(redis_client: redis.Redis, batch_id: str, custom_ids: list[str]) -> list[bool]:
    """Which of these jobs a guard owns: their call was handed off and is not settled, and no
    guard has sent them on."""
    if not custom_ids:
        return []
    values: list[bytes | None] = redis_client.mget([mark_key(batch_id, custom_id) for custom_id in custom_ids])
    return [v is not None and not v.startswith(CLAIMED_PREFIX.encode()) for v in values]


def claim(redis_client: redis.Redis, batch_id: str, token: str, custom_ids: list[str]) -> list[int]:
    """A guard's verdict on each job: NOT_MINE (settled, or handed off again: another guard's),
    STILL_OUT (its process still has the call out), or CLAIMED (the lease lapsed: the guard
    sends it on, then calls ``release``)."""
    if not custom_ids:
        return []
    script = redis_client.register_script(_CLAIM)
    pipe = redis_client.pipeline(transaction=False)
    for custom_id in custom_ids:
        script(keys=[mark_key(batch_id, custom_id), lease_key(batch_id, custom_id)], args=[token, CLAIMED_PREFIX + token, MARK_S], client=pipe)
    return [int(v) for v in pipe.execute()]


def release(redis_client: redis.Redis, batch_id: str, token: str, custom_ids: list[str]) -> None:
    """Drop the marks of jobs a guard claimed and has sent on (or dead-lettered)."""
    if not custom_ids:
        return
    script = redis_client.register_script(_CLEAR)
    pipe = redis_client.pipeline(transaction=False)
    for custom_id in custom_ids:
        script(keys=[mark_key(batch_id, custom_id), lease_key(batch_id, custom_id)], args=[CLAIMED_PREFIX + token], client=pipe)
    pipe.execute()


_stragglers: Stragglers | None = None
_pid = 0


def process_stragglers(redis_client: redis.Redis) -> Stragglers:
    """This process's Stragglers, made after fork."""
    global _stragglers, _pid
    if _stragglers is None or _pid != os.getpid():
        _stragglers, _pid = Stragglers(redis_client), os.getpid()
    return _stragglers


def current_stragglers() -> Stragglers | None:
    """This process's Stragglers if it has made them."""
    return _stragglers if _pid == os.getpid() else None
