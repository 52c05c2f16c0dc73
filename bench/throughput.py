"""turnout end to end beside a bare ``litellm.acompletion`` loop, on the same fake provider.

    python bench/throughput.py [--latency-ms 0] [--jobs 5000] [--processes 2] [--inflight 256]
                               [--slow-share 0] [--slow-s 3] [--repeat 3]
                               [--classifier auto|heuristic|trained] [--json]

One run starts, in a temp dir: the fake provider (a subprocess, at ``--latency-ms``), a
private Redis (EmbeddedRedis), turnout's pools (workers.supervisor.Supervisor: the classify
pool with 1 process and ONE tier, ``cheap``, with ``--processes`` processes, a primary and a
backup deployment on ``api_base: fake``), and ``--processes`` bare-loop processes. Then:

1. Redis memory per queued job and the producer's enqueue rate: ``--jobs`` jobs are
   submitted through workers.client.Client before any pool is started, so nothing consumes;
   used_memory after minus before, divided by the job count. The queue is then emptied.
2. Warm-up (not timed): a small batch through the pools, and a small loop in each bare
   process, so LiteLLM's import (~6 s), Router construction and HTTP sessions are paid.
3. ``--repeat`` times, alternating: ``--jobs`` jobs through the whole pipeline (producer →
   classify → tier → ledger), then the same jobs through the bare loop. The table shows the
   median of the runs; a ratio is taken within one run, then the median of the ratios.

Stragglers: with ``--slow-share`` above 0, that share of calls (on both sides) takes
``--slow-s`` seconds longer than the rest (the fake provider's ``timeout_rate`` and ``hang_s``,
set after the warm-up), as real calls with long answers do. A micro-batch then waits for its
slowest call unless the tier hands its stragglers off (the tier's ``hand_off_after``;
``--hand-off-after 0`` turns that off, to compare).

Sizing: the same number of calls in flight on both sides (``--inflight``, split over the
processes). turnout's tier batch_size = ceil(inflight / processes), and chunk_size (jobs per
classify task) = batch_size, because a tier task never carries more jobs than the classify
chunk it came from. The bare loop holds inflight / processes calls per process (a semaphore).

CPU is user+sys of every process on each side, read from /proc/<pid>/stat (a pool's Celery
parent and its prefork children; utime+stime+cutime+cstime), excluding the fake provider.
turnout's side counts the classify pool, the tier pool, Redis, and the producer (the thread
time of ``submit_report`` in this process); the bench's own polling is not counted.

End-to-end latency per job: from the moment its chunk was enqueued (the producer's progress
callback, per chunk) to the moment its line was recorded (the ms timestamp in the id of its
entry in the batch's events stream; same machine, same clock). Every job is submitted at
once, so this includes queueing behind the rest of the batch; the bare loop's figure is
measured the same way (from the start of its run to each call's completion).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

FAKE_KEY = "fake-provider-key"
MODEL = "openai/fake-cheap"
INPUT_COST_PER_M = 0.15
OUTPUT_COST_PER_M = 0.60
CLK_TCK = os.sysconf("SC_CLK_TCK")

_TOPICS = ("the water cycle", "compound interest", "binary search", "photosynthesis", "the French revolution",
           "TCP congestion control", "supply and demand", "plate tectonics", "vaccines", "hash tables")
_ASKS = ("Explain briefly", "Summarise in one sentence", "Compare with an alternative and justify",
         "Give one example of", "List three facts about", "Explain step by step")


def prompt(i: int) -> str:
    """A ~100-byte prompt, varied enough that the classifier does real work."""
    ask = _ASKS[i % len(_ASKS)]
    topic = _TOPICS[(i // len(_ASKS)) % len(_TOPICS)]
    text = f"{ask} {topic} for a curious reader; job {i}, keep it short and plain."
    return text.ljust(100, ".")


def job_lines(prefix: str, n: int) -> list[bytes]:
    return [json.dumps({"custom_id": f"{prefix}{i:07d}", "prompt": prompt(i)}).encode() + b"\n" for i in range(n)]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- CPU from /proc ------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime+cutime+cstime in seconds) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            data = handle.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()  # rest[0] is field 3 (state)
    ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return int(rest[1]), ticks / CLK_TCK


def tree_cpu(roots: list[int]) -> dict[int, float]:
    """CPU seconds of each process in the trees under ``roots`` (descendants found by ppid)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                stats[int(entry)] = found
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, float] = {}
    todo = [pid for pid in roots if pid in stats]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out[pid] = stats[pid][1]
        todo.extend(children.get(pid, []))
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots; a process that appeared counts from zero."""
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


# --- the bare loop (runs in its own processes: `throughput.py --bare-worker URL INFLIGHT`) ---------


def bare_worker(url: str, inflight: int) -> None:
    """Serve commands on stdin: `warm N`, `run START N`, `exit`; answer one JSON line each."""
    import logging

    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    loop = asyncio.new_event_loop()  # one persistent loop, like turnout's tier workers

    async def run(start: int, n: int) -> dict[str, Any]:
        sem = asyncio.Semaphore(inflight)
        t0 = time.perf_counter()
        done: list[float] = []
        errors: list[str] = []

        async def one(i: int) -> None:
            async with sem:
                try:
                    response = await litellm.acompletion(
                        model=MODEL,
                        messages=[{"role": "user", "content": prompt(i)}],
                        api_base=url,
                        api_key=FAKE_KEY,
                        timeout=60,
                        max_retries=0,
                        input_cost_per_token=INPUT_COST_PER_M / 1e6,
                        output_cost_per_token=OUTPUT_COST_PER_M / 1e6,
                    )
                    _ = response.choices[0].message.content, response.usage
                except Exception as exc:  # counted, not raised: the bench reports it
                    errors.append(type(exc).__name__)
            done.append(time.perf_counter() - t0)

        await asyncio.gather(*(one(i) for i in range(start, start + n)))
        return {"wall_s": time.perf_counter() - t0, "done_s": done, "errors": len(errors),
                "error_kinds": sorted(set(errors))}

    print(json.dumps({"ready": True}), flush=True)
    for raw in sys.stdin:
        cmd = raw.split()
        if not cmd or cmd[0] == "exit":
            break
        if cmd[0] == "warm":
            result = loop.run_until_complete(run(10_000_000, int(cmd[1])))
        else:
            result = loop.run_until_complete(run(int(cmd[1]), int(cmd[2])))
        print(json.dumps(result), flush=True)


class BareLoop:
    """``processes`` bare-loop processes, each holding inflight/processes calls in flight."""

    def __init__(self, url: str, processes: int, inflight: int) -> None:
        self.per_process = max(1, math.ceil(inflight / processes))
        argv = [sys.executable, str(Path(__file__).resolve()), "--bare-worker", url, str(self.per_process)]
        self.procs = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
                      for _ in range(processes)]
        for proc in self.procs:
            self._read(proc)  # ready

    @staticmethod
    def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("a bare-loop process died")
        return json.loads(line)

    def _send(self, proc: subprocess.Popen[str], text: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(text + "\n")
        proc.stdin.flush()

    def warm(self, n: int) -> None:
        for proc in self.procs:
            self._send(proc, f"warm {n}")
        for proc in self.procs:
            self._read(proc)

    def run(self, jobs: int) -> dict[str, Any]:
        pids = [p.pid for p in self.procs]
        share = math.ceil(jobs / len(self.procs))
        cpu0 = tree_cpu(pids)
        t0 = time.perf_counter()
        starts = []
        for k, proc in enumerate(self.procs):
            n = min(share, jobs - k * share)
            starts.append(n)
            self._send(proc, f"run {k * share} {n}")
        results = [self._read(proc) for proc in self.procs]
        wall = time.perf_counter() - t0
        cpu = cpu_delta(cpu0, tree_cpu(pids))
        done = [d for r in results for d in r["done_s"]]
        return {
            "jobs": len(done),
            "errors": sum(r["errors"] for r in results),
            "wall_s": wall,
            "jobs_per_s": len(done) / wall,
            "cpu_s": cpu,
            "cpu_ms_per_job": 1000 * cpu / max(1, len(done)),
            "p50_latency_s": pct(done, 0.50),
            "p95_latency_s": pct(done, 0.95),
        }

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    self._send(proc, "exit")
                    proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait()


# --- turnout's side --------------------------------------------------------------------------


def write_config(path: Path, args: argparse.Namespace, batch_size: int, fake_port: int) -> None:
    import yaml

    config = {
        "chunk_size": batch_size,
        "high_water": max(50_000, 4 * args.jobs),
        "classify_processes": 1,
        "classifier": {"kind": args.classifier},
        "fake_provider": {"port": fake_port, "latency_ms": args.latency_ms},
        "tiers": [
            {
                "name": "cheap",
                "min_score": 0.0,
                "batch_size": batch_size,
                "processes": args.processes,
                **({} if args.hand_off_after is None else {"hand_off_after": args.hand_off_after or None}),
                "models": ["gpt-4o-mini"],
                "deployments": [
                    {"model": MODEL, "name": "cheap-primary", "api_base": "fake",
                     "input_cost_per_million": INPUT_COST_PER_M, "output_cost_per_million": OUTPUT_COST_PER_M},
                    {"model": "openai/fake-cheap-backup", "name": "cheap-backup", "api_base": "fake",
                     "input_cost_per_million": 0.20, "output_cost_per_million": 0.80},
                ],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@dataclass
class Turnout:
    client: Any
    supervisor: Any
    redis_pid: int
    runs: int = 0
    pools: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pools = {child.name: [child.process.pid] for child in self.supervisor.children}

    def _cpu(self) -> dict[str, dict[int, float]]:
        snap = {name: tree_cpu(pids) for name, pids in self.pools.items()}
        snap["redis"] = tree_cpu([self.redis_pid])
        return snap

    def run(self, jobs: int, batch_id: str, timeout: float = 900.0) -> dict[str, Any]:
        ledger = self.client.ledger
        lines = job_lines(f"{batch_id}-", jobs)
        marks: list[tuple[int, float]] = []

        def progress(report: Any) -> None:
            marks.append((report.enqueued, time.time()))

        cpu0 = self._cpu()
        t0 = time.time()
        thread0 = time.thread_time()
        report = self.client.submit_report(lines, batch_id, progress)
        producer_cpu = time.thread_time() - thread0
        deadline = time.monotonic() + timeout
        while True:
            status = ledger.status(batch_id)
            if status is not None and status.complete:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"turnout did not finish {batch_id} in {timeout:.0f}s: {status}")
            time.sleep(0.05)
        cpu1 = self._cpu()
        wall = (status.updated_at or time.time()) - t0
        cpu = {name: cpu_delta(cpu0[name], cpu1[name]) for name in cpu1}
        cpu["producer"] = producer_cpu
        total = sum(cpu.values())
        latencies, provider = self._latencies(batch_id, marks)
        classify_cpu = sum(v for k, v in cpu.items() if k == "pool-classify")
        return {
            "jobs": status.done,
            "errors": status.failed,
            "wall_s": wall,
            "jobs_per_s": status.done / wall,
            "enqueue_jobs_per_s": report.enqueued / report.seconds if report.seconds else float("nan"),
            "cpu_s": total,
            "cpu_ms_per_job": 1000 * total / max(1, status.done),
            "cpu_ms_per_job_by_part": {k: 1000 * v / max(1, status.done) for k, v in cpu.items()},
            "classifier_cpu_share": classify_cpu / total if total else float("nan"),
            "p50_latency_s": pct(latencies, 0.50),
            "p95_latency_s": pct(latencies, 0.95),
            "provider_p50_latency_s": pct(provider, 0.50),
            "provider_p95_latency_s": pct(provider, 0.95),
        }

    def _latencies(self, batch_id: str, marks: list[tuple[int, float]]) -> tuple[list[float], list[float]]:
        """End-to-end seconds per job (enqueue mark → events-stream timestamp), and provider-call seconds."""
        from workers.ledger import BatchKeys

        keys = BatchKeys(batch_id)
        redis = self.client.ledger.redis
        counts = [m[0] for m in marks]
        import bisect

        e2e = []
        for entry_id, fields in redis.xrange(keys.events):
            ms = int(entry_id.split(b"-")[0])
            index = int(fields[b"k"].rsplit(b"-", 1)[1])  # custom_id "<batch>-0000123" is line index+1
            submitted = marks[min(len(marks) - 1, bisect.bisect_left(counts, index + 1))][1]
            e2e.append(ms / 1000 - submitted)
        provider = [json.loads(v)["turnout"]["latency_s"] for _, v in redis.hscan_iter(keys.out, count=1000)]
        return e2e, provider


def queued_memory(client: Any, jobs: int) -> dict[str, Any]:
    """Enqueue ``jobs`` with no worker running; Redis bytes per queued job, by key, and the enqueue rate."""
    from workers.app import CLASSIFY_QUEUE
    from workers.ledger import BatchKeys

    redis = client.ledger.redis
    batch_id = "bench-memory"
    before = int(redis.info("memory")["used_memory"])
    report = client.submit_report(job_lines("mem-", jobs), batch_id)
    after = int(redis.info("memory")["used_memory"])
    keys = BatchKeys(batch_id)
    by_key = {name: int(redis.memory_usage(key, samples=0) or 0) for name, key in (("queue", CLASSIFY_QUEUE), ("meta", keys.meta))}
    by_key["ids"] = client.ledger.id_bytes(batch_id)
    message = redis.lindex(CLASSIFY_QUEUE, 0) or b""
    result = {
        "jobs": report.enqueued,
        "bytes_per_job": (after - before) / max(1, report.enqueued),
        "bytes_per_job_by_key": {k: v / max(1, report.enqueued) for k, v in by_key.items()},
        "message_bytes": len(message),
        "jobs_per_message": client.config.chunk_size,
        "enqueue_jobs_per_s": report.enqueued / report.seconds,
    }
    redis.delete(CLASSIFY_QUEUE)
    client.ledger.delete(batch_id)
    return result


def classifier_cost(config: Any, jobs: int) -> float:
    """Microseconds of scoring per prompt, in chunks like the classify task's (this process)."""
    from router.classifier import load_classifier

    classifier = load_classifier(config.classifier)
    texts = [prompt(i) for i in range(min(jobs, 5000))]
    size = config.chunk_size
    classifier.score_batch(texts[:size])
    started = time.process_time()
    for i in range(0, len(texts), size):
        classifier.score_batch(texts[i : i + size])
    return 1e6 * (time.process_time() - started) / len(texts)


def teardown(tmp: Path, keep: bool, *running: Any, fake: subprocess.Popen[bytes] | None = None) -> None:
    """Stop what a bench started (anything with ``stop()``; None for what never started), in
    order, then the fake provider; remove the temp dir unless asked to keep it."""
    for thing in running:
        if thing is not None:
            thing.stop()
    if fake is not None:
        fake.terminate()
        fake.wait(timeout=10)
    if keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def start_fake_provider(tmp: Path, latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    ready = tmp / "fake.port"
    argv = [sys.executable, "-m", "workers.cli", "fake-provider", "--port", "0", "--ready-file", str(ready),
            "--latency-ms", str(latency_ms)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=open(tmp / "fake.log", "wb"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ready.exists() and ready.read_text().strip():
            return proc, f"http://127.0.0.1:{int(ready.read_text())}/v1"
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"the fake provider did not start; see {tmp / 'fake.log'}")


# --- the run ---------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from schemas.config import load_config
    from workers.broker import EmbeddedRedis
    from workers.client import Client
    from workers.fake_provider import configure, fetch_stats
    from workers.supervisor import Supervisor

    tmp = Path(tempfile.mkdtemp(prefix="turnout-bench-"))
    batch_size = max(1, math.ceil(args.inflight / args.processes))
    fake = embedded = supervisor = bare = None
    try:
        fake, fake_url = start_fake_provider(tmp, args.latency_ms)
        embedded = EmbeddedRedis(tmp / "state")
        url = embedded.start()
        assert embedded.process is not None
        config_path = tmp / "turnout.yaml"
        write_config(config_path, args, batch_size, int(fake_url.rsplit(":", 1)[1].split("/")[0]))
        config = load_config(config_path)
        env = dict(os.environ, TURNOUT_REDIS_URL=url, TURNOUT_CONFIG=str(config_path), TURNOUT_FAKE_URL=fake_url,
                   LITELLM_LOCAL_MODEL_COST_MAP="True")
        os.environ["TURNOUT_FAKE_URL"] = fake_url
        log(f"fake provider {fake_url} ({args.latency_ms:g} ms), redis {url}")

        client = Client(config, url)
        memory = queued_memory(client, args.jobs)
        log(f"queued memory: {memory['bytes_per_job']:.0f} B/job; enqueue {memory['enqueue_jobs_per_s']:,.0f} jobs/s")
        scoring_us = classifier_cost(config, args.jobs)

        log(f"starting pools (classify ×1, cheap ×{args.processes}, batch {batch_size}) and {args.processes} bare processes")
        supervisor = Supervisor(config, config_path, env, tmp / "logs")
        supervisor.start_pools()
        bare = BareLoop(fake_url, args.processes, args.inflight)
        turnout = Turnout(client, supervisor, embedded.process.pid)
        warm = max(300, 4 * args.processes * batch_size)
        log(f"warm-up: {warm} jobs through turnout, {bare.per_process * 2} calls per bare process")
        turnout.run(warm, "bench-warm")
        bare.warm(bare.per_process * 2)
        if args.slow_share > 0:
            configure(fake_url, timeout_rate=args.slow_share, hang_s=args.slow_s)
            log(f"stragglers: {args.slow_share:.0%} of calls take {args.slow_s:g} s longer")

        runs = []
        for r in range(args.repeat):
            t = turnout.run(args.jobs, f"bench-run{r}")
            b = bare.run(args.jobs)
            runs.append({"turnout": t, "bare": b, "ratio": t["jobs_per_s"] / b["jobs_per_s"],
                         "cpu_ratio": t["cpu_ms_per_job"] / b["cpu_ms_per_job"]})
            log(f"run {r + 1}/{args.repeat}: turnout {t['jobs_per_s']:.0f} jobs/s {t['cpu_ms_per_job']:.2f} ms/job, "
                f"bare {b['jobs_per_s']:.0f} jobs/s {b['cpu_ms_per_job']:.2f} ms/job, ratio {runs[-1]['ratio']:.2f}")
        provider_stats = fetch_stats(fake_url)
    finally:
        teardown(tmp, args.keep, bare, supervisor, embedded, fake=fake)

    def med(side: str, key: str) -> float:
        return statistics.median(run[side][key] for run in runs)

    parts = {k: statistics.median(run["turnout"]["cpu_ms_per_job_by_part"][k] for run in runs)
             for k in runs[0]["turnout"]["cpu_ms_per_job_by_part"]}
    return {
        "latency_ms": args.latency_ms,
        "slow_share": args.slow_share,
        "slow_s": args.slow_s,
        "hand_off_after": config.tiers[0].hand_off_after,
        "jobs": args.jobs,
        "processes": args.processes,
        "inflight": args.inflight,
        "batch_size": batch_size,
        "classifier": args.classifier,
        "repeat": args.repeat,
        "turnout_jobs_per_s": med("turnout", "jobs_per_s"),
        "bare_jobs_per_s": med("bare", "jobs_per_s"),
        "ratio": statistics.median(run["ratio"] for run in runs),
        "turnout_cpu_ms_per_job": med("turnout", "cpu_ms_per_job"),
        "bare_cpu_ms_per_job": med("bare", "cpu_ms_per_job"),
        "cpu_ratio": statistics.median(run["cpu_ratio"] for run in runs),
        "turnout_cpu_ms_per_job_by_part": parts,
        "p50_latency_s": med("turnout", "p50_latency_s"),
        "p95_latency_s": med("turnout", "p95_latency_s"),
        "bare_p50_latency_s": med("bare", "p50_latency_s"),
        "bare_p95_latency_s": med("bare", "p95_latency_s"),
        "provider_p50_latency_s": med("turnout", "provider_p50_latency_s"),
        "provider_p95_latency_s": med("turnout", "provider_p95_latency_s"),
        "redis_bytes_per_queued_job": memory["bytes_per_job"],
        "redis_bytes_per_queued_job_by_key": memory["bytes_per_job_by_key"],
        "classify_message_bytes": memory["message_bytes"],
        "enqueue_jobs_per_s": memory["enqueue_jobs_per_s"],
        "enqueue_jobs_per_s_during_run": med("turnout", "enqueue_jobs_per_s"),
        "classifier_cpu_share": med("turnout", "classifier_cpu_share"),
        "classifier_scoring_us_per_job": scoring_us,
        "turnout_errors": sum(run["turnout"]["errors"] for run in runs),
        "bare_errors": sum(run["bare"]["errors"] for run in runs),
        "provider_requests_by_status": provider_stats.get("by_status"),
        "runs": runs,
    }


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    r = result
    slow = f" ({r['slow_share']:.0%} of calls {r['slow_s']:g} s slower)" if r["slow_share"] else ""
    slow += f", hand_off_after {r['hand_off_after']}"
    title = (f"{r['jobs']} jobs, {r['latency_ms']:g} ms provider latency{slow}, {r['processes']} processes, "
             f"{r['inflight']} in flight, median of {r['repeat']}")
    table = Table(title=title, show_edge=False)
    for column in ("", "turnout", "bare acompletion", "turnout / bare"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row("jobs/s", f"{r['turnout_jobs_per_s']:.0f}", f"{r['bare_jobs_per_s']:.0f}", f"{r['ratio']:.2f}")
    table.add_row("CPU ms/job", f"{r['turnout_cpu_ms_per_job']:.2f}", f"{r['bare_cpu_ms_per_job']:.2f}",
                  f"{r['cpu_ratio']:.2f}")
    table.add_row("p50 / p95 end-to-end s", f"{r['p50_latency_s']:.2f} / {r['p95_latency_s']:.2f}",
                  f"{r['bare_p50_latency_s']:.2f} / {r['bare_p95_latency_s']:.2f}", "")
    table.add_row("p50 / p95 provider call s", f"{r['provider_p50_latency_s']:.3f} / {r['provider_p95_latency_s']:.3f}",
                  "", "")
    table.add_row("errors", str(r["turnout_errors"]), str(r["bare_errors"]), "")
    console = Console()
    console.print(table)
    parts = ", ".join(f"{k.removeprefix('pool-')} {v:.2f}" for k, v in r["turnout_cpu_ms_per_job_by_part"].items())
    console.print(f"turnout CPU ms/job by part: {parts}", highlight=False)
    keys = ", ".join(f"{k} {v:.0f}" for k, v in r["redis_bytes_per_queued_job_by_key"].items())
    console.print(f"Redis per queued job: {r['redis_bytes_per_queued_job']:.0f} B (used_memory; by key: {keys}; "
                  f"one classify message of {r['batch_size']} jobs is {r['classify_message_bytes']} B)", highlight=False)
    console.print(f"producer enqueue: {r['enqueue_jobs_per_s']:,.0f} jobs/s with no worker running, "
                  f"{r['enqueue_jobs_per_s_during_run']:,.0f} jobs/s during the timed run", highlight=False)
    console.print(f"classifier ({r['classifier']}): {r['classifier_cpu_share']:.1%} of turnout's CPU "
                  f"(the classify pool); scoring alone {r['classifier_scoring_us_per_job']:.0f} µs/job", highlight=False)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--bare-worker":
        bare_worker(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fake provider latency per call")
    parser.add_argument("--slow-share", type=float, default=0.0, help="share of calls that are stragglers")
    parser.add_argument("--slow-s", type=float, default=3.0, help="how much longer a straggler takes, seconds")
    parser.add_argument("--hand-off-after", type=float, default=None,
                        help="the tier's hand_off_after (default: the config's default; 0: off)")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per timed run")
    parser.add_argument("--processes", type=int, default=2, help="tier pool processes = bare-loop processes")
    parser.add_argument("--inflight", type=int, default=256, help="calls in flight in total, on each side")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs; the table shows medians")
    parser.add_argument("--classifier", choices=("auto", "heuristic", "trained"), default="auto",
                        help="classifier kind in the generated config (auto: the shipped trained model)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (pool logs, Redis data)")
    args = parser.parse_args()
    result = bench(args)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
