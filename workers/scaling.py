"""How many workers each tier needs: Little's law, capped by the deployments' rate limits.

A tier answering ``rate`` jobs/s at provider latency ``L`` keeps ``rate × L`` calls in
flight; one worker process keeps ``batch_size`` in flight. Past the sum of the tier's
rpm limits more workers only collect 429s, so the rate is capped there first.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from schemas.config import Config, Tier
from workers.metrics import STATS, recent_stats

#: How soon a backlog should be drained when recommending workers for it.
DEFAULT_DRAIN_S = 600.0
#: Latency assumed for a tier that has not answered anything yet.
DEFAULT_LATENCY_S = 1.0
#: Messages read from each tier queue's head to count its jobs (the rest at their mean): few,
#: as each carries its micro-batch's prompts, and status reads them every refresh.
QUEUE_SAMPLE = 8
#: How a tier task shows its job count to Flower, status and the queue count (tasks.argsrepr).
JOBS_SHOWN = re.compile(r"\bjobs=(\d+)")


@dataclass(frozen=True)
class Recommendation:
    tier: str
    arrival_per_s: float
    queued_jobs: int
    latency_s: float
    target_per_s: float
    in_flight: float
    processes: int
    capped_by_rate_limit: bool
    held_jobs: int = 0
    drain_s: float = DEFAULT_DRAIN_S

    @property
    def note(self) -> str:
        cap = ", capped by the rate limits" if self.capped_by_rate_limit else ""
        backlog = self.queued_jobs + self.held_jobs
        why = f"{self.arrival_per_s:.1f} arriving + {backlog} waiting / {self.drain_s:.0f}s" if backlog else f"{self.arrival_per_s:.1f} arriving"
        return f"{why} = {self.target_per_s:.1f} jobs/s × {self.latency_s:.2f}s = {self.in_flight:.0f} in flight{cap}"


def recommend(
    tier: Tier, arrival_per_s: float, queued_jobs: int, latency_s: float, drain_s: float = DEFAULT_DRAIN_S, held_jobs: int = 0
) -> Recommendation:
    """Processes for one tier: keep up with arrivals and drain the backlog within ``drain_s``.
    The backlog is the queued jobs and those workers hold (running, or waiting out a retry):
    a tier whose jobs all wait for a retry still needs a process to answer them."""
    target = arrival_per_s + (queued_jobs + held_jobs) / drain_s
    limits = [d.rpm / 60.0 for d in tier.deployments if d.rpm]
    capped = bool(limits) and len(limits) == len(tier.deployments) and target > sum(limits)
    if capped:
        target = sum(limits)
    in_flight = target * latency_s
    processes = max(1 if target > 0 else 0, math.ceil(in_flight / tier.batch_size))
    return Recommendation(tier.name, arrival_per_s, queued_jobs, latency_s, target, in_flight, processes, capped, held_jobs, drain_s)


@dataclass(frozen=True)
class Snapshot:
    at: float
    routed: dict[str, float]
    queued: dict[str, int]
    latency: dict[str, float]
    recent_arrivals: dict[str, float] = field(default_factory=dict)


def job_count(message: dict[str, Any], default: int) -> int:
    """The jobs a task message carries, from the ``jobs=N`` its argsrepr shows (tasks.argsrepr)."""
    found = JOBS_SHOWN.search(str((message.get("headers") or {}).get("argsrepr") or ""))
    return int(found.group(1)) if found else default


def queued_jobs(depth: int, sample: list[bytes], batch_size: int) -> int:
    """Jobs in a tier queue of ``depth`` messages: those of the ``sample`` (its newest), and the
    rest at the sample's mean. A micro-batch is often partial (a classify chunk's share of a
    tier), so messages × batch size overcounted, and scale advised processes for jobs not there."""
    counts = []
    for raw in sample:
        try:
            counts.append(job_count(json.loads(raw), batch_size))
        except (ValueError, TypeError, AttributeError):
            counts.append(batch_size)  # not a message of ours
    if not counts:
        return depth * batch_size
    return sum(counts) + round((depth - len(counts)) * sum(counts) / len(counts))


def snapshot(config: Config, client: redis.Redis) -> Snapshot:
    """Routed-job counters, queue depths (in jobs), and per tier its mean provider latency and
    arrival rate over the last few minutes (``recent_stats``); a tier with no call lately takes
    its all-time mean latency."""
    raw = {k.decode(): float(v) for k, v in client.hgetall(STATS).items()}
    recent, span = recent_stats(client)
    pipe = client.pipeline(transaction=False)
    for tier in config.tiers:
        pipe.llen(tier.queue)
        pipe.lrange(tier.queue, 0, QUEUE_SAMPLE - 1)
    replies = pipe.execute()
    depths, samples = replies[0::2], replies[1::2]
    latency: dict[str, float] = {}
    for tier in config.tiers:
        names = [tier.deployment_name(i) for i in range(len(tier.deployments))]
        for counts in (recent, raw):
            calls = sum(counts.get(f"calls|{n}", 0.0) for n in names)
            if calls:
                latency[tier.name] = sum(counts.get(f"latency_sum|{n}", 0.0) for n in names) / calls
                break
        else:
            latency[tier.name] = DEFAULT_LATENCY_S
    return Snapshot(
        at=time.monotonic(),
        routed={tier.name: raw.get(f"routed|{tier.name}", 0.0) for tier in config.tiers},
        queued={tier.name: queued_jobs(int(depth), sample, tier.batch_size) for tier, depth, sample in zip(config.tiers, depths, samples)},
        latency=latency,
        recent_arrivals={tier.name: recent.get(f"routed|{tier.name}", 0.0) / span for tier in config.tiers},
    )


def recommendations(
    config: Config, before: Snapshot, after: Snapshot, drain_s: float = DEFAULT_DRAIN_S, held: dict[str, int] | None = None
) -> list[Recommendation]:
    """Per tier: arrivals at the higher of the rate between the two snapshots and the last
    few minutes' (a short look between snapshots often sees none arrive), and ``held``, the
    jobs workers hold, in the backlog beside the queued ones."""
    elapsed = max(after.at - before.at, 1e-6)
    return [
        recommend(
            tier,
            max(max(after.routed[tier.name] - before.routed[tier.name], 0.0) / elapsed, after.recent_arrivals.get(tier.name, 0.0)),
            after.queued[tier.name],
            after.latency[tier.name],
            drain_s,
            (held or {}).get(tier.name, 0),
        )
        for tier in config.tiers
    ]
