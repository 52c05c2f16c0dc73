"""The collector: a batch's ledger out to output.jsonl, errors.jsonl and report.json.

Files are written beside their final name and renamed into place, so a reader never sees
half a file and a crashed collect leaves the previous files whole.

A long batch's output lines can also be spilled while it runs (``spill``): appended to a
spill file on the collecting machine, then dropped from Redis, so Redis keeps a few dozen
bytes per finished line instead of the line. The collector reads them back from the file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import RedisError

from schemas.errors import TurnoutError
from schemas.result import BatchStatus, spent_text
from workers.ledger import Ledger, gone_while

#: How often a waiting collector re-reads the batch's counters.
POLL_S = 0.25
#: How often a batch's progress is said as a line where no progress bar can be drawn.
PROGRESS_LOG_S = 30.0


@dataclass
class CollectReport:
    batch_id: str
    output_lines: int
    error_lines: int
    output_path: str
    errors_path: str
    report_path: str


def wait(
    ledger: Ledger, batch_id: str, timeout: float | None = None, on_progress: Callable[[BatchStatus], None] | None = None
) -> BatchStatus:
    """Block until the batch is complete (sealed and every line recorded), or TimeoutError."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = False
    while True:
        status = ledger.status(batch_id)
        if status is None and seen:
            raise TurnoutError(gone_while(batch_id, "waiting for"))
        seen = seen or status is not None
        if status is not None and on_progress:
            on_progress(status)
        if status is not None and status.complete:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} is not complete after {timeout:.0f}s")
        time.sleep(POLL_S)


class ProgressLog:
    """A batch's progress as a plain line every ``every`` seconds, for output that is not a
    terminal (CI, nohup, systemd's journal), where a progress bar draws nothing until the end."""

    def __init__(self, say: Callable[[str], None], every: float = PROGRESS_LOG_S) -> None:
        self.say, self.every = say, every
        self._last: tuple[float, int] | None = None  # when the last line was said, and done then

    def __call__(self, status: BatchStatus) -> None:
        now = time.monotonic()
        if self._last is None:
            self._last = (now, status.done)
            return
        at, done = self._last
        if now - at < self.every:
            return
        rate = (status.done - done) / (now - at)
        left = status.submitted - status.done
        if not status.sealed:
            eta = ", input still being read"
        else:
            eta = f", about {_duration(left / rate)} left" if rate > 0 and left > 0 else ""
        self.say(f"batch {status.batch_id}: {status.done:,} of {status.submitted:,} lines done ({status.failed:,} failed), "
                 f"{rate:.1f} lines/s, {spent_text(status.cost_usd, status.max_cost_usd)}{eta}")
        self._last = (now, status.done)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def collect(ledger: Ledger, batch_id: str, out_dir: Path) -> CollectReport:
    """Write the batch's lines as they stand now; call after ``wait`` for a complete batch."""
    out_dir.mkdir(parents=True, exist_ok=True)
    output_path, errors_path, report_path = out_dir / "output.jsonl", out_dir / "errors.jsonl", out_dir / "report.json"
    outputs = _write_lines(output_path, output_lines(ledger, batch_id))
    errors = _write_lines(errors_path, ledger.error_lines(batch_id))
    status = ledger.status(batch_id) or BatchStatus(batch_id=batch_id)
    report = summary(status) | {"output_lines": outputs, "error_lines": errors}
    _atomic_write(report_path, json.dumps(report, indent=2).encode() + b"\n")
    return CollectReport(batch_id, outputs, errors, str(output_path), str(errors_path), str(report_path))


def output_lines(ledger: Ledger, batch_id: str) -> Iterator[bytes]:
    """Every output line of the batch: the spilled ones from the spill file, then Redis's.

    Holds the spill lease throughout, so no spill moves a line from Redis to the file between
    reading the one and the other."""
    token = hold_spill_lease(ledger, batch_id)
    try:
        path, size, _ = ledger.spill_state(batch_id)
        if path is not None and size:
            yield from _spilled_lines(batch_id, path, size)
        yield from ledger.lines(batch_id, "out")
    finally:
        ledger.spill_unlock(batch_id, token)


def follow(ledger: Ledger, batch_id: str) -> Iterator[bytes]:
    """Every output and error line as it is recorded, until the batch is complete, spilled
    lines included: read back from the spill file, in the order they were recorded.

    A spill moves output lines to the file in the order of the batch's events, so the n-th
    output event's line is the file's n-th line once it is spilled; only bytes below the
    committed size are read, and no spill rewrites those (see ``spill``): no lease needed,
    spills go on while it reads."""
    spilled = _SpillReader(ledger, batch_id)
    outputs = 0
    try:
        for ok, line in ledger.follow(batch_id):
            if ok:
                outputs += 1
                yield line or spilled.line(outputs - 1)
            else:
                yield line
    finally:
        spilled.close()


@dataclass
class _SpillReader:
    """The committed lines of a batch's spill file, read forward by line number."""

    ledger: Ledger
    batch_id: str
    lines_read: int = 0
    offset: int = 0  # of the file, read up to here
    buffer: bytes = b""
    at: int = 0  # of the buffer, lines before it are read
    fd: int | None = None

    def line(self, number: int) -> bytes:
        """Line ``number`` (from 0); numbers must not go down from call to call."""
        while True:
            end = self.buffer.find(b"\n", self.at)
            if end < 0:
                self._read_more()
                continue
            line, self.at = self.buffer[self.at : end], end + 1
            self.lines_read += 1
            if self.lines_read > number:
                return line

    def _read_more(self) -> None:
        path, size, _ = self.ledger.spill_state(self.batch_id)
        if path is None or size <= self.offset:
            if self.ledger.status(self.batch_id) is None:
                raise TurnoutError(gone_while(self.batch_id, "following"))
            raise TurnoutError(f"batch {self.batch_id}: an output line is spilled but not in its spill file's committed part")
        if self.fd is None:
            try:
                self.fd = os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise TurnoutError(_unreadable(self.batch_id, path, exc)) from None
        data = os.pread(self.fd, min(size - self.offset, 1 << 20), self.offset)
        if not data:
            raise TurnoutError(f"spill file {path} holds less than the {size} bytes spilled to it (it was cut or changed)")
        self.offset += len(data)
        self.buffer, self.at = self.buffer[self.at :] + data, 0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _unreadable(batch_id: str, path: str, exc: OSError) -> str:
    return (
        f"batch {batch_id} spilled output lines to {path}, which cannot be read here ({exc.strerror}); "
        "collect it on the machine that spilled them, or copy that file there"
    )


def _spilled_lines(batch_id: str, path: str, size: int) -> Iterator[bytes]:
    try:
        handle = open(path, "rb")  # noqa: SIM115  # closed below, after the lines are read
    except OSError as exc:
        raise TurnoutError(_unreadable(batch_id, path, exc)) from None
    with handle:  # line by line: a long batch's spill file can be larger than memory
        left = size
        for line in handle:
            if left <= 0:
                break
            if not line.endswith(b"\n") or len(line) > left:
                break
            left -= len(line)
            yield line[:-1]
    if left:
        raise TurnoutError(
            f"spill file {path} holds less than the {size} bytes spilled to it (it was cut or changed); "
            "the output lines spilled there are gone from Redis too: restore the file and collect again"
        )


def hold_spill_lease(ledger: Ledger, batch_id: str, timeout_s: float = 120.0) -> str:
    """Take the batch's spill lease, waiting for a spill round in progress to end."""
    token, deadline = uuid.uuid4().hex, time.monotonic() + timeout_s
    while not ledger.spill_lock(batch_id, token):
        if time.monotonic() > deadline:
            raise TurnoutError(f"batch {batch_id} is being spilled by another process; try again when it is done")
        time.sleep(0.05)
    return token


#: How often a waiting collector (`turnout run`, `collect --wait --spill`) spills.
SPILL_EVERY_S = 2.0


@dataclass
class PeriodicSpill:
    """Spills ``batch_id`` into ``state_dir/spill/`` when called, at most every SPILL_EVERY_S."""

    ledger: Ledger
    batch_id: str
    state_dir: Path
    last: float = 0.0

    def __call__(self) -> None:
        if time.monotonic() - self.last >= SPILL_EVERY_S:
            spill(self.ledger, self.batch_id, Path(self.state_dir) / "spill" / f"{self.batch_id}.output.jsonl")
            self.last = time.monotonic()


def spill(ledger: Ledger, batch_id: str, path: Path, per_round: int = 5000) -> int:
    """Move the output lines recorded since the last spill to ``path``; returns how many.

    Append, fsync, then drop the lines from Redis in one script that also records the file's
    committed size: a crash in between leaves lines in the file past that size, and the next
    spill cuts them off before appending again, so no line is ever in the file twice.

    A spiller holds the batch's lease in Redis and an exclusive lock on the file, and reads
    the committed size after taking both: one that stalled past its lease still holds the
    file, so no other can commit meanwhile, and what it writes lands past the committed bytes.
    A batch's first spill does not reuse a file a deleted batch of the same id left behind.
    """
    token = uuid.uuid4().hex
    if not ledger.spill_lock(batch_id, token):
        return 0  # another collector is spilling this batch
    try:
        known, spilled_bytes, cursor = ledger.spill_state(batch_id)
        if not known and ledger.unspilled(batch_id, cursor, 1)[0] is None:
            return 0  # nothing to spill yet: no file, or an empty one would outlive a short batch
        if known and spilled_bytes and not Path(known).exists():  # not made here: an empty file would look cut
            raise TurnoutError(
                f"batch {batch_id}'s answers are spilled to {known} ({spilled_bytes:,} bytes), which is not on this "
                "machine: collect or spill the batch on the machine that holds it (or restore the file, if it was removed)"
            )
        path = Path(known) if known else _fresh(path.resolve())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a spiller that lost its lease is still writing: the next round goes on
            return _spill_locked(ledger, batch_id, token, fd, path, per_round)
        finally:
            os.close(fd)  # releases the file lock
    finally:
        ledger.spill_unlock(batch_id, token)


def _fresh(path: Path) -> Path:
    """``path``, or ``path.2``, ``path.3``… when a deleted batch of the same id left lines there."""
    candidate, n = path, 1
    while candidate.exists() and candidate.stat().st_size > 0:
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def _spill_locked(ledger: Ledger, batch_id: str, token: str, fd: int, path: Path, per_round: int) -> int:
    known, size, cursor = ledger.spill_state(batch_id)
    if known is not None and Path(known) != path:
        return 0  # another spiller chose the file between our reads: the next round uses it
    on_disk = os.fstat(fd).st_size
    if on_disk < size:  # cutting it to `size` would pad it with zeros instead
        raise TurnoutError(
            f"spill file {path} holds {on_disk} bytes but {size} were spilled to it: it was removed or cut, "
            f"and the output lines spilled there are gone from Redis too; restore the file to go on"
        )
    os.ftruncate(fd, size)  # what a spill that died before committing left past it
    moved = 0
    while ledger.spill_lock(batch_id, token):  # renewed each round: a long backlog outlasts one lease
        last, lines = ledger.unspilled(batch_id, cursor, per_round)
        if last is None:
            return moved
        data = b"".join(line + b"\n" for _, line in lines)
        _write_at(fd, data, size, path)  # at the committed offset: what a dead spill left there is cut
        committed = ledger.commit_spill(batch_id, token, size, last, size + len(data), str(path), [k for k, _ in lines])
        if committed < 0:
            return moved  # the lease was lost or the batch deleted: leave it to the next spill
        moved, size, cursor = moved + committed, size + len(data), last
    return moved


def _write_at(fd: int, data: bytes, offset: int, path: Path) -> None:
    """All of ``data`` at ``offset``, on disk, or a TurnoutError with the file cut back to
    ``offset``: a short write (a full disk) must not be committed, or lines dropped from
    Redis would be in no file."""
    written = 0
    try:
        while written < len(data):
            step = os.pwrite(fd, data[written:], offset + written)
            if step <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written += step
        os.fsync(fd)
    except OSError as exc:
        os.ftruncate(fd, offset)
        raise TurnoutError(
            f"cannot write the spill file {path}: {exc.strerror or exc}; nothing is lost (the lines stay in Redis "
            "until a spill succeeds): free space there (or set state_dir elsewhere) and rerun the command"
        ) from None


def summary(status: BatchStatus) -> dict[str, object]:
    """The figures a batch owner reads first: jobs per tier, cost, and the all-frontier cost."""
    elapsed = (status.updated_at or 0) - (status.started_at or 0)
    saved = status.frontier_cost_usd - status.cost_usd
    return {
        "batch_id": status.batch_id,
        "lines": status.submitted,
        "succeeded": status.done - status.failed,
        "failed": status.failed,
        "complete": status.complete,
        "cost_usd": round(status.cost_usd, 6),
        "all_frontier_cost_usd": round(status.frontier_cost_usd, 6),
        "max_cost_usd": status.max_cost_usd,
        "saved_usd": round(saved, 6),
        "saved_share": round(saved / status.frontier_cost_usd, 4) if status.frontier_cost_usd else 0.0,
        "elapsed_s": round(max(elapsed, 0.0), 3),
        "tiers": {name: report.model_dump() for name, report in sorted(status.tiers.items())},
    }


def _write_lines(path: Path, lines: Iterable[bytes]) -> int:
    count = 0
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            for line in lines:
                handle.write(line)
                handle.write(b"\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise TurnoutError(
            f"cannot write {path}: {exc.strerror or exc}; the batch's lines are safe where they were (Redis and the spill "
            "file): free space there or pick another -o, and collect again"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)  # a read that failed leaves no half file behind
        close = getattr(lines, "close", None)
        if close is not None:
            try:
                close()  # a generator's own clean-up (a spill lease) runs now, while its Redis is up
            except RedisError:
                pass  # the lease lapses on its own in a minute; the error that brought us here matters more
    return count


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

