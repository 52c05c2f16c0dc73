"""Repairing a batch that stopped short: the one loss Redis itself can cause.

Redis's BRPOP hands a message to a worker before kombu records it as unacknowledged, so a
worker killed in that instant takes the message with it: the batch is sealed, incomplete,
and nothing is queued or in flight. Whoever waits for the batch (`turnout run`, or
`turnout collect --wait` on the machine that submitted it) watches for that and, after
STALL_S, sends the missing lines again from the input file (idempotent, like every step).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.result import BatchStatus
from workers.producer import Producer, file_lines

#: How long a sealed, incomplete batch may sit with nothing queued or in flight before the
#: lines it is missing are sent again (longer than a worker's sweep for timed-out tasks).
STALL_S = float(os.environ.get("TURNOUT_STALL_S", "30"))


@dataclass
class StallWatch:
    """Call ``check`` with each fresh status while waiting for ``batch_id``."""

    client: Any
    batch_id: str
    input_path: Path | None
    say: Callable[[str], None]
    since: float | None = None  # when the batch last made progress (or was first seen stalled)
    done_at_since: int = 0
    warned: bool = field(default=False, repr=False)
    producer: Producer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.producer = Producer(self.client.app, self.client.config, self.client.ledger)

    def check(self, status: BatchStatus | None) -> int:
        """Lines sent again (0 until the batch has made no progress for STALL_S with none of
        its tasks queued or in flight; other batches' tasks do not hold it back)."""
        if status is None or not status.sealed or status.complete:
            self.since = None
            return 0
        now = time.monotonic()
        if self.since is None or status.done != self.done_at_since:
            self.since, self.done_at_since = now, status.done
            return 0
        if now - self.since < STALL_S:
            return 0
        self.since = None
        # a live worker restores these itself, by the cluster's visibility timeout (this client's
        # config may hold another): only when none answers, as with every pool scaled to zero
        restored = 0 if self.client.app.control.ping(timeout=1.0) else self.producer.restore_lost_deliveries()
        if restored:
            self.say(f"{restored} tasks held by workers that are gone were put back on their queues")
        if restored or self.producer.batch_pending(self.batch_id):
            return 0
        # one waiter repairs: `turnout run` and a `collect --wait` must not both send the lines
        if not self.client.ledger.redis.set(f"turnout:batch:{self.batch_id}:repair", 1, nx=True, ex=int(2 * STALL_S) + 1):
            return 0
        if self.input_path is None or not self._same_input():
            if not self.warned:
                self.say(
                    f"batch {self.batch_id} is missing {status.submitted - status.done} lines with nothing queued or in "
                    f"flight; run `turnout submit FILE --batch-id {self.batch_id} --repair` with its input file"
                )
                self.warned = True
            return 0
        resent = self.producer.resend_missing(file_lines(str(self.input_path)), self.batch_id)
        self.say(f"{resent} lines had gone missing with a killed worker; sent them again")
        return resent

    def _same_input(self) -> bool:
        """The input file is here, and the size it had when submitted (not another file at that path)."""
        if self.input_path is None or not self.input_path.is_file():
            return False
        recorded = self.client.ledger.redis.hget(f"turnout:batch:{self.batch_id}:meta", "input_size")
        return recorded is None or int(recorded) == self.input_path.stat().st_size
