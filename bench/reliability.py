"""A batch through the whole pipeline while the provider fails at random and a tier worker
is killed -9 twice: does every input line still end as exactly one output or error line?

    python bench/reliability.py [--jobs 20000] [--error-rate 0.1] [--kill-at 0.3,0.6]
                                [--latency-ms 20] [--visibility-timeout 30] [--max-attempts 4]
                                [--cooldown-s 1] [--json] [--keep]

One run starts, in a temp dir: the fake provider (a subprocess; helpers from
bench/throughput.py), a private Redis (EmbeddedRedis, append-only), and turnout's pools
through workers.supervisor.Supervisor, as `turnout run` does: the classify pool (heuristic
classifier) and two tiers, ``cheap`` (``--processes`` processes) and ``frontier`` (1),
each with a primary and a backup deployment on the fake provider. The heuristic sends
about a third of the bench's prompts to ``frontier``.

1. Warm-up (not measured): a small batch with no failures, so every pool has imported
   LiteLLM and is consuming. The fake provider's stats are then reset and its random
   failure rate set to ``--error-rate`` (statuses 429/500/503, Retry-After 1 s on a 429).
2. ``--jobs`` jobs are submitted on a thread. This thread polls the ledger; when the batch
   passes each ``--kill-at`` fraction it snapshots the tier's unacknowledged messages in
   Redis (kombu's ``unacked`` hash: the tasks the worker holds, running, prefetched or
   waiting for a retry countdown), kills the tier worker's whole process group with
   SIGKILL, and restarts it with ``Supervisor.check()`` (what `turnout run` does every
   0.25 s). It then watches those messages: a message counts as re-delivered when it
   leaves kombu's unacked index (or comes back with a newer delivery time).
3. When the ledger says the batch is complete (or after ``--stall-s`` with lines missing
   while no queue holds a message and no worker holds one unacknowledged: those jobs are
   gone, and waiting longer cannot bring them back), ``workers.collector.collect`` writes
   output.jsonl and errors.jsonl, and the bench counts per input custom_id: lost (no
   line), duplicates (more than one line), and reads the fake provider's /_stats.

Figures:
    lost / duplicates         over output.jsonl + errors.jsonl, per input custom_id (both must be 0)
    extra provider calls      provider requests minus jobs; split into failed calls (non-200)
                              and 200s beyond the output lines (answers paid for and thrown
                              away: calls in flight in the killed worker, or a job run twice)
    cost check                ledger's batch cost vs the sum of output lines' cost_usd
    re-delivery               per kill: the killed worker's tasks and jobs, seconds from the
                              kill until Redis handed the messages back (the visibility
                              timeout plus kombu's restore sweep), and seconds from the kill
                              until each of their jobs was recorded (the longest is the
                              "longest re-delivered job wait")
    wall time                 submit start → the last line recorded

The exit status is 1 unless the batch completed with nothing lost or doubled and the cost
matches; a worker killed mid-batch costs a re-delivery wait (see "re-delivery") and some
answers paid twice, which are reported, not failed.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import log, pct, prompt, start_fake_provider, teardown  # noqa: E402  (sets LITELLM_LOCAL_MODEL_COST_MAP)

KOMBU_UNACKED = "unacked"
KOMBU_UNACKED_INDEX = "unacked_index"


def job_lines(prefix: str, n: int) -> list[bytes]:
    return [json.dumps({"custom_id": f"{prefix}{i:07d}", "prompt": prompt(i)}).encode() + b"\n" for i in range(n)]


def write_config(path: Path, args: argparse.Namespace, fake_port: int) -> None:
    import yaml

    def tier(name: str, min_score: float, processes: int, prices: tuple[float, float, float, float]) -> dict[str, Any]:
        common = {"api_base": "fake", "timeout_s": args.call_timeout_s}
        return {
            "name": name,
            "min_score": min_score,
            "batch_size": args.batch_size,
            "processes": processes,
            "max_attempts": args.max_attempts,
            "cooldown_s": args.cooldown_s,
            "deployments": [
                {"model": f"openai/fake-{name}", "name": f"{name}-primary", **common,
                 "input_cost_per_million": prices[0], "output_cost_per_million": prices[1]},
                {"model": f"openai/fake-{name}-backup", "name": f"{name}-backup", **common,
                 "input_cost_per_million": prices[2], "output_cost_per_million": prices[3]},
            ],
        }

    config = {
        "chunk_size": args.chunk_size,
        "high_water": max(50_000, 2 * args.jobs),
        "classify_processes": 1,
        "visibility_timeout_s": args.visibility_timeout,
        "classifier": {"kind": "heuristic"},
        "fake_provider": {"port": fake_port, "latency_ms": args.latency_ms},
        "tiers": [
            tier("cheap", 0.0, args.processes, (0.15, 0.60, 0.20, 0.80)),
            tier("frontier", args.frontier_min_score, 1, (2.5, 10.0, 3.0, 15.0)),
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


# --- the killed worker's messages -------------------------------------------------------------


def unacked_tasks(redis: Any, queue: str) -> dict[bytes, dict[str, Any]]:
    """kombu's unacknowledged messages routed to ``queue``: tag → task id, retries, eta, custom_ids."""
    scores = dict(redis.zrange(KOMBU_UNACKED_INDEX, 0, -1, withscores=True))
    out: dict[bytes, dict[str, Any]] = {}
    for tag, raw in redis.hscan_iter(KOMBU_UNACKED, count=1000):
        message, _exchange, routing_key = json.loads(raw)
        if routing_key != queue:
            continue
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        headers = message.get("headers") or {}
        out[tag] = {
            "task_id": headers.get("id"),
            "retries": headers.get("retries", 0),
            "eta": headers.get("eta"),
            "delivered_at": scores.get(tag),
            "custom_ids": [job["custom_id"] for job in args[1]],
        }
    return out


class Kill:
    """One kill -9 of a tier worker, and what became of the messages it held."""

    def __init__(self, at_done: int, fraction: float, started: float, tasks: dict[bytes, dict[str, Any]]) -> None:
        self.at_done = at_done
        self.fraction = fraction
        self.time = time.time()
        self.offset_s = self.time - started
        self.tasks = tasks
        self.back_at: dict[bytes, float] = {}  # tag → when Redis handed the message back
        self.restarted_at: float | None = None

    def watch(self, redis: Any) -> None:
        pending = [tag for tag in self.tasks if tag not in self.back_at]
        if not pending:
            return
        pipe = redis.pipeline(transaction=False)
        for tag in pending:
            pipe.zscore(KOMBU_UNACKED_INDEX, tag)
        now = time.time()
        for tag, score in zip(pending, pipe.execute()):
            if score is None:
                self.back_at[tag] = now  # restored to its queue (or acked just before the kill)
            elif score > self.time:
                self.back_at[tag] = score  # restored and already taken by the new worker

    def report(self, recorded: dict[str, list[float]], visibility_timeout: int, tier_ids: set[str]) -> dict[str, Any]:
        """Seconds from the kill: until each message was handed back, and until each job was recorded."""
        back = [self.back_at[tag] - self.time for tag in self.tasks if tag in self.back_at]
        acked_before = sum(1 for s in back if s < 1.0)  # gone within a second: acked as the kill landed
        redelivered = [s for s in back if s >= 1.0]
        waits: list[float] = []
        answered_before = 0
        ids = [cid for task in self.tasks.values() for cid in task["custom_ids"]]
        for cid in ids:
            times = recorded.get(cid, [])
            if times and times[0] < self.time:
                answered_before += 1  # its line was recorded before the kill: nothing to re-deliver
            elif times:
                waits.append(times[-1] - self.time)
        after = [times[0] for cid, times in recorded.items() if cid in tier_ids and times[0] > self.time]
        first_line = min(after) - self.time if after else None
        return {
            "at_done": self.at_done,
            "at_fraction": round(self.fraction, 3),
            "at_s": round(self.offset_s, 2),
            "restart_after_s": round(self.restarted_at - self.time, 2) if self.restarted_at else None,
            "first_tier_line_after_s": round(first_line, 2) if first_line is not None else None,
            "tasks_held": len(self.tasks),
            "tasks_in_retry_countdown": sum(1 for t in self.tasks.values() if t["eta"]),
            "jobs_held": len(ids),
            "jobs_recorded_before_kill": answered_before,
            "tasks_acked_as_kill_landed": acked_before,
            "tasks_never_handed_back": len(self.tasks) - len(back),
            "handed_back_after_s_min": round(min(redelivered), 2) if redelivered else None,
            "handed_back_after_s_max": round(max(redelivered), 2) if redelivered else None,
            "visibility_timeout_s": visibility_timeout,
            "redelivered_jobs": len(waits),
            "job_wait_s_p50": round(pct(waits, 0.5), 2) if waits else None,
            "job_wait_s_max": round(max(waits), 2) if waits else None,
        }


# --- the run ----------------------------------------------------------------------------------


def wait_complete(ledger: Any, batch_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = ledger.status(batch_id)
        if status is not None and status.complete:
            return status
        time.sleep(0.1)
    raise RuntimeError(f"warm-up batch {batch_id} did not complete in {timeout:.0f}s")


def recorded_times(redis: Any, events_key: str) -> dict[str, list[float]]:
    """custom_id → the times (s) its lines were recorded, from the batch's events stream."""
    out: dict[str, list[float]] = collections.defaultdict(list)
    last = "-"
    while True:
        entries = redis.xrange(events_key, min=last, count=5000)
        if last != "-":
            entries = entries[1:]
        if not entries:
            return out
        for entry_id, fields in entries:
            out[fields[b"k"].decode()].append(int(entry_id.split(b"-")[0]) / 1000)
        last = entries[-1][0].decode()


def count_lines(path: Path) -> tuple[collections.Counter[str], list[dict[str, Any]]]:
    counts: collections.Counter[str] = collections.Counter()
    lines = []
    with open(path, "rb") as handle:
        for raw in handle:
            line = json.loads(raw)
            counts[line.get("custom_id") or f"@{line['id']}"] += 1
            lines.append(line)
    return counts, lines


@dataclass
class LocalTurnout:
    """What `local_turnout` started: its temp dir, the fake provider's URL, the config, a client
    of the private Redis, and the supervisor of turnout's pools (running)."""

    tmp: Path
    fake_url: str
    config: Any
    client: Any
    supervisor: Any


@contextmanager
def local_turnout(args: argparse.Namespace, name: str) -> Iterator[LocalTurnout]:
    """In a temp dir: the fake provider, a private Redis (EmbeddedRedis, append-only) and
    turnout's pools for ``write_config(args)``, started as `turnout run` starts them, warmed up
    with a small batch; all stopped on exit, the temp dir removed unless ``args.keep``."""
    from schemas.config import load_config
    from workers.broker import EmbeddedRedis
    from workers.client import Client
    from workers.supervisor import Supervisor

    tmp = Path(tempfile.mkdtemp(prefix=f"turnout-{name}-"))
    fake = embedded = supervisor = None
    try:
        fake, fake_url = start_fake_provider(tmp, args.latency_ms)
        embedded = EmbeddedRedis(tmp / "state")
        url = embedded.start()
        config_path = tmp / "turnout.yaml"
        write_config(config_path, args, int(fake_url.rsplit(":", 1)[1].split("/")[0]))
        config = load_config(config_path)
        env = dict(os.environ, TURNOUT_REDIS_URL=url, TURNOUT_CONFIG=str(config_path), TURNOUT_FAKE_URL=fake_url,
                   LITELLM_LOCAL_MODEL_COST_MAP="True")
        os.environ["TURNOUT_FAKE_URL"] = fake_url
        log(f"fake provider {fake_url}, redis {url}, temp dir {tmp}")
        client = Client(config, url)
        supervisor = Supervisor(config, config_path, env, tmp / "logs")
        supervisor.start_pools()
        log("pools started; warm-up")
        client.submit(job_lines("warm-", 300), "warm-up")
        wait_complete(client.ledger, "warm-up", 300)
        yield LocalTurnout(tmp, fake_url, config, client, supervisor)
    finally:
        teardown(tmp, args.keep, supervisor, embedded, fake=fake)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    with local_turnout(args, "reliability") as local:
        return _bench(args, local)


def _bench(args: argparse.Namespace, local: LocalTurnout) -> dict[str, Any]:
    from workers.app import CLASSIFY_QUEUE
    from workers.collector import collect
    from workers.dlq import dlq_key
    from workers.fake_provider import configure, fetch_stats, reset
    from workers.ledger import BatchKeys

    tmp, fake_url, config, client, supervisor = local.tmp, local.fake_url, local.config, local.client, local.supervisor
    batch_id = "reliability"
    kill_at = sorted(float(x) for x in args.kill_at.split(",") if x.strip())
    redis = client.ledger.redis
    kill_tier = config.tier(args.kill_tier)
    victim = next(child for child in supervisor.children if child.name == f"pool-{kill_tier.name}")

    reset(fake_url)
    configure(fake_url, error_rate=args.error_rate, error_kinds=[429, 500, 503], seed=args.seed)
    log(f"batch of {args.jobs} jobs, {args.error_rate:.0%} random failures, kill -9 of pool-{kill_tier.name} "
        f"at {', '.join(f'{f:.0%}' for f in kill_at)}")

    submit_error: list[BaseException] = []

    def produce() -> None:
        try:
            client.submit_report(job_lines("r-", args.jobs), batch_id)
        except BaseException as exc:  # reported below
            submit_error.append(exc)

    started = time.time()
    producer = threading.Thread(target=produce, name="producer", daemon=True)
    producer.start()
    kills: list[Kill] = []
    next_kill = 0
    deadline = time.monotonic() + args.timeout
    restarts_seen = 0
    last_log = time.monotonic()
    status = None
    last_done, last_change = -1, time.monotonic()
    stalled = False
    while True:
        status = client.ledger.status(batch_id)
        done = status.done if status else 0
        if status is not None and status.complete and not producer.is_alive():
            break
        if submit_error:
            raise submit_error[0]
        if next_kill < len(kill_at) and done >= kill_at[next_kill] * args.jobs and victim.alive:
            assert victim.process is not None
            tasks = unacked_tasks(redis, kill_tier.queue)
            # messages an earlier kill left behind, not yet delivered again, belong to that kill
            tasks = {tag: task for tag, task in tasks.items()
                     if not any(tag in k.tasks and (task["delivered_at"] or 0) <= k.time for k in kills)}
            os.killpg(victim.process.pid, 9)
            kill = Kill(done, done / args.jobs, started, tasks)
            kills.append(kill)
            next_kill += 1
            log(f"kill -9 of pool-{kill_tier.name} (pid {victim.process.pid}) at {done} done: it held "
                f"{len(tasks)} tasks, {sum(len(t['custom_ids']) for t in tasks.values())} jobs")
            time.sleep(0.05)
        for name in supervisor.check():
            restarts_seen += 1
            if kills and kills[-1].restarted_at is None:
                kills[-1].restarted_at = time.time()
            log(f"{name} restarted")
        for kill in kills:
            kill.watch(redis)
        if time.monotonic() - last_log > 10:
            last_log = time.monotonic()
            depth = {q: redis.llen(q) for q in (CLASSIFY_QUEUE, *(t.queue for t in config.tiers))}
            log(f"{done}/{args.jobs} done, {status.failed if status else 0} failed; queues {depth}; "
                f"unacked {redis.hlen(KOMBU_UNACKED)}")
        if done != last_done:
            last_done, last_change = done, time.monotonic()
        elif time.monotonic() - last_change > args.stall_s and not producer.is_alive():
            queued = sum(redis.llen(q) for q in (CLASSIFY_QUEUE, *(t.queue for t in config.tiers)))
            if queued == 0 and redis.hlen(KOMBU_UNACKED) == 0:
                stalled = True  # nothing queued, nothing held by a worker, lines missing: they are gone
                log(f"STALLED: {done}/{args.jobs} for {args.stall_s:.0f}s with empty queues and nothing unacked")
                break
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    complete = bool(status and status.complete)
    wall = ((status.updated_at or time.time()) if complete and status else time.time()) - started
    if not complete:
        log(f"NOT COMPLETE after {args.timeout:.0f}s: {status}")
    # keep watching the killed messages a little if some were never handed back yet
    for kill in kills:
        kill.watch(redis)

    provider = fetch_stats(fake_url)
    out_dir = tmp / "out"
    collect(client.ledger, batch_id, out_dir)
    outputs, out_lines = count_lines(out_dir / "output.jsonl")
    errors, err_lines = count_lines(out_dir / "errors.jsonl")
    input_ids = [f"r-{i:07d}" for i in range(args.jobs)]
    per_id = outputs + errors
    lost = [cid for cid in input_ids if per_id[cid] == 0]
    duplicates = {cid: n for cid, n in per_id.items() if n > 1}
    unknown = sorted(set(per_id) - set(input_ids))
    keys = BatchKeys(batch_id)
    recorded = recorded_times(redis, keys.events)
    both = [cid for cid in outputs if cid in errors]
    ok_events = collections.Counter()
    for entry_id, fields in redis.xrange(keys.events):
        if fields[b"ok"] == b"1":
            ok_events[fields[b"k"].decode()] += 1
    recorded_ok_twice = {k: n for k, n in ok_events.items() if n > 1}

    status = client.ledger.status(batch_id)
    line_cost = sum(line["turnout"]["cost_usd"] for line in out_lines)
    ledger_cost = status.cost_usd if status else float("nan")
    error_codes = collections.Counter(line["error"]["code"] for line in err_lines)
    dlq = [key for t in config.tiers for key, _ in redis.hscan_iter(dlq_key(t.name), match=f"{batch_id}:*", count=1000)]
    ok_calls = int(provider.get("by_status", {}).get("200", 0))
    failed_calls = provider["requests"] - ok_calls
    attempts = collections.Counter(line["turnout"]["attempts"] for line in out_lines)
    fallbacks = sum(1 for line in out_lines if line["turnout"]["fallbacks"])
    by_deployment = collections.Counter(line["turnout"]["deployment"] for line in out_lines)
    by_tier = collections.Counter(line["turnout"]["tier"] for line in out_lines)
    tier_ids = {line["custom_id"] for line in out_lines + err_lines if line["turnout"].get("tier") == kill_tier.name}
    kill_reports = [kill.report(recorded, config.visibility_timeout_s or 0, tier_ids) for kill in kills]
    waits = [k["job_wait_s_max"] for k in kill_reports if k["job_wait_s_max"] is not None]
    handed = [k["handed_back_after_s_max"] for k in kill_reports if k["handed_back_after_s_max"] is not None]
    leftovers = {
        "queues": {q: redis.llen(q) for q in (CLASSIFY_QUEUE, *(t.queue for t in config.tiers))},
        "unacked": redis.hlen(KOMBU_UNACKED),
    }
    return {
        "jobs": args.jobs,
        "complete": complete,
        "stalled": stalled,
        "error_rate": args.error_rate,
        "latency_ms": args.latency_ms,
        "visibility_timeout_s": config.visibility_timeout_s,
        "max_attempts": args.max_attempts,
        "cooldown_s": args.cooldown_s,
        "wall_s": round(wall, 2),
        "jobs_per_s": round(args.jobs / wall, 1) if wall > 0 else None,
        "lost": len(lost),
        "lost_ids": lost[:20],
        "duplicates": len(duplicates),
        "duplicate_ids": dict(list(duplicates.items())[:20]),
        "unknown_ids": unknown[:20],
        "ids_with_output_and_error": both[:20],
        "recorded_ok_twice": dict(list(recorded_ok_twice.items())[:20]),
        "output_lines": len(out_lines),
        "error_lines": len(err_lines),
        "error_codes": dict(error_codes),
        "dlq_records": len(dlq),
        "ledger": {"submitted": status.submitted if status else None, "done": status.done if status else None,
                   "failed": status.failed if status else None},
        "provider_requests": provider["requests"],
        "provider_by_status": provider.get("by_status", {}),
        "extra_provider_calls": provider["requests"] - args.jobs,
        "failed_provider_calls": failed_calls,
        "ok_calls_beyond_outputs": ok_calls - len(out_lines),
        "outputs_with_fallbacks": fallbacks,
        "outputs_by_attempts": dict(sorted(attempts.items())),
        "outputs_by_deployment": dict(by_deployment),
        "outputs_by_tier": dict(by_tier),
        "ledger_cost_usd": ledger_cost,
        "output_lines_cost_usd": line_cost,
        "cost_matches": abs(ledger_cost - line_cost) <= 1e-9 * max(1.0, line_cost),
        "kill_tier": kill_tier.name,
        "kills": kill_reports,
        "restarts": restarts_seen,
        "longest_redelivered_job_wait_s": max(waits) if waits else None,
        "longest_handed_back_after_s": max(handed) if handed else None,
        "leftovers": leftovers,
        "temp_dir": str(tmp) if args.keep else None,
    }


def print_report(r: dict[str, Any]) -> None:
    verdict = lambda ok: "ok" if ok else "FAIL"  # noqa: E731
    print(f"{r['jobs']} jobs, {r['error_rate']:.0%} random provider failures (429/500/503), "
          f"{r['latency_ms']:g} ms latency, visibility timeout {r['visibility_timeout_s']} s, "
          f"max_attempts {r['max_attempts']}, cooldown {r['cooldown_s']:g} s")
    print(f"  complete                {r['complete']}" + ("  (STALLED: lines missing, nothing queued or held)" if r["stalled"] else ""))
    print(f"  jobs lost               {r['lost']}  {verdict(r['lost'] == 0)}" + (f"  e.g. {r['lost_ids'][:5]}" if r["lost"] else ""))
    print(f"  duplicates              {r['duplicates']}  {verdict(r['duplicates'] == 0)}"
          + (f"  e.g. {list(r['duplicate_ids'])[:5]}" if r["duplicates"] else ""))
    print(f"  output / error lines    {r['output_lines']} / {r['error_lines']}  codes {r['error_codes'] or '{}'}")
    print(f"  provider requests       {r['provider_requests']} ({r['provider_by_status']})")
    print(f"  extra provider calls    {r['extra_provider_calls']} (requests - jobs): {r['failed_provider_calls']} failed, "
          f"{r['ok_calls_beyond_outputs']} answers beyond the output lines (paid, thrown away); "
          f"{r['error_codes'].get('deployments_busy', 0)} jobs dead-lettered as deployments_busy")
    print(f"  fallbacks               {r['outputs_with_fallbacks']} outputs answered after a fallback; "
          f"by attempts {r['outputs_by_attempts']}")
    print(f"  cost                    ledger ${r['ledger_cost_usd']:.6f} vs lines ${r['output_lines_cost_usd']:.6f}  "
          f"{verdict(r['cost_matches'])}")
    for k in r["kills"]:
        print(f"  kill at {k['at_fraction']:.0%} ({k['at_s']} s): held {k['tasks_held']} tasks / {k['jobs_held']} jobs "
              f"({k['tasks_in_retry_countdown']} in a retry countdown, {k['jobs_recorded_before_kill']} jobs already "
              f"recorded); first {r['kill_tier']} line {k['first_tier_line_after_s']} s after; handed back after "
              f"{k['handed_back_after_s_min']}–{k['handed_back_after_s_max']} s; {k['redelivered_jobs']} jobs re-run, "
              f"waited p50 {k['job_wait_s_p50']} s, max {k['job_wait_s_max']} s")
    print(f"  longest re-delivered job wait  {r['longest_redelivered_job_wait_s']} s "
          f"(visibility timeout {r['visibility_timeout_s']} s)")
    print(f"  wall time               {r['wall_s']} s ({r['jobs_per_s']} jobs/s)")
    print(f"  leftovers               {r['leftovers']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--error-rate", type=float, default=0.10, help="fake provider's random failure rate")
    parser.add_argument("--kill-at", default="0.3,0.6", help="progress fractions at which the tier worker is killed")
    parser.add_argument("--kill-tier", default="cheap", help="the tier whose worker is killed")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="fake provider latency per call")
    parser.add_argument("--visibility-timeout", type=int, default=30, help="visibility_timeout_s in the config")
    parser.add_argument("--max-attempts", type=int, default=4, help="per tier; retries back off 1-2, 2-4, 4-8 s…")
    parser.add_argument("--cooldown-s", type=float, default=1.0, help="per tier cooldown after repeated failures")
    parser.add_argument("--call-timeout-s", type=float, default=10.0, help="each deployment's timeout_s")
    parser.add_argument("--processes", type=int, default=2, help="processes of the cheap tier pool")
    parser.add_argument("--batch-size", type=int, default=32, help="jobs per tier task")
    parser.add_argument("--chunk-size", type=int, default=64, help="jobs per classify task")
    parser.add_argument("--frontier-min-score", type=float, default=0.2, help="heuristic score routed to frontier")
    parser.add_argument("--seed", type=int, default=7, help="seeds the fake provider's failures")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up on the batch after this long")
    parser.add_argument("--stall-s", type=float, default=300.0,
                        help="give up when nothing was recorded for this long while no queue or worker holds a job")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (pool logs, Redis data, output files)")
    args = parser.parse_args()
    result = bench(args)
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    if not (result["complete"] and result["lost"] == 0 and result["duplicates"] == 0 and result["cost_matches"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
