"""The `turnout` command: a thin layer over workers.client and friends.

Every failure a user can cause (a missing file, a broken config, an unreachable Redis)
ends as one sentence on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # or every import waits on the network

import typer  # noqa: E402
from kombu.exceptions import OperationalError  # noqa: E402
from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: E402
from redis.exceptions import RedisError  # noqa: E402
from redis.exceptions import TimeoutError as RedisTimeoutError  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from schemas.config import CLASSIFY_POOL, Config, load_config  # noqa: E402
from schemas.errors import ConfigError, TurnoutError  # noqa: E402
from workers.paths import input_file  # noqa: E402

app = typer.Typer(
    help="turnout: route batch LLM traffic to cheap or frontier models on per-tier Celery pools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", envvar="TURNOUT_CONFIG", help="turnout.yaml to use.", show_default=True),
]
DEFAULT_CONFIG = Path("turnout.yaml")


def _config(path: Path) -> Config:
    return load_config(path)


#: The state directory of the `turnout run` whose embedded Redis this command attached to:
#: when that run ends, its Redis stops with it.
_WATCHED_RUN: Path | None = None


def _run_ended() -> bool:
    """Whether the `turnout run` this command attached to has ended (or is ending: its Redis
    stops before it lets go of the state directory)."""
    from workers.broker import EmbeddedRedis, state_dir_in_use

    if _WATCHED_RUN is None:
        return False
    return not state_dir_in_use(_WATCHED_RUN) or not EmbeddedRedis(_WATCHED_RUN).socket.exists()


def _end_with_the_run(what: str) -> None:
    """A long-running command attached to a `turnout run`'s embedded Redis ends when the run
    does (it would otherwise block on a Redis that is gone, reconnecting for ever)."""
    if _WATCHED_RUN is None:
        return
    import threading

    def watch() -> None:
        while not _run_ended():
            time.sleep(1.0)
        err.print(f"the `turnout run` {what} watched has ended, and its Redis with it; stopping")
        os._exit(0)

    threading.Thread(target=watch, name="turnout-run-watch", daemon=True).start()


def _fail_fast(client: Any) -> Any:
    """A client attached to a `turnout run`'s embedded Redis: that Redis going away is the run
    ending, not a restart to wait out (~35 s of reconnecting, then a misleading error)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if _WATCHED_RUN is not None:
        pool = client.ledger.redis.connection_pool
        pool.connection_kwargs["retry"] = Retry(NoBackoff(), 1)
        pool.disconnect()
    return client


def _client(config_path: Path, after_run: bool = False, live: bool = False) -> Any:
    """A client of the configured Redis. With ``after_run`` and none configured, the embedded
    Redis that a `turnout run` from this directory kept its batches in (it persists them),
    started for this command if it is not running, and stopped when the command ends; with
    ``live``, the one a `turnout run` serves now (``live_redis_url``)."""
    from workers.app import configured_redis_url, redis_url_for
    from workers.client import Client

    config = _config(config_path)
    state_dir = Path(config.state_dir)
    if after_run and not configured_redis_url(config) and (state_dir / "redis").is_dir():
        import atexit

        from workers.broker import STATE_LOCK_WAIT_S, EmbeddedRedis, lock_state_dir, state_dir_holder

        embedded = EmbeddedRedis(state_dir)
        deadline = time.monotonic() + STATE_LOCK_WAIT_S
        while True:
            try:
                held = lock_state_dir(state_dir, wait_s=0, advice="try again when it has finished")
            except TurnoutError:
                if state_dir_holder(state_dir).startswith("turnout run") and embedded.answering:
                    global _WATCHED_RUN
                    _WATCHED_RUN = state_dir
                    break  # a running `turnout run` serves it, and keeps it up (until it ends)
                if time.monotonic() < deadline:  # a run starting, or another command like this one
                    time.sleep(0.1)
                    continue
                raise
            embedded.start()
            atexit.register(held.close)
            atexit.register(embedded.stop)  # runs first: stops what this command started, then lets go
            break
        return _fail_fast(Client(config, embedded.url))
    return _fail_fast(Client(config, live_redis_url(config) if live else redis_url_for(config)))


def live_redis_url(config: Any) -> str:
    """The configured Redis, else the embedded one a `turnout run` from this directory serves
    now: what watching commands (flower, metrics, scale, collect --follow) attach to."""
    from workers.app import configured_redis_url
    from workers.broker import EmbeddedRedis, state_dir_holder, state_dir_in_use

    url = configured_redis_url(config)
    if url:
        return url
    state_dir = Path(config.state_dir)
    embedded = EmbeddedRedis(state_dir)
    if state_dir_in_use(state_dir) and state_dir_holder(state_dir).startswith("turnout run") and embedded.answering:
        global _WATCHED_RUN
        _WATCHED_RUN = state_dir
        return embedded.url
    raise ConfigError(
        f"no Redis configured, and no `turnout run` is going with state directory {state_dir}: run this beside a "
        "`turnout run` (same directory and config), or set TURNOUT_REDIS_URL to watch a shared Redis; a stopped run's "
        "batches are read by `turnout status` and `turnout collect BATCH -o DIR`"
    )


# --- run ---------------------------------------------------------------------------------

MaxCostOption = Annotated[
    Optional[float],
    typer.Option(
        "--max-cost", metavar="USD",
        help="Cap what the batch may spend (USD, as its cost is counted): once reached, its remaining lines are not "
        "sent but end as `budget_spent` error lines and dead letters, replayable under a higher cap. A soft cap: "
        "calls already out finish. Given again, it replaces the batch's cap.",
    ),
]


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="JSONL input: OpenAI Batch lines or {custom_id, prompt} lines.")],
    config_path: ConfigOption = DEFAULT_CONFIG,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where output.jsonl, errors.jsonl, report.json and report.html go.")] = Path("turnout-out"),
    batch_id: Annotated[Optional[str], typer.Option(help="Batch id; default derives from the file, so a rerun resumes.")] = None,
    fresh: Annotated[bool, typer.Option(help="Start a new batch even if this file was run before.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="Give up after this many seconds.")] = None,
    max_cost: MaxCostOption = None,
) -> None:
    """Run a whole batch on this machine: Redis, pools and all, then write the results.

    With no TURNOUT_REDIS_URL, a private Redis starts under the config's state_dir
    (.turnout/). Every started process is stopped at the end, also on Ctrl-C; running
    the same command again resumes an interrupted batch. Finished answers are spilled to
    state_dir/spill/ as they come, so Redis never holds a long batch's results.
    """
    from workers.ledger import check_max_cost
    from workers.run import run_batch

    input_file(file, hint="pass a JSONL file (examples/batch.jsonl is one)")
    check_max_cost(max_cost)
    config = _config(config_path)
    batch = batch_id or _file_batch_id(file, fresh)
    _say_unpriced(config)
    summary = run_batch(config, config_path, file, out_dir, batch, timeout, err, fresh=fresh and not batch_id, max_cost=max_cost)
    _print_summary(summary, out_dir)
    spilled = Path(config.state_dir) / "spill" / f"{batch}.output.jsonl"
    size = f", its answers {spilled.stat().st_size / 1e6:.1f} MB in {spilled}" if spilled.exists() else ""
    from workers.app import configured_redis_url

    where = "Redis" if configured_redis_url(config) else config.state_dir
    out.print(f"The batch stays in {where}{size}, for a resume, a dlq replay or another collect; once done with "
              f"it, `turnout collect {batch} -o {out_dir} --delete` writes the files again and frees it", highlight=False)


def _warn(warning: str | None) -> None:
    if warning:
        err.print(f"[yellow]{escape(warning)}[/yellow]", highlight=False)


def _file_batch_id(file: Path, fresh: bool) -> str:
    stat = file.stat()
    seed = f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{time.time() if fresh else ''}"
    return "run-" + hashlib.sha1(seed.encode()).hexdigest()[:12]


def _print_summary(summary: dict[str, Any], out_dir: Path) -> None:
    from workers.status import eta_text

    table = Table(title=f"batch {summary['batch_id']}", show_edge=False)
    for column in ("tier", "jobs", "failed", "cost (USD)"):
        table.add_column(column, justify="right" if column != "tier" else "left")
    for name, tier in summary["tiers"].items():
        table.add_row(name, str(tier["jobs"]), str(tier["failed"]), f"{tier['cost_usd']:.6f}")
    out.print(table)
    took = f"in {summary['elapsed_s']:.1f}s"
    if "this_run_s" in summary:  # a resumed batch: its time counts from its first run
        took = (f"in {eta_text(summary['elapsed_s'])} since the batch began (this run {eta_text(summary['this_run_s'])}, "
                f"{summary['done_before']} lines done before it)")
    out.print(
        f"{summary['succeeded']} answered, {summary['failed']} failed of {summary['lines']} lines "
        f"{took}. Cost ${summary['cost_usd']:.4f}; all-frontier would have cost "
        f"${summary['all_frontier_cost_usd']:.4f} (saved {summary['saved_share']:.0%})."
    )
    out.print(f"Wrote {out_dir / 'output.jsonl'}, {out_dir / 'errors.jsonl'}, {out_dir / 'report.json'}, {out_dir / 'report.html'}")
    resume = summary.get("resume", "run the same command again")
    replay = f"`turnout dlq replay --batch {summary['batch_id']}`"
    if summary.get("over_budget"):
        others = summary["dead_letters"] - summary["over_budget"]
        also = f" (the replay sends the {others} other dead letters again too)" if others else ""
        out.print(f"{summary['over_budget']} lines were not sent: the batch reached its ${summary['max_cost_usd']:.4f} cap "
                  f"(--max-cost). To answer them: {replay}{also}, then {resume}, with a higher --max-cost", highlight=False)
    elif summary.get("dead_letters"):  # failed calls, not rejected input lines, which would fail the same way again
        out.print(f"{summary['dead_letters']} of the failed lines can be tried again (errors.jsonl says why they failed): "
                  f"{replay}, then {resume}", highlight=False)


# --- the split pipeline ------------------------------------------------------------------


@app.command()
def submit(
    file: Annotated[str, typer.Argument(help="JSONL input file, or - to read jobs from stdin until EOF.")],
    config_path: ConfigOption = DEFAULT_CONFIG,
    batch_id: Annotated[Optional[str], typer.Option(help="Batch id; reuse one to resume an interrupted submit.")] = None,
    repair: Annotated[bool, typer.Option(help="Send again the lines of --batch-id that have no result and are nowhere queued.")] = False,
    max_cost: MaxCostOption = None,
) -> None:
    """Enqueue a batch against TURNOUT_REDIS_URL and print its id (pools run elsewhere)."""
    from workers.client import new_batch_id
    from workers.ledger import check_max_cost
    from workers.producer import stream_lines

    if file != "-":
        input_file(file, hint="pass a JSONL file, or - for stdin")
    check_max_cost(max_cost)
    if repair and (not batch_id or file == "-"):
        raise TurnoutError("--repair needs the batch's input FILE and its --batch-id")
    client = _client(config_path)
    batch = batch_id or new_batch_id()
    if repair:
        client.status(batch)  # one that does not exist is an error
    if max_cost is not None:  # before anything is sent: a resumed or repaired batch's next calls obey it too
        _warn(client.ledger.set_max_cost(batch, max_cost))
    if repair:
        from workers.producer import Producer, file_lines

        producer = Producer(client.app, client.config, client.ledger)
        if producer.batch_pending(batch):
            raise TurnoutError(f"tasks of batch {batch} are still queued or in flight; --repair is for a batch that stopped short")
        resent = producer.resend_missing(file_lines(file), batch)
        err.print(f"sent {resent} missing lines again")
        print(batch)
        return
    source = stream_lines(sys.stdin.buffer) if file == "-" else file
    report = client.submit_report(source, batch)
    err.print(f"enqueued {report.enqueued} jobs, {report.rejected} lines rejected, in {report.seconds:.1f}s")
    print(batch)


@app.command()
def worker(
    pool: Annotated[str, typer.Option(help="classify, or a tier name from the config.")],
    config_path: ConfigOption = DEFAULT_CONFIG,
    processes: Annotated[Optional[int], typer.Option(help="Worker processes; default from the config.")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    name: Annotated[Optional[str], typer.Option(help="Node name; default <pool>@%h. Give each local copy its own.")] = None,
) -> None:
    """Run a Celery worker for one pool: the classifier, or one tier's model calls."""
    from workers.app import CLASSIFY_QUEUE, create_app, preflight, redis_url_for
    from workers.broker import check, service_wait_s

    config = _config(config_path)
    url = redis_url_for(config)
    celery = create_app(config, url)
    # the model, the verifier, the API keys: checked, and the files loaded once, before fork,
    # so a bad one stops the worker here in one sentence instead of failing every task (and
    # before waiting for Redis: a fix in the config should not wait on a Redis coming up)
    preflight(config, [pool], celery.turnout_runtime)
    check(url, service_wait_s())  # a Redis started beside it may come up a little later
    if pool == CLASSIFY_POOL:
        queue, count = CLASSIFY_QUEUE, processes or config.classify_processes
    else:
        tier = config.tier(pool)
        queue, count = f"{tier.queue},{tier.guard_queue}", processes or tier.processes
        _check_fake_provider_findable(config, tier)
        _say_unpriced(config)
        # import LiteLLM (seconds) once, before fork: a pool process that replaces a dead one
        # then answers at once instead of importing it again (it starts no threads at import)
        import workers.provider  # noqa: F401
    argv = ["worker", "-Q", queue, "-c", str(count), "-P", "prefork", "-n", name or f"{pool}@%h", "-l", loglevel]
    celery.worker_main(argv + ["--without-mingle", "--without-gossip", "-E"])


def _check_fake_provider_findable(config: Config, tier: Any) -> None:
    """A worker started on its own (not by `turnout run`, which starts the fake provider and says
    where) must be told where an ``api_base: fake`` deployment's fake provider listens, or every
    call fails and every job ends in the dead-letter queue."""
    from urllib.parse import urlsplit

    from schemas.config import FAKE_API_BASE
    from workers.provider import fake_base_url

    fake = [d.name or d.model for d in tier.deployments if d.api_base == FAKE_API_BASE]
    if fake and urlsplit(fake_base_url(config)).port == 0:
        raise TurnoutError(
            f"tier {tier.name}: deployment {fake[0]} has api_base fake (the offline fake provider) but no port to find it "
            "on: set fake_provider.port to where `turnout fake-provider` listens (or TURNOUT_FAKE_URL), or give the tier "
            "real providers (deploy/k8s/turnout.yaml is a config that does)"
        )


@app.command()
def status(
    batch_id: Annotated[Optional[str], typer.Argument(help="A batch id; default shows every unfinished batch and the 10 newest complete ones.")] = None,
    config_path: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object and exit.")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep the view live until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 2.0,
) -> None:
    """Batches' progress and cost, tiers' queues, DLQs and recommended workers."""
    from workers.status import render, view

    client = _client(config_path, after_run=True)
    if as_json:
        print(json.dumps(view(client, batch_id, interval=0.5), indent=2))
        return
    if not watch:
        out.print(render(view(client, batch_id, interval=0.5)))
        return
    from rich.live import Live

    def frame(seconds: float) -> Any:
        try:
            return render(view(client, batch_id, interval=seconds))
        except RedisError:
            if _run_ended():
                return None
            raise

    def frames() -> Iterator[Any]:
        shown = frame(0.2)
        while shown is not None:
            yield shown
            time.sleep(max(interval - 0.2, 0.0))  # out of Redis's way: a run ending now is seen before the next read
            shown = None if _run_ended() else frame(0.2)

    if not out.is_terminal:  # piped or logged: a frame per refresh, not a live view nobody sees
        for shown in frames():
            out.print(shown)
    else:
        with Live(console=out, refresh_per_second=2) as live:
            for shown in frames():
                live.update(shown)
    err.print("the `turnout run` this watched has ended, and its Redis with it; `turnout status` reads its batches now")


@app.command()
def scale(
    config_path: ConfigOption = DEFAULT_CONFIG,
    interval: Annotated[float, typer.Option(help="Seconds to watch arrivals before recommending.")] = 5.0,
    drain_s: Annotated[float, typer.Option(help="Drain today's backlog within this many seconds.")] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recommend worker processes per tier (Little's law, capped by the rate limits)."""
    import time as _time

    from workers.scaling import recommendations, snapshot
    from workers.status import held_jobs, in_flight

    client = _client(config_path, live=True)
    before = snapshot(client.config, client.ledger.redis)
    _time.sleep(interval)
    held = held_jobs(in_flight(client.config, client.ledger.redis))
    advice = recommendations(client.config, before, snapshot(client.config, client.ledger.redis), drain_s, held)
    if as_json:
        print(json.dumps([r.__dict__ | {"note": r.note} for r in advice], indent=2))
        return
    table = Table(show_edge=False)
    for column in ("tier", "arrivals/s", "queued", "latency", "processes", "why"):
        table.add_column(column)
    for r in advice:
        table.add_row(r.tier, f"{r.arrival_per_s:.1f}", str(r.queued_jobs), f"{r.latency_s:.2f}s", str(r.processes), r.note)
    out.print(table)


@app.command()
def collect(
    batch_id: Annotated[str, typer.Argument(help="The batch id `turnout submit` printed.")],
    config_path: ConfigOption = DEFAULT_CONFIG,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write output.jsonl, errors.jsonl, report.json here.")] = None,
    wait_: Annotated[bool, typer.Option("--wait", help="Wait until the batch is complete first.")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Write result lines to stdout as they complete.")] = False,
    delete: Annotated[bool, typer.Option("--delete", help="Then delete the complete batch from Redis (see `turnout delete`).")] = False,
    spill_: Annotated[bool, typer.Option("--spill", help="With --wait: move finished answers out of Redis into a file under the state dir as they come.")] = False,
) -> None:
    """Write a batch's results to files, or stream them to stdout with --follow."""
    if delete and follow:
        raise TurnoutError("--delete needs files to keep the results in: use --out DIR, not --follow")
    if spill_ and not wait_:
        raise TurnoutError("--spill moves answers out of Redis while the batch runs: use it with --wait")
    # waiting or following needs pools: a configured Redis, or the one a `turnout run` serves now
    client = _client(config_path, after_run=not (wait_ or follow), live=wait_ or follow)
    if follow:
        for raw in client.raw_results(batch_id):
            sys.stdout.buffer.write(raw + b"\n")
            sys.stdout.flush()
        return
    if out_dir is None:
        raise TurnoutError("say where to write the results: --out DIR (or use --follow for stdout)")
    if wait_:
        _wait(client, batch_id, spill_)
    report = client.collect(batch_id, out_dir)
    err.print(f"wrote {report.output_lines} output and {report.error_lines} error lines to {out_dir}")
    status = client.status(batch_id)
    if not status.complete:
        missing = f"{status.submitted - status.done} of {status.submitted}" if status.sealed else "some"
        err.print(f"[yellow]batch {batch_id} is not complete ({missing} lines to come): these files are partial; --wait waits for it[/yellow]")
    if delete:
        _delete_batch(client, batch_id, force=False, drop_spill=True)  # its lines are in out_dir now


def _wait(client: Any, batch_id: str, spill_: bool) -> None:
    """Wait for the batch; repair it if it stalls (lines lost with a killed worker) and, with
    ``spill_``, move finished answers out of Redis as they come."""
    from workers.collector import PeriodicSpill, ProgressLog, wait
    from workers.repair import StallWatch

    client.status(batch_id)  # an unknown batch fails here, in one sentence
    spill = PeriodicSpill(client.ledger, batch_id, Path(client.config.state_dir))
    stall = StallWatch(client, batch_id, client.input_path(batch_id), err.print)
    progress = ProgressLog(lambda line: err.print(line, highlight=False))  # silent otherwise, however long it waits

    def on_progress(status: Any) -> None:
        progress(status)
        stall.check(status)
        if spill_:
            spill()

    wait(client.ledger, batch_id, on_progress=on_progress)


@app.command()
def delete(
    batch_id: Annotated[str, typer.Argument(help="The batch to delete.")],
    config_path: ConfigOption = DEFAULT_CONFIG,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Also delete a batch that is not complete.")] = False,
) -> None:
    """Free a batch's Redis memory: its lines, counters and dead letters (collect it first).

    A tombstone stays for a week, so a late re-delivery of one of its jobs is skipped, not run again.
    """
    client = _client(config_path, after_run=True)
    if not yes and not typer.confirm(f"Delete batch {batch_id} and its results from Redis?"):
        raise typer.Abort()
    _delete_batch(client, batch_id, force, drop_spill=False)


def _delete_batch(client: Any, batch_id: str, force: bool, drop_spill: bool) -> None:
    from workers.collector import hold_spill_lease
    from workers.dlq import DeadLetters

    status = client.status(batch_id)  # raises, naming the fix, for an unknown batch
    if not status.complete and not force:
        raise TurnoutError(
            f"batch {batch_id} is not complete ({status.done} of {status.submitted} lines); "
            "its pending jobs would be skipped: wait for it, or pass --force"
        )
    hold_spill_lease(client.ledger, batch_id)  # no spill round may run into the delete; it goes with the batch
    letters = DeadLetters(client.ledger.redis)
    doomed = list(letters.entries([t.name for t in client.config.tiers], batch_id))
    for letter in doomed:
        letters.remove(letter)
    spill_file, _, _ = client.ledger.spill_state(batch_id)
    client.ledger.delete(batch_id)
    if spill_file and (drop_spill or (Path(spill_file).is_file() and not Path(spill_file).stat().st_size)):
        Path(spill_file).unlink(missing_ok=True)  # collected, or empty: nothing in it to keep
    elif spill_file and Path(spill_file).exists():
        err.print(f"kept {spill_file}, which holds answers spilled out of Redis; remove it once you have them")
    err.print(f"deleted batch {batch_id} from Redis ({len(doomed)} dead letters with it)")


# --- operating ------------------------------------------------------------------------------

LOCALHOST = ("127.0.0.1", "localhost", "::1")


@app.command()
def flower(
    config_path: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str, typer.Option(help="Address to listen on; beyond localhost, FLOWER_BASIC_AUTH is required.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5555,
) -> None:
    """Start Flower on turnout's broker: every pool, every task by stage and tier.

    Basic auth comes from FLOWER_BASIC_AUTH=user:password (Flower reads it itself, so the
    password never shows in the process list); it is required beyond localhost.
    """
    from workers.app import create_app
    from workers.broker import check, service_wait_s

    if host not in LOCALHOST and not os.environ.get("FLOWER_BASIC_AUTH"):
        raise TurnoutError(f"Flower would listen on {host} without a password; set FLOWER_BASIC_AUTH=user:password")
    config = _config(config_path)
    url = live_redis_url(config)
    check(url, service_wait_s())  # a Redis started beside it may come up a little later
    _end_with_the_run("Flower")
    if host in LOCALHOST and not os.environ.get("FLOWER_BASIC_AUTH"):
        os.environ.setdefault("FLOWER_UNAUTHENTICATED_API", "true")  # only this machine can reach it
    create_app(config, url).start(argv=["flower", f"--address={host}", f"--port={port}"])


@app.command()
def metrics(
    config_path: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for /metrics.")] = 9808,
) -> None:
    """Serve Prometheus metrics: queue depths, jobs, costs, fallbacks, latency, DLQ depth."""
    from workers.broker import check, connect, service_wait_s
    from workers.metrics import serve

    config = _config(config_path)
    url = live_redis_url(config)
    check(url, service_wait_s())  # a Redis started beside it may come up a little later
    _end_with_the_run("the metrics endpoint")
    err.print(f"serving metrics on http://{host}:{port}/metrics")
    serve(config, connect(url), host, port)


@app.command("worker-ping")
def worker_ping(
    pool: Annotated[str, typer.Option(help="The pool whose worker on this host should answer.")],
    config_path: ConfigOption = DEFAULT_CONFIG,
    name: Annotated[Optional[str], typer.Option(help="The worker's node name, if not <pool>@<hostname>.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 5.0,
) -> None:
    """Exit 0 if this host's worker for POOL answers a ping through the broker (a liveness probe)."""
    import socket

    from workers.app import create_app, redis_url_for

    config = _config(config_path)
    if pool != CLASSIFY_POOL:
        config.tier(pool)  # one sentence naming the tiers, not a wait for a worker that cannot exist
    node = (name or f"{pool}@%h").replace("%h", socket.gethostname())
    replies = create_app(config, redis_url_for(config)).control.ping(destination=[node], timeout=timeout)
    if not any(node in reply for reply in replies):
        err.print(f"worker {node} did not answer within {timeout:.0f}s")
        raise typer.Exit(1)
    err.print(f"worker {node} answered")


@app.command()
def report(
    batch_id: Annotated[str, typer.Argument(help="The batch to report on.")],
    config_path: ConfigOption = DEFAULT_CONFIG,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
) -> None:
    """Write one self-contained HTML report: tier mix, cost, latency, errors, fallbacks, throughput."""
    from workers.report import write_report

    client = _client(config_path, after_run=True)
    client.status(batch_id)
    err.print(f"wrote {write_report(client.ledger, batch_id, out_path)}")


# --- routing without model calls ------------------------------------------------------------


@app.command()
def classify(
    file: Annotated[Path, typer.Argument(help="JSONL input, as for `turnout run` (- reads stdin).")],
    config_path: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Dry-run routing: one {custom_id, tier, score} line per input line, a summary on stderr."""
    from workers.routing import dry_run

    if str(file) != "-":
        input_file(file)
    config = _config(config_path)
    summary = dry_run(config, file, sys.stdout)
    err.print(summary)
    _say_unpriced(config)


def _say_unpriced(config: Config) -> None:
    note = config.unpriced_note()
    if note:
        err.print(f"[yellow]{note}[/yellow]", highlight=False)


# --- the routing tuner's commands ----------------------------------------------------------


@app.command()
def train(
    data: Annotated[
        list[Path],
        typer.Argument(help='Labeled JSONL files: {"id", "prompt", "weak", "strong"} per line; weak and strong are each '
                       "model's quality on the prompt (1/0 correct, or grades on one scale for all rows: the largest "
                       "strong-weak gap seen counts as the whole range). At least 50 rows of multiple-choice or word-problem prompts."),
    ],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Model file to write (.json); its card (.md) goes beside it.")],
    folds: Annotated[int, typer.Option(help="Cross-validation folds for the card's held-out figures (0: none).")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for the folds.")] = 0,
) -> None:
    """Train a router model (JSON weights, no pickle) and write its model card."""
    from router.training import train as train_model

    _check_training_inputs(data, folds, out_path)  # the output path's name and folder: train_model checks them
    report = train_model(data, out_path, folds=folds, seed=seed, log=lambda message: err.print(message))
    for dataset, figures in report.held_out.items():
        cpt = figures["cpt"]
        err.print(f"{dataset:>8}: CPT20 {cpt['20%']:.1%}  CPT50 {cpt['50%']:.1%}  CPT80 {cpt['80%']:.1%}  APGR {figures['apgr']:.3f}")
    out.print(f"wrote {report.model_path} and {report.card_path} in {report.seconds:.0f}s")


def _check_training_inputs(data: list[Path], folds: int, out_path: Path) -> None:
    _once_each(data)
    for path in data:
        input_file(path, "training data")
        if path.resolve() in (out_path.resolve(), out_path.with_suffix(".md").resolve()):
            raise TurnoutError(f"-o {out_path} would overwrite the training data {path} (with the model or its card); give another name")
    if folds < 0 or folds == 1:
        raise TurnoutError(f"--folds {folds}: give 0 (no held-out figures) or a number of folds from 2")


def _once_each(data: list[Path]) -> None:
    """Refuse a data file given twice (its rows would count twice)."""
    seen: dict[Path, Path] = {}
    for path in data:
        first = seen.setdefault(path.resolve(), path)
        if first is not path:
            same = "" if str(first) == str(path) else f" (as {first})"
            raise TurnoutError(f"{path} is given twice{same}: its rows would count twice; name each file once")


@app.command("eval")
def evaluate(
    data: Annotated[list[Path], typer.Argument(help="Labeled JSONL files to evaluate on (prompts the router never saw).")],
    router_name: Annotated[
        Optional[str],
        typer.Option("--router", help="heuristic, default (the shipped model) or a model file; default: the config's classifier."),
    ] = None,
    config_path: ConfigOption = DEFAULT_CONFIG,
    plot: Annotated[Path, typer.Option(help="PNG of quality against share of strong calls (one per dataset).")] = Path("eval.png"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    policy: Annotated[str, typer.Option(help="route (RouteLLM metrics) or cascade (needs weak_response/strong_response).")] = "route",
    scorer: Annotated[Optional[str], typer.Option(help="The cascade's scorer kind (default: the config's cascade tier's, else format+verifier).")] = None,
    cost_aware: Annotated[
        Optional[bool],
        typer.Option("--cost-aware/--plain", help="Weigh the cascade's scores by what escalating costs (default: as the config's cascade tier)."),
    ] = None,
    verifier: Annotated[Optional[str], typer.Option(help="The cascade's verifier file (default: the config's cascade tier's, else the shipped one).")] = None,
) -> None:
    """RouteLLM's metrics for a router (CPT, APGR, cost at 95%), or with --policy cascade,
    quality against cost for the cascade, direct routing and random routing."""
    from workers.evaluation import run_cascade_eval, run_eval

    if policy not in ("route", "cascade"):
        raise TurnoutError(f"--policy is route or cascade, not {policy!r}")
    _once_each(data)
    # the figures go to stdout (with --json, the JSON does, and the table to stderr), uncut when piped
    shown = err if as_json else out if out.is_terminal else Console(width=160)
    # the config is optional here (it gives prices), unless named
    config = _config(config_path) if config_path.exists() or config_path != DEFAULT_CONFIG else None
    if router_name is None:  # as the workers choose: a model the config names, the shipped one, else the heuristic
        from router.classifier import DEFAULT_MODEL_PATH

        chosen = config.classifier if config else None
        named = (chosen and chosen.model_path) or ("default" if DEFAULT_MODEL_PATH.exists() else "heuristic")
        router_name = "heuristic" if chosen and chosen.kind == "heuristic" else named
    if policy == "cascade":
        tier = next((t for t in config.tiers if t.policy == "cascade" and t.scorer), None) if config else None
        kind = scorer or (tier.scorer.kind if tier and tier.scorer else "format+verifier")
        weigh = cost_aware if cost_aware is not None else bool(tier and tier.scorer and tier.scorer.cost_aware)
        model = verifier or (tier.scorer.model_path if tier and tier.scorer else None)
        result = run_cascade_eval(data, kind, router_name, config, plot, err, weigh, model, shown)
    else:
        if scorer or cost_aware is not None or verifier:
            raise TurnoutError("--scorer, --cost-aware and --verifier are for --policy cascade")
        result = run_eval(data, router_name, config, plot, err, shown)
    if as_json:
        print(json.dumps(result, indent=2))


@app.command()
def calibrate(
    data: Annotated[Path, typer.Argument(help="JSONL with prompts like the traffic to come (labeled or input lines).")],
    frontier_share: Annotated[Optional[float], typer.Option(help="Share of traffic for the strongest tier.")] = None,
    share: Annotated[Optional[list[str]], typer.Option(help="TIER=SHARE for each tier above the cheapest (repeatable).")] = None,
    config_path: ConfigOption = DEFAULT_CONFIG,
    write: Annotated[bool, typer.Option(help="Write the thresholds into the config file (its comments and layout kept).")] = False,
    by_kind: Annotated[
        bool,
        typer.Option(
            "--by-kind/--overall",
            help="By kind: open-ended prompts, which the trained router scores with the heuristic on a scale of its "
            "own, get the shares on thresholds of their own (min_score_by_kind); the trained kinds (choice, math) "
            "share min_score, as each scores the strong model's expected gain. Overall: one threshold for every prompt.",
        ),
    ] = True,
) -> None:
    """Pick tier thresholds that send the given share of traffic to each tier."""
    from workers.evaluation import calibrate_config

    fragment = calibrate_config(_config(config_path), config_path, data, frontier_share, share or [], write, by_kind)
    print(fragment, end="")
    if write:
        err.print(f"wrote these thresholds into {config_path}")


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help='JSONL with "prompt" and "response" (and "custom_id") per line.')],
    scorer: Annotated[str, typer.Option(help="format, logprob, verifier, or format+<kind>.")] = "format+verifier",
    cost_aware: Annotated[bool, typer.Option("--cost-aware", help="Weigh each score by what escalating its answer would cost.")] = False,
    verifier: Annotated[Optional[str], typer.Option(help="Verifier file for the verifier kinds (`turnout train-verifier`; default: the shipped one).")] = None,
) -> None:
    """Score answers: one {"custom_id", "score"} line each (higher = more likely good)."""
    from workers.evaluation import verify_lines

    if cost_aware and scorer == "format":
        raise TurnoutError("--cost-aware weighs a probability, and the format scorer gives pass or fail; pick another --scorer")
    count = verify_lines(file, scorer, sys.stdout, cost_aware, verifier)
    err.print(f"scored {count} answers with {scorer}")


@app.command("train-verifier")
def train_verifier(
    data: Annotated[list[Path], typer.Argument(help="JSONL with prompt, weak_response, strong_response, weak, strong.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Verifier file to write; its card goes beside it.")],
    folds: Annotated[int, typer.Option(help="Cross-validation folds for the card (0: none).")] = 5,
) -> None:
    """Train the answer verifier a cascade tier can score its answers with."""
    from router.verifier import train_verifier as train

    _check_training_inputs(data, folds, out_path)
    report = train(data, out_path, folds=folds, log=lambda message: err.print(message))
    for answers, figures in report.held_out.items():
        if isinstance(figures, dict) and figures.get("auc") is not None:
            err.print(f"{answers:>8} answers: AUC {figures['auc']:.3f} held out")
    out.print(f"wrote {report.model_path} and {report.card_path} in {report.seconds:.0f}s")


# --- dead-letter queues ----------------------------------------------------------------------

dlq_app = typer.Typer(help="Inspect, replay and purge the dead-letter queues (one per tier).", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
TierOption = Annotated[Optional[list[str]], typer.Option("--tier", "-t", help="Only this tier (repeatable).")]
BatchOption = Annotated[Optional[str], typer.Option("--batch", "-b", help="Only this batch.")]


def _dead_letters(config_path: Path) -> tuple[Any, Any]:
    from workers.dlq import DeadLetters

    client = _client(config_path, after_run=True)
    return client, DeadLetters(client.ledger.redis)


def _tiers(client: Any, tiers: Optional[list[str]]) -> list[str]:
    names = [tier.name for tier in client.config.tiers]
    for name in tiers or []:
        client.config.tier(name)  # a clear error for an unknown tier
    return tiers or names


@dlq_app.command("list")
def dlq_list(
    tier: TierOption = None,
    batch: BatchOption = None,
    config_path: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per dead letter, its reason whole.")] = False,
) -> None:
    """List dead letters in input order, batch by batch: id, tier, error code, attempts and
    reason (its first 80 characters; `dlq show ID` or --json for all of it)."""
    client, letters = _dead_letters(config_path)
    # in input order, batch by batch (a large Redis hash returns them in no order)
    found = sorted(letters.entries(_tiers(client, tier), batch), key=lambda letter: (letter.job.batch_id, letter.job.line, letter.tier))
    if as_json:
        for letter in found:
            print(json.dumps({"id": letter.id, "tier": letter.tier, "batch_id": letter.job.batch_id, "custom_id": letter.job.custom_id,
                              "code": letter.code, "attempts": letter.job.attempts, "reason": letter.reason}))
        return
    table = Table(show_edge=False)
    # the id whole, however narrow the terminal (`dlq show` and `replay` take it): the reason folds
    table.add_column("id", no_wrap=True, min_width=max((len(letter.id) for letter in found), default=2))
    for column in ("tier", "code", "attempts"):
        table.add_column(column)
    table.add_column("reason", overflow="fold")
    for letter in found:
        table.add_row(letter.id, letter.tier, letter.code, str(letter.job.attempts), letter.reason[:80])
    needed = sum(max((len(getattr(letter, name)) for letter in found), default=0) for name in ("id", "tier", "code")) + 50
    Console(width=max(out.width, needed)).print(table)  # wider than the terminal rather than cut


@dlq_app.command("show")
def dlq_show(letter_id: Annotated[str, typer.Argument(help="An id from `turnout dlq list`.")], config_path: ConfigOption = DEFAULT_CONFIG) -> None:
    """Print one dead letter as JSON: the job, every attempt's error, timestamps."""
    client, letters = _dead_letters(config_path)
    letter = letters.get(_tiers(client, None), letter_id)
    if letter is None:
        raise TurnoutError(f"no dead letter {letter_id!r}; `turnout dlq list` shows the ids")
    print(letter.model_dump_json(indent=2))


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[Optional[list[str]], typer.Argument(help="Dead-letter ids; default all that match the filters.")] = None,
    tier: TierOption = None,
    batch: BatchOption = None,
    config_path: ConfigOption = DEFAULT_CONFIG,
    max_cost: Annotated[
        Optional[float], typer.Option("--max-cost", metavar="USD", help="First set the batch's spending cap (with --batch): to replay `budget_spent` letters.")
    ] = None,
) -> None:
    """Put dead letters back on their tier queue; a job that already has a result adds nothing."""
    from workers.app import configured_redis_url
    from workers.dlq import replay
    from workers.ledger import check_max_cost, over_cap

    check_max_cost(max_cost)
    if max_cost is not None and not batch:
        raise TurnoutError("--max-cost sets one batch's cap: give --batch BATCH too")
    client, letters = _dead_letters(config_path)
    if max_cost is not None and batch:
        client.status(batch)  # one that does not exist is an error
        client.ledger.set_max_cost(batch, max_cost)
    batches: set[str] = set()
    count = replay(client.app, client.config, letters, _tiers(client, tier), batch, ids or None, batches)
    named = sorted(batches)
    for replayed in named:  # under a cap they have spent, the replayed lines would end as they did
        _warn(over_cap(replayed, *client.ledger.spending(replayed)))
    rerun = " or ".join(f"`turnout run {client.input_path(b) or 'FILE'} --batch-id {b}`" for b in named) or "`turnout run FILE`"
    said = f"replayed {count} dead letters" + (f" of batch {', '.join(named)}; " if named else "; ")
    if configured_redis_url(client.config):
        collect = f"`turnout collect {named[0] if len(named) == 1 else 'BATCH'} -o DIR --wait`"
        said += f"with pools running on this Redis, {collect} writes the results once they answer them; with none, {rerun} does"
    else:  # the embedded Redis of a stopped `turnout run`: its pools are gone with it
        said += f"{rerun} answers them and writes the results"
    err.print(said, highlight=False)


@dlq_app.command("purge")
def dlq_purge(
    tier: TierOption = None,
    batch: BatchOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config_path: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Delete dead letters for good (their error lines stay in the batch)."""
    client, letters = _dead_letters(config_path)
    doomed = list(letters.entries(_tiers(client, tier), batch))
    if not yes and not typer.confirm(f"Delete {len(doomed)} dead letters?"):
        raise typer.Abort()
    for letter in doomed:
        letters.remove(letter)
    err.print(f"purged {len(doomed)} dead letters")


# --- fake provider ---------------------------------------------------------------------------


@app.command("fake-provider")
def fake_provider(
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 8900,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    latency_ms: Annotated[float, typer.Option(help="Mean delay per request.")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Share of requests failing with 429/500/503.")] = 0.0,
    timeout_rate: Annotated[float, typer.Option(help="Share of requests that hang.")] = 0.0,
    context_limit: Annotated[Optional[int], typer.Option(help="Prompt tokens above this get 400 context_length_exceeded.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the random failures.")] = 0,
    ready_file: Annotated[Optional[str], typer.Option(help="Write the bound port here once listening.")] = None,
) -> None:
    """Serve an OpenAI-compatible fake model API for offline runs and tests."""
    from workers.fake_provider import FakeProviderOptions, serve

    options = FakeProviderOptions(
        latency_ms=latency_ms, error_rate=error_rate, timeout_rate=timeout_rate, context_limit=context_limit, seed=seed
    )
    serve(options, host, port, ready_file)


#: Exit status for Redis lost or refusing writes mid-command: a passing fault, unlike a user's
#: error (2), so `turnout run` restarts a pool that exits with it.
BROKER_LOST = 3


def _reflow_help(*typers: typer.Typer) -> None:
    """Each command's docstring as paragraphs: Typer keeps a docstring's single line breaks, which
    then break `--help`'s lines mid-sentence once it wraps them to the terminal."""
    import inspect

    for group in typers:
        for command in group.registered_commands:
            if command.callback is not None and command.callback.__doc__:
                paragraphs = inspect.cleandoc(command.callback.__doc__).split("\n\n")
                command.callback.__doc__ = "\n\n".join(" ".join(p.split("\n")) for p in paragraphs)


_reflow_help(app, dlq_app)


def redis_problem(exc: Exception) -> str:
    """One sentence for a Redis failure mid-command, and what to do about it."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OperationalError)):
        return (f"lost the connection to Redis ({exc}); what was recorded is kept there (with persistence on): once it "
                "is back, run the same command again to go on")
    if "MISCONF" in str(exc) or "OOM" in str(exc):
        return (f"Redis refused a write ({exc}); free disk space or memory where it runs (for `turnout run`, the state "
                "dir), then run the same command again to go on")
    return f"Redis failed a command: {exc}"


def main() -> None:
    """Entry point: run the CLI, turning turnout's errors into one line and exit status 2."""
    try:
        app()
    except TurnoutError as exc:
        err.print(f"turnout: error: {exc}", highlight=False, markup=False, soft_wrap=True)  # one line, however long
        sys.exit(2)
    except OSError as exc:  # a file or directory it cannot use: the errno's sentence names it
        err.print(f"turnout: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except (RedisError, OperationalError) as exc:  # Redis went away, or refused a write, mid-command
        err.print(f"turnout: error: {redis_problem(exc)}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(BROKER_LOST)  # not 2: `turnout run` restarts a pool that exits so, and stops on a user error
    except KeyboardInterrupt:
        err.print("turnout: interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
