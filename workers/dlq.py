"""Dead-letter queues: per tier, the jobs that failed for good, with every attempt's error.

A record holds the whole job (no secrets ever enter a job) so that ``turnout dlq replay``
can put it back on its tier queue unchanged.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import redis
from pydantic import BaseModel, Field

from schemas.config import Config
from schemas.job import Job
from schemas.result import json_text
from workers.ledger import PREFIX

if TYPE_CHECKING:
    from celery import Celery

#: The code of a line left uncalled because its batch had spent its cap (``--max-cost``).
BUDGET_SPENT = "budget_spent"


class DeadLetter(BaseModel):
    """One job that will not be retried automatically."""

    id: str
    tier: str
    job: Job
    code: str
    reason: str
    errors: list[str] = Field(default_factory=list)
    first_failed_at: float
    last_failed_at: float


# KEYS: dlq   ARGV: letter id, its last_failed_at as read   1 when removed
_REMOVE_IF = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
if cjson.decode(raw)['last_failed_at'] ~= tonumber(ARGV[2]) then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""


#: The time in a job's error entry: "attempt 2 on cheap (2026-12-07T18:07:55Z): …" (tasks._now).
_ERROR_TIME = re.compile(r"\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\)")


def first_failure(errors: list[str], default: float) -> float:
    """When the job first failed, from its first error entry's time (``default`` without one)."""
    found = _ERROR_TIME.search(errors[0]) if errors else None
    if not found:
        return default
    return dt.datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc).timestamp()


def dlq_key(tier: str) -> str:
    return f"{PREFIX}:dlq:{tier}"


class DeadLetters:
    """The dead-letter queues in Redis, one hash per tier (id → record)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._remove_if = client.register_script(_REMOVE_IF)

    def add(self, tier: str, job: Job, code: str, reason: str) -> DeadLetter:
        now = time.time()
        letter = DeadLetter(
            id=f"{job.batch_id}:{job.custom_id}",
            tier=tier,
            job=job,
            code=code,
            reason=reason,
            errors=job.errors,
            first_failed_at=first_failure(job.errors, now),
            last_failed_at=now,
        )
        self.redis.hset(dlq_key(tier), letter.id, json_text(letter))
        return letter

    def entries(self, tiers: list[str], batch_id: str | None = None) -> Iterator[DeadLetter]:
        for tier in tiers:
            for _, raw in self.redis.hscan_iter(dlq_key(tier), count=500):
                letter = DeadLetter.model_validate_json(raw)
                if batch_id is None or letter.job.batch_id == batch_id:
                    yield letter

    def get(self, tiers: list[str], letter_id: str) -> DeadLetter | None:
        for tier in tiers:
            raw = self.redis.hget(dlq_key(tier), letter_id)
            if raw is not None:
                return DeadLetter.model_validate_json(raw)
        return None

    def remove(self, letter: DeadLetter) -> None:
        self.redis.hdel(dlq_key(letter.tier), letter.id)

    def remove_unchanged(self, letter: DeadLetter) -> bool:
        """Remove the letter unless its job failed again since it was read (a replayed job
        that failed fast has a new letter under the same id, which must stay)."""
        return bool(self._remove_if(keys=[dlq_key(letter.tier)], args=[letter.id, repr(letter.last_failed_at)]))

    def depth(self, tier: str) -> int:
        return int(self.redis.hlen(dlq_key(tier)))


def replay(
    app: Celery, config: Config, letters: DeadLetters, tiers: list[str], batch_id: str | None, ids: list[str] | None,
    batches: set[str] | None = None,
) -> int:
    """Send dead letters back to their tier queues with fresh attempts; returns how many, and
    adds their batches to ``batches``.

    Each job's error line is taken back first, so its batch counts the line as not done (and
    `turnout run`, `collect --wait` and `status` wait for it) until the job records a line
    again, an answer or a new error. Idempotent: the tier task skips a job that already has
    an output line.
    """
    from workers.ledger import Ledger
    from workers.tasks import send_tier

    chosen = [letters.get(tiers, i) for i in ids] if ids else list(letters.entries(tiers, batch_id))
    groups: dict[tuple[str, str], list[DeadLetter]] = {}
    for letter in chosen:
        if letter is not None:
            groups.setdefault((letter.tier, letter.job.batch_id), []).append(letter)
    ledger = Ledger(letters.redis)
    if batches is not None:
        batches.update(batch for _, batch in groups)
    for (tier, batch), group in groups.items():  # in the tier's micro-batches, as the classifier sends them
        for letter in group:
            ledger.reopen(batch, letter.job.custom_id, tier)  # before sending: a quick new error must stay
        send_tier(app, config.tier(tier), batch, [letter.job.model_copy(update={"attempts": 0, "waits": 0}) for letter in group])
        for letter in group:
            letters.remove_unchanged(letter)
    return sum(map(len, groups.values()))
