"""The producer: input lines in, classify tasks out, bad lines straight to the ledger.

It validates every line (a bad one becomes an error line, the batch goes on), refuses a
custom_id seen earlier in the batch, sends jobs in chunks, and waits while the queues
hold more than the high-water mark so a huge file cannot exhaust the broker's memory.
A submit that is interrupted and restarted with the same batch id goes on after the
last line it knows was enqueued.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from celery import Celery

from router.policy import TierPolicy
from schemas.config import Config
from schemas.errors import InputLineError, TurnoutError
from schemas.job import IDLE, Job, WireJob, check_batch_length, numbered, parse_line, parse_wire
from schemas.result import TurnoutInfo, error_line
from workers.app import CLASSIFY_QUEUE
from workers.ledger import SUBMIT_LEASE_MS, Ledger, spilled
from workers.tasks import send_classify

#: Check queue depth every this many chunks; each check is one Redis round trip.
BACKPRESSURE_EVERY = 8
#: How long the producer sleeps between depth checks while above the high-water mark.
BACKPRESSURE_SLEEP_S = 0.2
#: A chunk is sent early rather than let its input lines add up to more than this many bytes
#: (one longer line goes alone), so a classify task stays a modest Redis value however long
#: the prompts are. The message itself is larger: JSON escapes non-ASCII text and kombu
#: base64-encodes the body (about 1.3x for English, up to 4x for emoji).
CHUNK_BYTES = 1 << 20
#: A stream with nothing new for this long flushes its partial chunk.
STREAM_IDLE_S = 0.2

#: kombu keeps delivered, unacknowledged messages (tasks in flight) in this hash.
UNACKED = "unacked"


@dataclass
class SubmitReport:
    batch_id: str
    lines: int = 0
    enqueued: int = 0
    rejected: int = 0
    resumed_after: int = 0
    waited_s: float = 0.0
    peak_queued: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


class Producer:
    """Turns input lines into classify tasks for one batch at a time."""

    def __init__(self, app: Celery, config: Config, ledger: Ledger) -> None:
        self.app = app
        self.config = config
        self.ledger = ledger
        self.policy = TierPolicy(config)
        self._queues = [(CLASSIFY_QUEUE, config.chunk_size)] + [(t.queue, t.batch_size) for t in config.tiers]
        self._token = ""  # this producer's submit lease, while it submits

    def submit(
        self, lines: Iterable[bytes], batch_id: str, on_progress: Callable[[SubmitReport], None] | None = None,
        expected_lines: int | None = None,
    ) -> SubmitReport:
        """Enqueue every line of ``lines`` under ``batch_id``; seals the batch at the end.
        ``expected_lines``, a guess, sizes the batch's bookkeeping in Redis (``Ledger.open_batch``)."""
        self._token = secrets.token_hex(8)
        if not self.ledger.submit_lease(batch_id, self._token):
            raise TurnoutError(
                f"batch {batch_id} is being submitted by another producer; wait for it to finish (if it was killed, "
                f"{SUBMIT_LEASE_MS // 1000} s after it died), or give this one another --batch-id"
            )
        try:
            return self._submit(lines, batch_id, on_progress, expected_lines)
        finally:
            self.ledger.submit_release(batch_id, self._token)

    def _submit(
        self, lines: Iterable[bytes], batch_id: str, on_progress: Callable[[SubmitReport], None] | None, expected_lines: int | None
    ) -> SubmitReport:
        started = time.perf_counter()
        report = SubmitReport(batch_id=batch_id, resumed_after=self.ledger.enqueued_line(batch_id))
        physical = self.ledger.counts_blank_lines(batch_id)
        self.ledger.open_batch(batch_id, expected_lines)
        pending: list[WireJob] = []
        # records counts the non-blank lines, the batch's size: a blank line is no record
        # (JSONL convention) and gets no result; line_no is what results cite (``numbered``)
        pending_bytes = flushes = line_no = records = 0
        for line_no, raw in numbered(lines, physical):
            if raw is IDLE:
                if pending:
                    self._flush(batch_id, pending, records, line_no, report)
                    pending_bytes = 0
                continue
            records += 1
            if line_no <= report.resumed_after:
                continue
            job = self._job_or_error(raw, line_no, records, batch_id, report)
            if job is not None:
                if pending and pending_bytes + len(raw) > CHUNK_BYTES:
                    self._flush(batch_id, pending, records - 1, line_no - 1, report)
                    pending_bytes = 0
                pending.append(job)
                pending_bytes += len(raw)
            if len(pending) >= self.config.chunk_size:
                self._flush(batch_id, pending, records, line_no, report)
                pending_bytes = 0
                flushes += 1
                if flushes % BACKPRESSURE_EVERY == 0:
                    self._wait_below_high_water(report)
                if on_progress:
                    on_progress(report)
        self._flush(batch_id, pending, records, line_no, report)
        report.lines = records
        self.ledger.seal(batch_id, records)
        report.seconds = time.perf_counter() - started
        if on_progress:
            on_progress(report)
        return report

    def _job_or_error(self, raw: bytes, line_no: int, record: int, batch_id: str, report: SubmitReport) -> WireJob | None:
        custom_id: str | None = None
        try:
            check_batch_length(record, self.config.limits)
            job = parse_wire(raw, line_no, batch_id, self.config.limits)
            custom_id = job.custom_id
            pin = self.policy.pinned_tier(job.model)
            if pin is not None:
                job.body["pin"] = pin
            return job
        except InputLineError as exc:
            self._reject(batch_id, line_no, exc.custom_id or custom_id, exc.code, exc.message, report)
            return None

    def _reject(self, batch_id: str, line_no: int, custom_id: str | None, code: str, message: str, report: SubmitReport) -> None:
        key = f"@line:{line_no}"  # by line: two bad lines may share (or lack) a custom_id
        line = error_line(batch_id, custom_id, code, f"line {line_no}: {message}", TurnoutInfo(line=line_no))
        self.ledger.record_error(batch_id, key, line)
        report.rejected += 1
        report.errors[code] = report.errors.get(code, 0) + 1

    def _flush(self, batch_id: str, pending: list[WireJob], records: int, line_no: int, report: SubmitReport) -> None:
        """Claim the chunk's custom_ids, send the unique ones, and move the resume mark: the
        batch holds ``records`` lines up to and with line ``line_no``."""
        self._renew_lease(batch_id)
        if pending:
            owners = self.ledger.claim_ids(batch_id, [(job.custom_id, job.line) for job in pending])
            fresh = [job for job, owner in zip(pending, owners) if owner == job.line]
            for job, owner in zip(pending, owners):
                if owner != job.line:
                    message = f"custom_id {job.custom_id!r} was already used on line {owner}"
                    self._reject(batch_id, job.line, job.custom_id, "duplicate_custom_id", message, report)
            if fresh:
                send_classify(self.app, batch_id, fresh)
                report.enqueued += len(fresh)
            pending.clear()
        self.ledger.progress(batch_id, submitted=records, enqueued_line=line_no)

    def resend_missing(self, lines: Iterable[bytes], batch_id: str) -> int:
        """Enqueue again every valid line that has neither an output nor an error line.

        For a batch that stalled with nothing queued and nothing in flight: Redis's BRPOP
        hands a message to a worker before kombu records it as unacknowledged, so a worker
        killed in that instant takes the message with it. Idempotent like everything else:
        a job that did get answered in the meantime is skipped by the tier task.
        """
        from workers.ledger import BatchKeys

        keys, pending, resent = BatchKeys(batch_id), [], 0
        for line_no, raw in numbered(lines, self.ledger.counts_blank_lines(batch_id)):
            if raw is IDLE:
                continue
            try:
                job = parse_line(raw, line_no, batch_id, self.config.limits)
                job.pin = self.policy.pinned_tier(job.model)
            except InputLineError:
                continue  # bad lines were recorded by the producer, keyed by line
            pending.append(job)
            if len(pending) >= self.config.chunk_size:
                resent += self._resend(keys, batch_id, pending)
        return resent + self._resend(keys, batch_id, pending)

    def _resend(self, keys: Any, batch_id: str, jobs: list[Job]) -> int:
        if not jobs:
            return 0
        ids = [job.custom_id for job in jobs]
        pipe = self.ledger.redis.pipeline(transaction=False)
        pipe.hmget(keys.out, ids)
        pipe.hmget(keys.err, ids)
        outs, errs = pipe.execute()
        owners = self.ledger.owners(batch_id, ids)
        missing = [
            job for job, out, err, owner in zip(jobs, outs, errs, owners)
            if out is None and err is None and owner is not None and not spilled(owner) and int(owner) == job.line
        ]  # fmt: skip
        jobs.clear()
        if missing:
            send_classify(self.app, batch_id, missing)
        return len(missing)

    def batch_pending(self, batch_id: str) -> bool:
        """Any task of this batch queued, or delivered and not yet acknowledged (waiting
        retries included), found by the batch in the argsrepr turnout gives every task. Reads
        the queues whole: for a batch that looks stalled, not for every poll."""
        needle = f"batch={batch_id!r}".encode()
        redis = self.ledger.redis
        guards = [tier.guard_queue for tier in self.config.tiers]  # calls handed off: still out
        for name in [name for name, _ in self._queues] + guards:
            for start in range(0, int(redis.llen(name)), 500):
                if any(needle in message for message in redis.lrange(name, start, start + 499)):
                    return True
        return any(needle in held for held in redis.hvals(UNACKED))

    def restore_lost_deliveries(self, every: bool = False) -> int:
        """Put back on their queues the tasks delivered more than the visibility timeout ago and
        never acknowledged (their worker died hard), as kombu in any running worker would; with
        every pool scaled to zero, none is there to. ``every``: all held tasks, whatever their
        age, for a caller that knows no live worker holds any. Returns how many were due."""
        with self.app.connection_for_write() as connection:
            qos = connection.default_channel.qos
            if every:
                tags = self.ledger.redis.zrange(qos.unacked_index_key, 0, -1)
                for tag in tags:
                    qos.restore_by_tag(tag)
                return len(tags)
            due = int(self.ledger.redis.zcount(qos.unacked_index_key, 0, time.time() - qos.visibility_timeout))
            if due:
                qos.restore_visible(num=due, interval=1)
        return due

    def restore_held(self, queues: set[str], delivered_after: float, delivered_before: float) -> int:
        """Put back on their queues the tasks of ``queues`` delivered between the two times
        (epoch seconds) and never acknowledged: for a caller that knows the only worker reading
        those queues then has died and its processes have ended. Tasks delivered to another
        (one started in its place, or an earlier one still ending) are left alone. Returns how
        many went back."""
        restored = 0
        with self.app.connection_for_write() as connection:
            qos = connection.default_channel.qos
            for tag in self.ledger.redis.zrangebyscore(qos.unacked_index_key, delivered_after, delivered_before):
                held = self.ledger.redis.hget(qos.unacked_key, tag)
                if held is None:
                    continue  # acknowledged meanwhile
                _, exchange, routing_key = json.loads(held)
                if routing_key in queues or exchange in queues:
                    qos.restore_by_tag(tag)
                    restored += 1
        return restored

    def _renew_lease(self, batch_id: str) -> None:
        if not self.ledger.submit_lease(batch_id, self._token):
            raise TurnoutError(f"lost batch {batch_id}'s submit lease to another producer (this one stalled for "
                               f"{SUBMIT_LEASE_MS // 1000} s); it goes on with the batch")

    def queued_jobs(self) -> int:
        """Jobs waiting in turnout's queues, estimated from message counts × jobs per message."""
        pipe = self.ledger.redis.pipeline(transaction=False)
        for name, _ in self._queues:
            pipe.llen(name)
        return sum(int(n) * size for n, (_, size) in zip(pipe.execute(), self._queues))

    def _wait_below_high_water(self, report: SubmitReport) -> None:
        queued = self.queued_jobs()
        report.peak_queued = max(report.peak_queued, queued)
        while queued > self.config.high_water:
            self._renew_lease(report.batch_id)
            time.sleep(BACKPRESSURE_SLEEP_S)
            report.waited_s += BACKPRESSURE_SLEEP_S
            queued = self.queued_jobs()


def file_lines(path: str) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from handle


def stream_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """Lines of a stream as they arrive, with IDLE whenever nothing came for STREAM_IDLE_S.

    A reader thread feeds a bounded queue, so a slow pipe still gets its partial chunk
    enqueued instead of waiting for a full one.
    """
    lines: queue.Queue[bytes | None] = queue.Queue(maxsize=10_000)

    def read() -> None:
        for raw in stream:
            lines.put(raw)
        lines.put(None)

    threading.Thread(target=read, name="turnout-stdin", daemon=True).start()
    while True:
        try:
            raw = lines.get(timeout=STREAM_IDLE_S)
        except queue.Empty:
            yield IDLE
            continue
        if raw is None:
            return
        yield raw
