"""`turnout submit` at scale: a 1,000,000-line file into a private Redis, with backpressure.

    python bench/producer.py [--lines 1000000] [--high-water 50000] [--drain pools|delete]
                             [--drain-rate 10000] [--processes 2] [--wait] [--spill] [--json]

Generates the input file in a temp dir (simple ``{custom_id, prompt}`` lines, ~100-byte
prompts), starts an embedded Redis, and runs workers.client.Client.submit_report in a
fresh child process (so its peak RSS is the producer's alone: VmHWM from /proc/self/status,
with the RSS after imports beside it). Something must consume the queues or the producer
waits forever at the high-water mark:

- ``--drain pools`` (default, the honest one): turnout's real pools (classify ×1, one tier ×
  ``--processes``) against a 0 ms fake provider. The producer can then go no faster than the
  pools answer, so a run of 1,000,000 lines takes as long as the pools need for them.
- ``--drain delete``: a thread that removes classify messages at ``--drain-rate`` jobs/s
  (RPOP), i.e. a consumer that does no work. It measures the producer and the bound, not
  the pools; the ledger's per-batch ids (``id_buckets`` small hashes) still grow with every line.

A sampler thread reads Redis every 0.1 s: used_memory, the queues' message counts (jobs
queued, estimated like the producer does: messages × jobs per message) and the queues' own
memory. The backpressure bound holds when the queued jobs never exceed high_water plus one
check interval of overshoot (BACKPRESSURE_EVERY × chunk_size).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from schemas.config import DEFAULT_CHUNK_SIZE  # noqa: E402
from throughput import MODEL, log, prompt, start_fake_provider, teardown  # noqa: E402


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(config_path: str, url: str, input_path: str, batch_id: str) -> None:
    """The producer process: import, submit the file, report timings and memory."""
    started = time.perf_counter()
    from schemas.config import load_config
    from workers.client import Client

    client = Client(load_config(config_path), url)
    imported = time.perf_counter() - started
    rss_after_import = status_kb("VmRSS")
    cpu0 = time.process_time()
    report = client.submit_report(input_path, batch_id)
    print(json.dumps({
        "import_s": imported,
        "rss_after_import_mb": rss_after_import / 1024,
        "peak_rss_mb": status_kb("VmHWM") / 1024,
        "enqueued": report.enqueued,
        "rejected": report.rejected,
        "seconds": report.seconds,
        "waited_s": report.waited_s,
        "peak_queued_seen_by_producer": report.peak_queued,
        "cpu_s": time.process_time() - cpu0,
    }), flush=True)


def write_input(path: Path, lines: int) -> int:
    with open(path, "wb", buffering=1 << 20) as handle:
        for i in range(lines):
            handle.write(json.dumps({"custom_id": f"p{i:07d}", "prompt": prompt(i)}).encode() + b"\n")
    return path.stat().st_size


def write_config(path: Path, args: argparse.Namespace, fake_port: int) -> None:
    import yaml

    config = {
        "chunk_size": args.chunk_size,
        "high_water": args.high_water,
        "classify_processes": 1,
        "classifier": {"kind": "auto"},
        "fake_provider": {"port": fake_port, "latency_ms": 0},
        "tiers": [{
            "name": "cheap", "min_score": 0.0, "batch_size": args.batch_size, "processes": args.processes,
            "deployments": [{"model": MODEL, "name": "cheap-primary", "api_base": "fake",
                             "input_cost_per_million": 0.15, "output_cost_per_million": 0.60}],
        }],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


class Sampler(threading.Thread):
    """Polls Redis: used_memory, queued jobs (the producer's estimate), the queues' bytes."""

    def __init__(self, redis: Any, queues: list[tuple[str, int]], every_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.redis, self.queues, self.every_s = redis, queues, every_s
        self.stop = threading.Event()
        self.peak_used = 0
        self.peak_queued = 0
        self.peak_queue_bytes = 0
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            pipe = self.redis.pipeline(transaction=False)
            pipe.info("memory")
            for name, _ in self.queues:
                pipe.llen(name)
            for name, _ in self.queues:
                pipe.memory_usage(name, samples=0)
            values = pipe.execute()
            n = len(self.queues)
            self.peak_used = max(self.peak_used, int(values[0]["used_memory"]))
            self.peak_queued = max(self.peak_queued, sum(int(c) * s for c, (_, s) in zip(values[1 : 1 + n], self.queues)))
            self.peak_queue_bytes = max(self.peak_queue_bytes, sum(int(b or 0) for b in values[1 + n :]))
            self.samples += 1
            self.stop.wait(self.every_s)


class Spiller(threading.Thread):
    """Moves finished answers out of Redis every 2 s (workers.collector.spill), like `turnout run`."""

    def __init__(self, url: str, batch_id: str, path: Path) -> None:
        super().__init__(daemon=True)
        self.url, self.batch_id, self.path = url, batch_id, path
        self.stop = threading.Event()
        self.spilled = 0

    def run(self) -> None:
        from workers.broker import connect
        from workers.collector import spill
        from workers.ledger import Ledger

        ledger = Ledger(connect(self.url))
        while not self.stop.wait(2.0):
            self.spilled += spill(ledger, self.batch_id, self.path)
        self.spilled += spill(ledger, self.batch_id, self.path)


class DeleteDrain(threading.Thread):
    """Removes classify messages (oldest first) at about ``rate`` jobs/s: a consumer doing no work."""

    def __init__(self, redis: Any, queue: str, jobs_per_message: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.redis, self.queue = redis, queue
        self.per_tick = max(1, round(rate / jobs_per_message / 50))  # 50 ticks/s
        self.stop = threading.Event()
        self.removed_messages = 0

    def run(self) -> None:
        while not self.stop.is_set():
            popped = self.redis.rpop(self.queue, self.per_tick)
            self.removed_messages += len(popped or [])
            self.stop.wait(0.02)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from schemas.config import load_config
    from workers.app import CLASSIFY_QUEUE
    from workers.broker import EmbeddedRedis, connect
    from workers.ledger import BatchKeys, Ledger
    from workers.producer import BACKPRESSURE_EVERY
    from workers.supervisor import Supervisor

    tmp = Path(tempfile.mkdtemp(prefix="turnout-producer-"))
    fake = embedded = supervisor = None
    drain: DeleteDrain | None = None
    sampler: Sampler | None = None
    spiller: Spiller | None = None
    try:
        input_path = tmp / "input.jsonl"
        t0 = time.perf_counter()
        size = write_input(input_path, args.lines)
        log(f"wrote {args.lines:,} lines ({size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s")
        embedded = EmbeddedRedis(tmp / "state")
        url = embedded.start()
        assert embedded.process is not None
        redis = connect(url)
        fake_port = 0
        env = dict(os.environ, TURNOUT_REDIS_URL=url, LITELLM_LOCAL_MODEL_COST_MAP="True")
        if args.drain == "pools":
            fake, fake_url = start_fake_provider(tmp, 0)
            fake_port = int(fake_url.rsplit(":", 1)[1].split("/")[0])
            env["TURNOUT_FAKE_URL"] = fake_url
        config_path = tmp / "turnout.yaml"
        write_config(config_path, args, fake_port)
        config = load_config(config_path)
        env["TURNOUT_CONFIG"] = str(config_path)
        queues = [(CLASSIFY_QUEUE, config.chunk_size)] + [(t.queue, t.batch_size) for t in config.tiers]
        if args.drain == "pools":
            supervisor = Supervisor(config, config_path, env, tmp / "logs")
            supervisor.start_pools()
            log(f"started pools (classify ×1, cheap ×{args.processes}, batch {args.batch_size}) on a 0 ms fake provider")
        else:
            drain = DeleteDrain(redis, CLASSIFY_QUEUE, config.chunk_size, args.drain_rate)
            drain.start()
            log(f"draining {CLASSIFY_QUEUE} by deletion at ~{args.drain_rate:,.0f} jobs/s")
        used_before = int(redis.info("memory")["used_memory"])
        sampler = Sampler(redis, queues)
        sampler.start()
        batch_id = "bench-producer"
        if args.spill:
            spiller = Spiller(url, batch_id, tmp / "spill.jsonl")
            spiller.start()
            log("spilling finished answers to a file every 2 s, as `turnout run` does")
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(config_path), url, str(input_path), batch_id]
        log(f"submitting (high_water {args.high_water:,}, chunk {config.chunk_size})")
        t0 = time.perf_counter()
        out = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(f"the producer failed:\n{out.stderr[-3000:]}")
        report = json.loads(out.stdout.strip().splitlines()[-1])
        completed_s = None
        if args.drain == "pools" and args.wait:
            log("submitted; waiting for the pools to answer every job")
            while True:
                meta = redis.hmget(BatchKeys(batch_id).meta, "done", "submitted", "sealed")
                if meta[2] == b"1" and int(meta[0] or 0) >= int(meta[1] or 0):
                    break
                time.sleep(0.5)
            completed_s = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        if spiller is not None:
            spiller.stop.set()
            spiller.join()
        info = redis.info("memory")
        keys = BatchKeys(batch_id)
        ledger_bytes = {name: int(redis.memory_usage(key, samples=0) or 0) for name, key in (("out", keys.out), ("events", keys.events))}
        ledger_bytes["ids"] = Ledger(redis).id_bytes(batch_id)
        bound = args.high_water + BACKPRESSURE_EVERY * config.chunk_size
        active_s = max(1e-9, report["seconds"] - report["waited_s"])
        return {
            "lines": args.lines,
            "drain": args.drain,
            "high_water": args.high_water,
            "chunk_size": config.chunk_size,
            "enqueued": report["enqueued"],
            "rejected": report["rejected"],
            "enqueue_jobs_per_s": report["enqueued"] / report["seconds"],
            "enqueue_jobs_per_s_unthrottled": report["enqueued"] / active_s,
            "producer_seconds": report["seconds"],
            "producer_waited_s": report["waited_s"],
            "producer_cpu_us_per_job": 1e6 * report["cpu_s"] / max(1, report["enqueued"]),
            "producer_import_s": report["import_s"],
            "producer_rss_after_import_mb": report["rss_after_import_mb"],
            "producer_peak_rss_mb": report["peak_rss_mb"],
            "producer_wall_s": wall,
            "redis_used_memory_before_mb": used_before / 2**20,
            "redis_peak_used_memory_mb": max(sampler.peak_used, int(info["used_memory_peak"])) / 2**20,
            "redis_used_memory_end_mb": int(info["used_memory"]) / 2**20,
            "peak_queued_jobs": sampler.peak_queued,
            "peak_queue_bytes_mb": sampler.peak_queue_bytes / 2**20,
            "backpressure_bound_jobs": bound,
            "backpressure_held": sampler.peak_queued <= bound,
            "ledger_bytes_mb": {k: v / 2**20 for k, v in ledger_bytes.items()},
            "completed_s": completed_s,
            "spill": args.spill,
            "spilled_lines": spiller.spilled if spiller is not None else 0,
            "sampler_samples": sampler.samples,
        }
    finally:
        for thread in (sampler, spiller, drain):
            if thread is not None:
                thread.stop.set()
        teardown(tmp, False, supervisor, embedded, fake=fake)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--high-water", type=int, default=50_000)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="jobs per classify message")
    parser.add_argument("--batch-size", type=int, default=64, help="jobs per tier message")
    parser.add_argument("--drain", choices=("pools", "delete"), default="pools")
    parser.add_argument("--drain-rate", type=float, default=10_000, help="jobs/s removed with --drain delete")
    parser.add_argument("--processes", type=int, default=2, help="tier pool processes with --drain pools")
    parser.add_argument("--wait", action="store_true", help="with --drain pools, also wait for every answer")
    parser.add_argument("--spill", action="store_true", help="spill finished answers out of Redis while it runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = bench(args)
    if args.json:
        print(json.dumps(result))
        return
    r = result
    print(f"{r['enqueued']:,} jobs enqueued ({r['rejected']} rejected), drain: {r['drain']}")
    print(f"enqueue rate: {r['enqueue_jobs_per_s']:,.0f} jobs/s overall, {r['enqueue_jobs_per_s_unthrottled']:,.0f} jobs/s "
          f"excluding backpressure waits ({r['producer_waited_s']:.1f}s of {r['producer_seconds']:.1f}s waited); "
          f"producer CPU {r['producer_cpu_us_per_job']:.0f} µs/job")
    print(f"producer RSS: peak {r['producer_peak_rss_mb']:.0f} MB ({r['producer_rss_after_import_mb']:.0f} MB after "
          f"imports, which took {r['producer_import_s']:.1f}s)")
    print(f"Redis used_memory: peak {r['redis_peak_used_memory_mb']:.0f} MB (start {r['redis_used_memory_before_mb']:.1f} MB, "
          f"end {r['redis_used_memory_end_mb']:.0f} MB); queues' own peak {r['peak_queue_bytes_mb']:.1f} MB; ledger at end: "
          + ", ".join(f"{k} {v:.0f} MB" for k, v in r["ledger_bytes_mb"].items()))
    held = "held" if r["backpressure_held"] else "NOT held"
    print(f"backpressure {held}: peak {r['peak_queued_jobs']:,} jobs queued; bound {r['backpressure_bound_jobs']:,} "
          f"(high_water {r['high_water']:,} + one check interval)")


if __name__ == "__main__":
    main()
