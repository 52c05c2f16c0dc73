"""How many workers each tier needs: Little's law, capped by the deployments' rate limits.

A tier answering ``rate`` jobs/s at provider latency ``L`` keeps ``rate × L`` calls in
flight; one worker process keeps ``batch_size`` in flight. Past the sum of the tier's
rpm limits more workers only collect 429s, so the rate is capped there first.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis

from schemas.config import Config, Tier
from workers.metrics import STATS

#: How soon a backlog should be drained when recommending workers for it.
DEFAULT_DRAIN_S = 600.0
#: Latency assumed for a tier that has not answered anything yet.
DEFAULT_LATENCY_S = 1.0


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

    @property
    def note(self) -> str:
        cap = ", capped by the rate limits" if self.capped_by_rate_limit else ""
        return f"{self.target_per_s:.1f} jobs/s × {self.latency_s:.2f}s = {self.in_flight:.0f} in flight{cap}"


def recommend(tier: Tier, arrival_per_s: float, queued_jobs: int, latency_s: float, drain_s: float = DEFAULT_DRAIN_S) -> Recommendation:
    """Processes for one tier: keep up with arrivals and drain the backlog within ``drain_s``."""
    target = arrival_per_s + queued_jobs / drain_s
    limits = [d.rpm / 60.0 for d in tier.deployments if d.rpm]
    capped = bool(limits) and len(limits) == len(tier.deployments) and target > sum(limits)
    if capped:
        target = sum(limits)
    in_flight = target * latency_s
    processes = max(1 if target > 0 else 0, math.ceil(in_flight / tier.batch_size))
    return Recommendation(tier.name, arrival_per_s, queued_jobs, latency_s, target, in_flight, processes, capped)


@dataclass(frozen=True)
class Snapshot:
    at: float
    routed: dict[str, float]
    queued: dict[str, int]
    latency: dict[str, float]


def snapshot(config: Config, client: redis.Redis) -> Snapshot:
    """Routed-job counters, queue depths (in jobs) and mean provider latency per tier, now."""
    raw = {k.decode(): float(v) for k, v in client.hgetall(STATS).items()}
    pipe = client.pipeline(transaction=False)
    for tier in config.tiers:
        pipe.llen(tier.queue)
    depths = pipe.execute()
    latency: dict[str, float] = {}
    for tier in config.tiers:
        names = [tier.deployment_name(i) for i in range(len(tier.deployments))]
        calls = sum(raw.get(f"calls|{n}", 0.0) for n in names)
        total = sum(raw.get(f"latency_sum|{n}", 0.0) for n in names)
        latency[tier.name] = total / calls if calls else DEFAULT_LATENCY_S
    return Snapshot(
        at=time.monotonic(),
        routed={tier.name: raw.get(f"routed|{tier.name}", 0.0) for tier in config.tiers},
        queued={tier.name: int(depth) * tier.batch_size for tier, depth in zip(config.tiers, depths)},
        latency=latency,
    )


def recommendations(config: Config, before: Snapshot, after: Snapshot, drain_s: float = DEFAULT_DRAIN_S) -> list[Recommendation]:
    elapsed = max(after.at - before.at, 1e-6)
    return [
        recommend(
            tier,
            max(after.routed[tier.name] - before.routed[tier.name], 0.0) / elapsed,
            after.queued[tier.name],
            after.latency[tier.name],
            drain_s,
        )
        for tier in config.tiers
    ]
