"""The Python API for producers and consumers; the CLI is a thin layer over it.

    from workers.client import Client

    client = Client.from_config("turnout.yaml")          # TURNOUT_REDIS_URL names the broker
    batch = client.submit([{"custom_id": "q1", "prompt": "What is 2+2?"}])
    for line in client.results(batch):                    # as they complete, until the batch is done
        print(line.custom_id, line.turnout.tier, line.ok)
    print(client.status(batch).cost_usd)
"""

from __future__ import annotations

import json
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from pathlib import Path
from typing import Any

from celery import Celery

from schemas.config import Config, load_config
from schemas.errors import TurnoutError
from schemas.job import Job
from schemas.result import BatchStatus, ResultLine
from workers.app import create_app, redis_url_for
from workers.broker import check
from workers.collector import CollectReport, collect, follow, wait
from workers.ledger import BatchKeys, Ledger
from workers.paths import input_file
from workers.producer import Producer, SubmitReport, file_lines

Source = str | Path | Iterable[Job | dict[str, Any] | str | bytes]


def new_batch_id() -> str:
    return time.strftime("b%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class Client:
    """Submit batches, follow their results, read their status, against one broker."""

    def __init__(self, config: Config, redis_url: str, app: Celery | None = None) -> None:
        check(redis_url)
        self.config = config
        self.app = app or create_app(config, redis_url)
        self.ledger: Ledger = self.app.turnout_runtime.ledger

    @classmethod
    def from_config(cls, path: str | Path = "turnout.yaml") -> Client:
        config = load_config(path)
        return cls(config, redis_url_for(config))

    def submit(
        self, source: Source, batch_id: str | None = None, on_progress: Callable[[SubmitReport], None] | None = None,
        max_cost: float | None = None,
    ) -> str:
        """Enqueue a file (path) or an iterable of jobs/dicts/JSON lines; returns the batch id.
        ``max_cost``: the batch's spending cap in USD (``Ledger.set_max_cost``)."""
        batch_id = batch_id or new_batch_id()
        if max_cost is not None:
            self.ledger.set_max_cost(batch_id, max_cost)
        self.submit_report(source, batch_id, on_progress)
        return batch_id

    def submit_report(
        self, source: Source, batch_id: str, on_progress: Callable[[SubmitReport], None] | None = None
    ) -> SubmitReport:
        expected = len(source) if isinstance(source, Sized) and not isinstance(source, (str, bytes)) else None
        if isinstance(source, (str, Path)):  # where a waiting collector can find lines to send again
            path, meta = input_file(source).resolve(), BatchKeys(batch_id).meta
            size = path.stat().st_size
            before, before_size, enqueued = self.ledger.redis.hmget(meta, ["input_path", "input_size", "enqueued_line"])
            if int(enqueued or 0) and before is not None and (before.decode(), int(before_size or 0)) != (str(path), size):
                raise TurnoutError(
                    f"batch {batch_id} was submitted from {before.decode()} ({int(before_size or 0):,} bytes); {path} "
                    f"({size:,} bytes) is another file, and going on would skip its first lines. Give it another "
                    f"--batch-id, or `turnout delete {batch_id}` first"
                )
            self.ledger.redis.hset(meta, mapping={"input_path": str(path), "input_size": size})
            expected = estimate_lines(path)
        return Producer(self.app, self.config, self.ledger).submit(_lines(source), batch_id, on_progress, expected)

    def input_path(self, batch_id: str) -> Path | None:
        """The input file the batch was submitted from, when it came from a file."""
        raw = self.ledger.redis.hget(BatchKeys(batch_id).meta, "input_path")
        return Path(raw.decode()) if raw else None

    def status(self, batch_id: str) -> BatchStatus:
        status = self.ledger.status(batch_id)
        if status is None:
            raise TurnoutError(f"no batch {batch_id!r} in this Redis; `turnout status` lists the batches")
        return status

    def wait(self, batch_id: str, timeout: float | None = None) -> BatchStatus:
        self.status(batch_id)
        return wait(self.ledger, batch_id, timeout)

    def results(self, batch_id: str) -> Iterator[ResultLine]:
        """Every output and error line, as each is recorded, until the batch is complete;
        lines already spilled out of Redis are read back from the spill file."""
        for raw in self.raw_results(batch_id):
            yield ResultLine.model_validate_json(raw)

    def raw_results(self, batch_id: str) -> Iterator[bytes]:
        """``results`` as the JSON lines the output files hold."""
        self.status(batch_id)
        return follow(self.ledger, batch_id)

    def collect(self, batch_id: str, out_dir: str | Path) -> CollectReport:
        self.status(batch_id)
        return collect(self.ledger, batch_id, Path(out_dir))


def estimate_lines(path: Path, sample_bytes: int = 1 << 20) -> int | None:
    """About how many lines the file holds, from the line length in three windows of
    ``sample_bytes`` (its start, middle and end), the densest of them: too many costs the ids
    buckets little, too few fills them past what Redis keeps compact. None for what is not a
    regular file (a FIFO would lose what this read)."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        return None
    size = info.st_size
    if size <= 3 * sample_bytes:
        data = path.read_bytes()
        return data.count(b"\n") + (bool(data) and not data.endswith(b"\n"))  # a last line may lack its newline
    densest = 0
    with path.open("rb") as handle:
        for start in (0, (size - sample_bytes) // 2, size - sample_bytes):
            handle.seek(start)
            densest = max(densest, handle.read(sample_bytes).count(b"\n"))
    return round(size * densest / sample_bytes)


def _lines(source: Source) -> Iterable[bytes]:
    if isinstance(source, (str, Path)):
        return file_lines(str(source))
    return (_encode(item) for item in source)


def _encode(item: Job | dict[str, Any] | str | bytes) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):  # half a surrogate pair passes, for the line's error to name (not a crash here)
        return item.encode("utf-8", "surrogatepass")
    if isinstance(item, Job):
        return json.dumps({"custom_id": item.custom_id, "body": {"model": item.model, "messages": item.messages}}).encode()
    return json.dumps(item).encode()
