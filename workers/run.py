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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from schemas.config import CLASSIFY_POOL, Config
from schemas.errors import TurnoutError
from schemas.result import spent_text
from workers.app import CLASSIFY_QUEUE, configured_redis_url, preflight, visibility_timeout
from workers.broker import EmbeddedRedis, check, lock_state_dir
from workers.client import Client
from workers.collector import POLL_S, PeriodicSpill, ProgressLog, collect, summary
from workers.dlq import BUDGET_SPENT, DeadLetters
from workers.producer import SubmitReport
from workers.repair import StallWatch
from workers.status import DownWatch
from workers.report import write_report
from workers.supervisor import Supervisor


#: How much longer than a tier's longest run a rerun waits for an earlier run's pools to finish.
HAND_BACK_MARGIN_S = 30.0


#: How many other unfinished batches a run names before it only counts them.
NAMED_BATCHES = 3


def run_batch(
    config: Config, config_path: Path, file: Path, out_dir: Path, batch_id: str, timeout: float | None, console: Console,
    fresh: bool = False, max_cost: float | None = None,
) -> dict[str, Any]:
    """Run ``file`` as batch ``batch_id`` end to end; returns the summary written to report.json.
    ``fresh``: the batch id is new (``--fresh``), so the same command would not resume it.
    ``max_cost``: the batch's spending cap (USD), set before any pool starts."""
    resume = f"run the same command with --batch-id {batch_id} in place of --fresh" if fresh else "run the same command again"
    preflight(config, [CLASSIFY_POOL] + [tier.name for tier in config.tiers])
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_like_ctrl_c)  # kill, systemd, docker stop: stop as on Ctrl-C
    state_dir = Path(config.state_dir)
    for directory, what in ((out_dir, "output (-o)"), (state_dir, "state (state_dir)")):
        _usable_dir(directory, what)  # before anything runs, not after every call was paid for
    embedded: EmbeddedRedis | None = None
    held: IO[str] | None = None
    url = configured_redis_url(config)
    if url:
        check(url)
    else:
        held = lock_state_dir(state_dir)  # a second run here would share, then lose, this one's Redis
        embedded = EmbeddedRedis(state_dir)
        try:
            url = embedded.start()
        except BaseException:
            held.close()
            raise
    env = dict(os.environ, TURNOUT_REDIS_URL=url, TURNOUT_CONFIG=str(config_path.resolve()))
    supervisor = Supervisor(config, config_path.resolve(), env, state_dir / "logs")
    try:
        client = Client(config, url)
        if embedded is not None:
            _hand_back_held_tasks(client, state_dir, console)
        before, began = client.ledger.status(batch_id), time.time()  # a rerun resumes: what was done, and when it began
        if max_cost is not None and (warning := client.ledger.set_max_cost(batch_id, max_cost)):
            console.print(f"[yellow]{escape(warning)}[/yellow]")  # set before the pools start: replayed dead letters obey it
        supervisor.start_fake_provider()
        os.environ.update({k: v for k, v in env.items() if k == "TURNOUT_FAKE_URL"})
        supervisor.start_pools()
        _note_config_change(client, config, batch_id, console)  # (which records the batch's config: a fresh one starts here)
        if embedded is not None:  # a shared Redis's other batches may well be running elsewhere, on purpose
            _note_unfinished_batches(client, batch_id, console)
        _submit_and_wait(client, supervisor, file, batch_id, timeout, console, PeriodicSpill(client.ledger, batch_id, state_dir), resume,
                         own_redis=embedded is not None)
        report = collect(client.ledger, batch_id, out_dir)
        write_report(client.ledger, batch_id, out_dir / "report.html")
        status = client.status(batch_id)
        codes = [letter.code for letter in DeadLetters(client.ledger.redis).entries([t.name for t in config.tiers], batch_id)]
        resumed = ({"this_run_s": round(time.time() - began, 3), "done_before": before.done}
                   if before is not None and before.started_at is not None else {})  # a cap set alone began no batch
        return summary(status) | {"output_lines": report.output_lines, "error_lines": report.error_lines, "dead_letters": len(codes),
                                  "over_budget": codes.count(BUDGET_SPENT), "resume": resume} | resumed
    except KeyboardInterrupt:
        console.print(f"interrupted: {resume} to resume batch {batch_id}")
        raise
    finally:
        with _uninterrupted() as hurry:  # pools first, so they hand their tasks back to a Redis still up
            supervisor.stop(hurry, say=lambda line: console.print(line, highlight=False), held=lambda: _holds_tasks(url))
            if embedded is not None:
                embedded.stop()
            if held is not None:
                held.close()


def _holds_tasks(url: str) -> bool:
    """Whether any worker holds a task unacknowledged, or a handed-off call is out (a guard
    queued), on the Redis at ``url``."""
    import redis

    from workers.producer import UNACKED

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.hlen(UNACKED)) or any(client.llen(key) for key in client.scan_iter(match="turnout.guard.*", count=100))
    finally:
        client.close()


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _usable_dir(directory: Path, what: str) -> None:
    if directory.exists() and not directory.is_dir():
        raise TurnoutError(f"the {what} directory {directory} is a file; name a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TurnoutError(f"cannot make the {what} directory {directory}: {exc.strerror or exc}; name another") from None


@contextmanager
def _uninterrupted() -> Iterator[threading.Event]:
    """While the run stops what it started, Ctrl-C and SIGTERM set the event it yields (the
    pools' wait for their calls is cut short: they are killed, and those calls are made again
    on resume) but do not interrupt the stop itself: cut short, the pools would die with
    Redis, their tasks unacknowledged until the visibility timeout, and a rerun would wait
    that long for them."""
    hurry = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield hurry
        return

    def note(signum: int, frame: object) -> None:
        if not hurry.is_set():
            os.write(2, b"stopping now: calls still out are cut, and made again on resume; then Redis stops\n")
        hurry.set()

    before = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield hurry
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _hand_back_held_tasks(client: Client, state_dir: Path, console: Console) -> None:
    """Put back on their queues the tasks an earlier run's pools held when they died with it or
    with its Redis, before this run's pools start; left alone, they would wait out the
    visibility timeout (minutes) under a frozen progress bar. Only this run uses this Redis
    (the state dir is locked), so the only holders can be that run's pools: a run killed
    outright leaves them in a warm shutdown, still running their tasks. Their process groups
    are waited for (up to a tier's longest run and a margin); if they outlast that, their
    tasks are left to the visibility timeout. A worker started by hand on this Redis is
    looked for with a ping."""
    from workers.producer import UNACKED, Producer
    from workers.supervisor import live_groups

    if not client.ledger.redis.hlen(UNACKED):
        return
    log_dir = state_dir / "logs"
    deadline = time.monotonic() + max(tier.longest_run_s for tier in client.config.tiers) + HAND_BACK_MARGIN_S
    if live_groups(log_dir):
        console.print("waiting for the previous run's pools to finish their tasks…")
        while live_groups(log_dir) and time.monotonic() < deadline:
            time.sleep(1.0)
    if live_groups(log_dir) or client.app.control.ping(timeout=1.0):
        console.print("[yellow]workers of an earlier run still hold tasks; those go back on their queues when the "
                      "visibility timeout has passed[/yellow]")
        return
    restored = Producer(client.app, client.config, client.ledger).restore_lost_deliveries(every=True)
    if restored:
        console.print(f"{restored} tasks that an earlier run's pools held when they stopped were put back on their queues")


def _hand_back_dead_pools_tasks(client: Client, supervisor: Supervisor, console: Console) -> None:
    """Put back on its queues what a pool that died during this run held (delivered between its
    start and its death), once its process group has ended: left alone, those tasks would wait
    out the visibility timeout (minutes) while the batch sits a few lines short. Only this
    run's pools read these queues, and the pool started in the dead one's place got its tasks
    after it died: so with the embedded Redis only (the state dir is locked to this run)."""
    from workers.producer import Producer

    for dead in supervisor.ended():
        if dead.pool == CLASSIFY_POOL:
            queues = {CLASSIFY_QUEUE}
        else:
            tier = client.config.tier(dead.pool)
            queues = {tier.queue, tier.guard_queue}
        restored = Producer(client.app, client.config, client.ledger).restore_held(queues, dead.started_at, dead.died_at)
        if restored:
            console.print(f"{restored} tasks the dead {dead.pool} pool held were put back on its queues")


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


def _note_unfinished_batches(client: Client, batch_id: str, console: Console) -> None:
    """Name the other unfinished batches in this Redis: their queued jobs are on the same
    queues, so this run's pools answer them too, and they are paid for whether or not anyone
    collects them (an interrupted ``--fresh`` run leaves one no rerun would find)."""
    unfinished = []
    for other in client.ledger.batches():
        status = client.ledger.status(other)
        if other != batch_id and status is not None and not status.complete:
            unfinished.append((other, status))
    for other, status in unfinished[:NAMED_BATCHES]:
        source = client.input_path(other)
        console.print(
            f"[yellow]batch {other}{f' ({source.name})' if source else ''} is unfinished ({status.done} of "
            f"{status.submitted} lines done): its queued jobs run in this run too, and are paid for. Resume it with "
            f"`turnout run {source or 'FILE'} --batch-id {other}`, or drop them with `turnout delete {other} --force`[/yellow]",
            highlight=False,
        )
    if len(unfinished) > NAMED_BATCHES:
        console.print(f"[yellow]and {len(unfinished) - NAMED_BATCHES} more unfinished batches: `turnout status` lists them[/yellow]")


def _submit_and_wait(
    client: Client, supervisor: Supervisor, file: Path, batch_id: str, timeout: float | None, console: Console,
    spill: PeriodicSpill, resume: str = "run the same command again", own_redis: bool = False,
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
    down = DownWatch(client.config, client.ledger.redis, lambda message: console.print(f"[yellow]{escape(message)}[/yellow]"))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"))
    plain = None if console.is_terminal else ProgressLog(lambda line: console.print(line, highlight=False))
    with Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as progress:
        bar = progress.add_task(f"batch {batch_id}", total=None, note="")
        while True:
            if failure:
                raise failure[0]
            status = client.ledger.status(batch_id)
            if status is not None and plain is not None:
                plain(status)
            if status is not None:
                total = status.submitted if status.sealed else None
                note = f"{status.failed} failed · {spent_text(status.cost_usd, status.max_cost_usd)}"
                progress.update(bar, completed=status.done, total=total, note=note)
                if status.complete and not producer.is_alive():
                    return
            spill()
            stall.check(status)
            down.check()
            for name in supervisor.check():
                held = ("go back on its queues once its processes have ended" if own_redis
                        else f"come back after the visibility timeout ({visibility_timeout(client.config)} s)")
                console.print(f"[yellow]{name} died and was restarted; the tasks it held {held}[/yellow]")
            if own_redis:  # on a shared Redis other machines' workers read these queues too
                _hand_back_dead_pools_tasks(client, supervisor, console)
            if deadline is not None and time.monotonic() > deadline:
                raise TurnoutError(f"batch {batch_id} did not complete within {timeout:.0f}s; {resume} to resume it")
            time.sleep(POLL_S)
