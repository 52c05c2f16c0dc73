"""`turnout status`: what is running, as data (for --json) and as a rich view."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from schemas.config import Config
from schemas.result import spent_text
from workers.app import CLASSIFY_QUEUE
from workers.dlq import DeadLetters
from workers.gate import health
from workers.metrics import LATENCY_BUCKETS, STATS, recent_stats
from workers.producer import UNACKED
from workers.scaling import job_count, recommendations, snapshot
from workers.stragglers import marked

#: Guards read per tier for the in-flight count (a guard queue holds a few per handed-off task).
GUARDS_READ = 1000
#: Complete batches `status` lists besides every unfinished one, newest first.
SHOWN_BATCHES = 10
#: How often `turnout run` looks whether a tier's deployments are all failing.
DOWN_CHECK_S = 5.0



def view(client: Any, batch_id: str | None, interval: float) -> dict[str, Any]:
    """Batches, tiers and in-flight tasks; throughput and arrivals are measured over ``interval``."""
    redis = client.ledger.redis
    if batch_id:
        before = {batch_id: client.status(batch_id)}  # one that does not exist is an error
    else:  # newest first
        before = {b: status for b in client.ledger.batches() if (status := client.ledger.status(b)) is not None}
    # every unfinished batch, and the 10 newest of the rest
    batches = [b for n, b in enumerate(before) if n < SHOWN_BATCHES or not before[b].complete]
    first = snapshot(client.config, redis)
    time.sleep(interval)
    later = snapshot(client.config, redis)
    held = in_flight(client.config, redis)
    advice = {r.tier: r for r in recommendations(client.config, first, later, held=held_jobs(held))}
    latency = _percentiles(redis)
    letters = DeadLetters(redis)
    return {
        "in_flight_tasks": int(redis.hlen(UNACKED)),
        "classify_queued_jobs": int(redis.llen(CLASSIFY_QUEUE)) * client.config.chunk_size,  # an estimate: full chunks
        "batches": [_batch(client.ledger, client.status(b)) for b in batches],
        "batches_not_shown": len(before) - len(batches),
        "tiers": [
            {
                "tier": tier.name,
                "queued_jobs": later.queued[tier.name],
                "in_flight_jobs": held[tier.name]["running"],
                "waiting_retry_jobs": held[tier.name]["waiting_retry"],
                "dlq": letters.depth(tier.name),
                "p50_latency_s": latency.get(tier.name, {}).get("p50"),
                "p95_latency_s": latency.get(tier.name, {}).get("p95"),
                "arrivals_per_s": round(advice[tier.name].arrival_per_s, 2),
                "recommended_processes": advice[tier.name].processes,
            }
            for tier in client.config.tiers
        ],
        "deployments": [
            {"tier": tier.name} | health(redis, tier.deployment_name(i))
            for tier in client.config.tiers for i in range(len(tier.deployments))
        ],
    }


def in_flight(config: Any, redis: Any) -> dict[str, dict[str, int]]:
    """Jobs per tier in tasks a worker holds unacknowledged: running now, or waiting out a
    retry countdown. Read from kombu's ``unacked`` hash: each entry is [message, exchange,
    routing key], the job count from the argsrepr turnout gives every tier task. A guard's
    jobs, fetched or still on the tier's guard queue, count as running while their handed-off
    calls are out (workers/stragglers.py); a guard whose calls were all settled counts none."""
    queues = {q: tier.name for tier in config.tiers for q in (tier.queue, tier.guard_queue)}
    held = {tier.name: {"running": 0, "waiting_retry": 0} for tier in config.tiers}
    for tier in config.tiers:
        for raw in redis.lrange(tier.guard_queue, 0, GUARDS_READ - 1):
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if "guard" in str((message.get("headers") or {}).get("kwargsrepr") or ""):
                held[tier.name]["running"] += _calls_out(redis, message)
            else:  # a job a guard sent on: an ordinary task, waiting
                held[tier.name]["running"] += job_count(message, 1)
    for raw in redis.hvals(UNACKED):
        try:
            message, _, routing_key = json.loads(raw)
            headers = message.get("headers") or {}
            queue = routing_key or message["properties"]["delivery_info"]["routing_key"]
        except (ValueError, TypeError, KeyError):
            continue  # not a message of ours
        if queue not in queues:
            continue
        if "guard" in str(headers.get("kwargsrepr") or ""):
            held[queues[queue]]["running"] += _calls_out(redis, message)
            continue
        state = "waiting_retry" if _in_future(headers.get("eta")) else "running"
        held[queues[queue]][state] += job_count(message, 1)
    return held


def held_jobs(held: dict[str, dict[str, int]]) -> dict[str, int]:
    """Per tier, the jobs ``in_flight`` found workers holding, running or waiting out a retry:
    the backlog a recommendation drains beside the queued jobs."""
    return {tier: counts["running"] + counts["waiting_retry"] for tier, counts in held.items()}


def _calls_out(redis: Any, message: dict[str, Any]) -> int:
    """How many of a guard's jobs still have their handed-off call out (marked, not settled)."""
    try:
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        batch_id, jobs = args[0], args[1]
        ids = [str(job["custom_id"]) for job in jobs]
    except (ValueError, TypeError, KeyError, IndexError):
        return 0
    return sum(marked(redis, batch_id, ids))


def _in_future(eta: Any) -> bool:
    """True for a task's ETA (ISO 8601) still to come: the task waits out a retry countdown."""
    if not eta:
        return False
    try:
        when = dt.datetime.fromisoformat(str(eta))
    except ValueError:
        return False
    now = dt.datetime.now(when.tzinfo) if when.tzinfo else dt.datetime.now()
    return when > now


def _batch(ledger: Any, now: Any) -> dict[str, Any]:
    """One batch's row: its rate over the last minute (``Ledger.recent_rate``) and, once its
    input is all read, the time its remaining lines take at that rate."""
    rate = 0.0 if now.complete else ledger.recent_rate(now.batch_id, now.started_at)
    left = now.submitted - now.done
    return {
        "batch_id": now.batch_id,
        "submitted": now.submitted,
        "done": now.done,
        "failed": now.failed,
        "complete": now.complete,
        "cost_usd": round(now.cost_usd, 6),
        "all_frontier_cost_usd": round(now.frontier_cost_usd, 6),
        "max_cost_usd": now.max_cost_usd,
        "throughput_per_s": round(rate, 1),
        "eta_s": round(left / rate) if rate and now.sealed and not now.complete else None,
    }


def eta_text(seconds: float | None) -> str:
    """``3h 05m``, ``12m 40s``, ``45s``; ``-`` when there is no estimate."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _percentiles(redis: Any) -> dict[str, dict[str, float]]:
    """p50/p95 provider latency per tier over the last few minutes (``recent_stats``; none for
    a tier without calls lately), from the latency histogram, interpolated within the bucket
    the rank falls in (as Prometheus's histogram_quantile does)."""
    raw, _ = recent_stats(redis)
    per_tier: dict[str, dict[str, float]] = {}
    for key, value in raw.items():
        kind, *labels = key.split("|")
        if kind == "tier_latency_bucket":
            bucket = per_tier.setdefault(labels[0], {})
            bucket[labels[1]] = bucket.get(labels[1], 0.0) + value
    return {tier: {name: quantile(counts, q) for name, q in (("p50", 0.5), ("p95", 0.95))}
            for tier, counts in per_tier.items() if sum(counts.values())}  # fmt: skip


def quantile(counts: dict[str, float], q: float) -> float:
    """The q-quantile of a histogram given as {upper bound: count} (not cumulative), linearly
    interpolated inside its bucket; in the open-ended last bucket, the last finite bound."""
    bounds = [float(b) for b in LATENCY_BUCKETS]
    per_bucket = [counts.get(str(b), 0.0) for b in LATENCY_BUCKETS] + [counts.get("+Inf", 0.0)]
    rank, below, lower = q * sum(per_bucket), 0.0, 0.0
    for upper, count in zip(bounds, per_bucket):
        if count and below + count >= rank:
            return lower + (upper - lower) * (rank - below) / count
        below, lower = below + count, upper
    return bounds[-1]


def render(data: dict[str, Any]) -> RenderableType:
    hidden = data["batches_not_shown"]
    batches = Table(title=f"batches ({hidden} older complete ones not shown)" if hidden else "batches", show_edge=False)
    batches.add_column("batch", no_wrap=True, min_width=max((len(b["batch_id"]) for b in data["batches"]), default=5))  # whole: commands take it
    for column in ("progress", "done", "failed", "jobs/s", "ETA", "cost", "all-frontier"):
        batches.add_column(column)
    for b in data["batches"]:
        total = b["submitted"] or 1
        bar = ProgressBar(total=total, completed=b["done"], width=30)
        state = "complete" if b["complete"] else f"{b['done']}/{b['submitted']}"
        batches.add_row(
            b["batch_id"], bar, state, str(b["failed"]), f"{b['throughput_per_s']:.1f}", eta_text(b["eta_s"]),
            spent_text(b["cost_usd"], b["max_cost_usd"]),
            f"${b['all_frontier_cost_usd']:.4f}",
        )  # fmt: skip
    waiting = f"; ~{data['classify_queued_jobs']:,} jobs waiting to be classified" if data["classify_queued_jobs"] else ""
    tiers = Table(title=f"tiers ({data['in_flight_tasks']} tasks in flight{waiting})", show_edge=False)
    # "held": a worker holds them, running or due to run (a retry whose countdown has passed
    # waits there for a free process: not calls out); "retrying": still counting down
    for column in ("tier", "queued jobs", "held", "retrying", "arrivals/s", "p50", "p95", "DLQ", "recommended processes"):
        tiers.add_column(column)
    for t in data["tiers"]:
        p50 = f"{t['p50_latency_s']:.2f}s" if t["p50_latency_s"] is not None else "-"
        p95 = f"{t['p95_latency_s']:.2f}s" if t["p95_latency_s"] is not None else "-"
        tiers.add_row(
            t["tier"], str(t["queued_jobs"]), str(t["in_flight_jobs"]), str(t["waiting_retry_jobs"]),
            f"{t['arrivals_per_s']:.1f}", p50, p95, str(t["dlq"]), str(t["recommended_processes"]),
        )  # fmt: skip
    deployments = Table(title="deployments (this minute)", show_edge=False)
    for column in ("tier", "deployment", "state", "calls", "failures"):
        deployments.add_column(column)
    deployments.add_column("last failure (10 min)", overflow="fold")
    for d in data["deployments"]:
        state = d["state"] if d["state"] == "ok" else f"[yellow]{d['state']}[/yellow]"
        deployments.add_row(d["tier"], d["deployment"], state, str(d["calls_this_minute"]), str(d["failures_this_minute"]),
                            escape(d["last_failure"] or "-"))
    return Group(batches, tiers, deployments)


@dataclass
class DownWatch:
    """Says when every deployment of a tier is failing, and when the tier answers again: a
    run otherwise only slows, with no word of why (its jobs wait for the provider, see
    ``Tier.max_waits``). A tier is failing when each deployment failed since the last look or
    sits out a cooldown, and it answered nothing in between; it is back when it answers (a
    lapsed Retry-After is no answer). Failures from before the first look are not news.
    ``check`` is cheap to call often: it reads Redis every ``every_s``."""

    config: Config
    redis: Any
    say: Callable[[str], None]
    every_s: float = DOWN_CHECK_S
    down: set[str] = field(default_factory=set)
    checked_at: float = 0.0
    answered: dict[str, float] = field(default_factory=dict)  # per tier, its answered calls at the last look
    seen: dict[str, Any] = field(default_factory=dict)  # per deployment, its last failure at the last look

    def check(self) -> None:
        now = time.monotonic()
        if now - self.checked_at < self.every_s:
            return
        self.checked_at = now
        for tier in self.config.tiers:
            names = [tier.deployment_name(i) for i in range(len(tier.deployments))]
            states = [health(self.redis, name) for name in names]
            calls = sum(float(v or 0) for v in self.redis.hmget(STATS, [f"calls|{name}" for name in names]))
            first, before = tier.name not in self.answered, self.answered.get(tier.name, calls)
            self.answered[tier.name] = calls
            fresh = {s["deployment"] for s in states if s["last_failure"] and s["last_failure"] != self.seen.get(s["deployment"])}
            self.seen.update({s["deployment"]: s["last_failure"] for s in states})
            if first:
                continue
            if tier.name in self.down:
                if calls > before:
                    self.down.discard(tier.name)
                    self.say(f"tier {tier.name}: answering again")
            elif fresh and calls == before and all(s["deployment"] in fresh or s["state"] != "ok" for s in states):
                self.down.add(tier.name)
                why = "; ".join(f"{s['deployment']} {s['state']}, last failure {s['last_failure'] or '-'}" for s in states)
                if all(s["for_good"] for s in states):
                    self.say(f"tier {tier.name}: every deployment is failing for good ({why}); its lines end as error lines: "
                             "once that is fixed, `turnout dlq replay` them")
                else:
                    self.say(f"tier {tier.name}: every deployment is failing ({why}); its jobs wait for one to answer, "
                             f"up to {tier.max_waits} retries each (`turnout status` shows the deployments)")
