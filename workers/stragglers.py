"""Calls a tier task stopped waiting for: they finish on the process's event loop while the
process runs its next task.

A micro-batch's task waits for its slowest call, so one long answer holds the rest of its
process's slots idle: with 5% of calls 3 s slower than the others, a pool ran at a sixth of
the rate the same number of calls in flight allows. So once half of a route tier's
micro-batch has answered and the calls still out have taken ``hand_off_after`` times as long,
the task records what it has and hands those calls to this process's loop, which settles
each when it ends as the task would have (answer recorded, failure retried or
dead-lettered), and the process takes its next task.

Nothing is lost if the process dies meanwhile. Each handed call has a lease in Redis, kept
alive every few seconds while the call is out and marked settled when it ends; before the
task is acknowledged it sends a guard, a task for the same jobs delivered after a countdown.
The guard skips answered and settled jobs, waits again for leased ones, and runs the rest:
their process died with the call out, so that attempt counts as spent.
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
#: How long a settled call's mark is kept for its guard to read.
SETTLED_S = 86_400
#: The guard's countdown: by then a dead process's leases have lapsed.
GUARD_S = LEASE_S + RENEW_S
#: A task never hands off sooner than this after its calls went out: below it a guard costs
#: more than the wait it saves.
MIN_WAIT_S = 0.5

OUT = b"out"
SETTLED = b"settled"

Settle = Callable[[object], None]


def lease_key(batch_id: str, custom_id: str) -> str:
    return f"turnout:straggler:{batch_id}:{custom_id}"


class Stragglers:
    """This process's handed-off calls and their leases. Every method but ``drain`` runs on
    the process's event loop."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self.redis = redis_client
        self.out: dict[str, asyncio.Future[Any]] = {}
        self._renewing: asyncio.Task[None] | None = None

    def room(self, limit: int) -> int:
        """How many more calls this process may hand off, holding at most ``limit`` out."""
        return max(0, limit - len(self.out))

    async def adopt(self, batch_id: str, calls: list[tuple[str, asyncio.Future[Any], Settle]]) -> None:
        """Lease each call and settle it when it ends: ``settle`` gets its result or exception."""
        pipe = self.redis.pipeline(transaction=False)
        for custom_id, _, _ in calls:
            pipe.set(lease_key(batch_id, custom_id), OUT, ex=LEASE_S)
        pipe.execute()
        for custom_id, future, settle in calls:
            key = lease_key(batch_id, custom_id)
            self.out[key] = future
            future.add_done_callback(partial(self._settled, key, settle))
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.ensure_future(self._renew())

    def _settled(self, key: str, settle: Settle, future: asyncio.Future[Any]) -> None:
        self.out.pop(key, None)
        if future.cancelled():  # the loop is closing: its lease lapses and the guard runs the job
            return
        outcome: object = future.exception() or future.result()
        try:
            settle(outcome)
        except Exception:  # its lease lapses and the guard runs the job again
            log.exception("a handed-off call ended but could not be settled; its guard will run it again")
            return
        try:
            self.redis.set(key, SETTLED, ex=SETTLED_S)
        except redis.RedisError:  # the guard finds it answered, or dead-lettered, or runs it once more
            log.exception("could not mark a handed-off call settled")

    async def _renew(self) -> None:
        while self.out:
            await asyncio.sleep(RENEW_S)
            if not self.out:
                return
            pipe = self.redis.pipeline(transaction=False)
            for key in self.out:
                pipe.set(key, OUT, ex=LEASE_S)
            try:
                pipe.execute()
            except redis.RedisError:
                log.warning("could not renew %d leases of handed-off calls; trying again in %g s", len(self.out), RENEW_S)

    def drain(self, timeout: float) -> int:
        """Wait (from another thread) up to ``timeout`` seconds for the calls still out to end;
        returns how many are left. A process about to exit calls it, so its calls are not cut."""
        deadline = time.monotonic() + timeout
        while self.out and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(self.out)


def states(redis_client: redis.Redis, batch_id: str, custom_ids: list[str]) -> list[bytes | None]:
    """Each job's lease: OUT (a process has its call out), SETTLED, or None (none, or lapsed)."""
    if not custom_ids:
        return []
    values: list[bytes | None] = redis_client.mget([lease_key(batch_id, custom_id) for custom_id in custom_ids])
    return values


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
