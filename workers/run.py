"""`turnout run`: the whole pipeline in one process tree, for one batch file.

Starts (or finds) Redis, the fake provider when the config uses it, and one pool per
stage and tier; enqueues the file with a progress bar while it supervises the pools;
writes the results; and stops everything it started, on success, error or Ctrl-C.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from schemas.config import Config
from schemas.errors import TurnoutError
from workers.app import configured_redis_url, preflight
from workers.broker import EmbeddedRedis, check
from workers.client import Client
from workers.collector import POLL_S, PeriodicSpill, collect, summary
from workers.producer import SubmitReport
from workers.repair import StallWatch
from workers.report import write_report
from workers.supervisor import Supervisor


def run_batch(
    config: Config, config_path: Path, file: Path, out_dir: Path, batch_id: str, timeout: float | None, console: Console
) -> dict[str, Any]:
    """Run ``file`` as batch ``batch_id`` end to end; returns the summary written to report.json."""
    preflight(config, ["classify"] + [tier.name for tier in config.tiers])
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_like_ctrl_c)  # kill, systemd, docker stop: stop as on Ctrl-C
    state_dir = Path(config.state_dir)
    embedded: EmbeddedRedis | None = None
    url = configured_redis_url(config)
    if url:
        check(url)
    else:
        embedded = EmbeddedRedis(state_dir)
        url = embedded.start()
    env = dict(os.environ, TURNOUT_REDIS_URL=url, TURNOUT_CONFIG=str(config_path.resolve()))
    supervisor = Supervisor(config, config_path.resolve(), env, state_dir / "logs")
    try:
        supervisor.start_fake_provider()
        os.environ.update({k: v for k, v in env.items() if k == "TURNOUT_FAKE_URL"})
        supervisor.start_pools()
        client = Client(config, url)
        _note_config_change(client, config, batch_id, console)
        _submit_and_wait(client, supervisor, file, batch_id, timeout, console, PeriodicSpill(client.ledger, batch_id, state_dir))
        report = collect(client.ledger, batch_id, out_dir)
        write_report(client.ledger, batch_id, out_dir / "report.html")
        status = client.status(batch_id)
        return summary(status) | {"output_lines": report.output_lines, "error_lines": report.error_lines}
    except KeyboardInterrupt:
        console.print(f"interrupted: run the same command again to resume batch {batch_id}")
        raise
    finally:
        supervisor.stop()
        if embedded is not None:
            embedded.stop()


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _note_config_change(client: Client, config: Config, batch_id: str, console: Console) -> None:
    """Say so when a rerun resumes a batch begun under another config: its finished lines
    keep the answers the old config gave (the batch id comes from the input file alone)."""
    answering = config.model_dump_json(include={"tiers", "classifier", "limits"})  # not ports, paths, sizes
    digest = hashlib.sha256(answering.encode()).hexdigest()[:16]
    if client.ledger.first_config(batch_id, digest) != digest:
        status = client.status(batch_id)
        console.print(
            f"[yellow]batch {batch_id} was begun under another config; its {status.done} finished lines keep "
            "their answers and only the rest run under this one (--fresh starts the file over)[/yellow]"
        )


def _submit_and_wait(
    client: Client, supervisor: Supervisor, file: Path, batch_id: str, timeout: float | None, console: Console,
    spill: PeriodicSpill,
) -> None:
    """Enqueue on a thread while this one draws progress, restarts pools that die, and spills
    finished output lines to a file so Redis does not hold a long batch's results."""
    failure: list[BaseException] = []
    submitted: list[SubmitReport] = []

    def produce() -> None:
        try:
            submitted.append(client.submit_report(file, batch_id))
        except BaseException as exc:  # surfaced on the main thread below
            failure.append(exc)

    producer = threading.Thread(target=produce, name="turnout-producer", daemon=True)
    producer.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    stall = StallWatch(client, batch_id, file, lambda message: console.print(f"[yellow]{message}[/yellow]"))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"))
    with Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as progress:
        bar = progress.add_task(f"batch {batch_id}", total=None, note="")
        while True:
            if failure:
                raise failure[0]
            status = client.ledger.status(batch_id)
            if status is not None:
                total = status.submitted if status.sealed else None
                note = f"{status.failed} failed · ${status.cost_usd:.4f}"
                progress.update(bar, completed=status.done, total=total, note=note)
                if status.complete and not producer.is_alive():
                    return
            spill()
            stall.check(status)
            for name in supervisor.check():
                console.print(f"[yellow]{name} died and was restarted[/yellow]")
            if deadline is not None and time.monotonic() > deadline:
                raise TurnoutError(f"batch {batch_id} did not complete within {timeout:.0f}s; rerun to resume it")
            time.sleep(POLL_S)
