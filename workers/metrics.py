"""Prometheus metrics that Flower lacks, read from Redis at scrape time.

The pools write cluster-wide counters into one Redis hash (``turnout:stats``) with one
pipelined call per task; `turnout metrics` turns that hash, the queue lengths, the
dead-letter queues and the batches' ledgers into Prometheus families when scraped. So any
number of metrics servers agree, and a pool that restarts loses no counts.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from schemas.config import Config
from workers.app import CLASSIFY_QUEUE
from workers.dlq import DeadLetters
from workers.ledger import PREFIX, Ledger

log = logging.getLogger("turnout.metrics")

STATS = f"{PREFIX}:stats"
#: Provider latency histogram bucket bounds, seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Whole minutes before this one that `status` and `scale` read their latency and rates from.
RECENT_MINUTES = 2
#: Batches whose per-batch counters are exported (newest first); older ones drop off.
EXPORTED_BATCHES = 20


def recent_stats(client: redis.Redis, minutes: int = 0) -> tuple[dict[str, float], float]:
    """The counters added in the last ``minutes`` (default RECENT_MINUTES) whole minutes and
    this one so far, summed, and the seconds they span (from the oldest of those minutes that
    has counts): what `status` and `scale` read, so their latency and rates say how things go
    now, not since the Redis began."""
    minutes = minutes or RECENT_MINUTES
    now = time.time()
    current = int(now) // 60
    pipe = client.pipeline(transaction=False)
    for minute in range(current - minutes, current + 1):
        pipe.hgetall(f"{STATS}:minute:{minute}")
    summed: dict[str, float] = defaultdict(float)
    oldest = current  # the oldest minute with counts: just after a start, rates span only that
    for minute, counts in zip(range(current - minutes, current + 1), pipe.execute()):
        if counts:
            oldest = min(oldest, minute)
        for key, value in counts.items():
            summed[key.decode()] += float(value)
    return dict(summed), (current - oldest) * 60 + now % 60 or 1.0


class Stats:
    """Cluster-wide counters the tasks add to; keys are ``kind|label|label``."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.pending: dict[str, float] = defaultdict(float)

    def add(self, kind: str, *labels: str, by: float = 1) -> None:
        self.pending["|".join((kind, *labels))] += by

    def observe_latency(self, tier: str, deployment: str, seconds: float) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        bound = str(LATENCY_BUCKETS[index]) if index < len(LATENCY_BUCKETS) else "+Inf"
        self.add("latency_bucket", deployment, bound)
        self.add("latency_sum", deployment, by=seconds)
        self.add("tier_latency_bucket", tier, bound)

    def flush(self) -> None:
        """Add the pending counts; a Redis that refuses them loses them (they are metrics, and a
        task failing over them would run its jobs again)."""
        if not self.pending:
            return
        pipe = self.redis.pipeline(transaction=False)
        minute = f"{STATS}:minute:{int(time.time()) // 60}"
        for key, value in self.pending.items():
            pipe.hincrbyfloat(STATS, key, value)
            pipe.hincrbyfloat(minute, key, value)
        pipe.expire(minute, RECENT_MINUTES * 60 + 120)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not add %d metrics counts: %s", len(self.pending), exc)
        self.pending.clear()


class TurnoutCollector(Collector):
    """Builds every turnout_* family from Redis on each scrape."""

    def __init__(self, config: Config, client: redis.Redis) -> None:
        self.config = config
        self.redis = client

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        yield from self._queues()
        yield from self._counters()
        yield from self._batches()

    def _queues(self) -> Iterable[GaugeMetricFamily]:
        depth = GaugeMetricFamily("turnout_queue_messages", "Messages waiting in a turnout queue", labels=["queue", "tier"])
        jobs = GaugeMetricFamily("turnout_queue_jobs", "Jobs waiting in a queue (messages x jobs per message)", labels=["queue", "tier"])
        dlq = GaugeMetricFamily("turnout_dlq_jobs", "Jobs in a tier's dead-letter queue", labels=["tier"])
        queues = [(CLASSIFY_QUEUE, "classify", self.config.chunk_size)]
        queues += [(tier.queue, tier.name, tier.batch_size) for tier in self.config.tiers]
        pipe = self.redis.pipeline(transaction=False)
        for name, _, _ in queues:
            pipe.llen(name)
        for (name, label, size), length in zip(queues, pipe.execute()):
            depth.add_metric([name, label], int(length))  # listed even with zero consumers, unlike Flower
            jobs.add_metric([name, label], int(length) * size)
        letters = DeadLetters(self.redis)
        for tier in self.config.tiers:
            dlq.add_metric([tier.name], letters.depth(tier.name))
        return [depth, jobs, dlq]

    def _counters(self) -> Iterable[CounterMetricFamily | HistogramMetricFamily]:
        raw = {k.decode(): float(v) for k, v in self.redis.hgetall(STATS).items()}
        families = {
            "jobs": CounterMetricFamily("turnout_jobs", "Jobs finished per tier and outcome", labels=["tier", "outcome"]),
            "routed": CounterMetricFamily("turnout_routed_jobs", "Jobs the classifier sent to each tier", labels=["tier"]),
            "cost": CounterMetricFamily("turnout_cost_usd", "Provider cost in USD per tier", labels=["tier"]),
            "calls": CounterMetricFamily("turnout_deployment_calls", "Answered calls per deployment", labels=["deployment"]),
            "fallback": CounterMetricFamily(
                "turnout_deployment_fallbacks", "Calls that left a failing deployment for the next one", labels=["deployment"]
            ),
        }
        buckets: dict[str, dict[str, float]] = defaultdict(dict)
        sums: dict[str, float] = {}
        for key, value in raw.items():
            kind, *labels = key.split("|")
            if kind in families:
                families[kind].add_metric(labels, value)
            elif kind == "latency_bucket":
                buckets[labels[0]][labels[1]] = value
            elif kind == "latency_sum":
                sums[labels[0]] = value
        yield from families.values()
        yield self._latency(buckets, sums)

    def _latency(self, buckets: dict[str, dict[str, float]], sums: dict[str, float]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "turnout_provider_latency_seconds", "Provider call latency per deployment", labels=["deployment"]
        )
        for deployment, counts in buckets.items():
            running, cumulative = 0.0, []
            for bound in [str(b) for b in LATENCY_BUCKETS] + ["+Inf"]:
                running += counts.get(bound, 0.0)
                cumulative.append((bound, running))
            family.add_metric([deployment], cumulative, sum_value=sums.get(deployment, 0.0))
        return family

    def _batches(self) -> Iterable[GaugeMetricFamily]:
        ledger = Ledger(self.redis)
        lines = GaugeMetricFamily("turnout_batch_lines", "A batch's input lines by state", labels=["batch", "state"])
        cost = GaugeMetricFamily("turnout_batch_cost_usd", "A batch's cost so far per tier", labels=["batch", "tier"])
        frontier = GaugeMetricFamily("turnout_batch_all_frontier_cost_usd", "What the batch would cost on the frontier tier", labels=["batch"])
        cap = GaugeMetricFamily("turnout_batch_max_cost_usd", "A batch's spending cap (--max-cost), for batches with one", labels=["batch"])
        for batch in ledger.batches()[:EXPORTED_BATCHES]:
            status = ledger.status(batch)
            if status is None:
                continue
            lines.add_metric([batch, "submitted"], status.submitted)
            lines.add_metric([batch, "done"], status.done)
            lines.add_metric([batch, "failed"], status.failed)
            for tier, report in status.tiers.items():
                cost.add_metric([batch, tier], report.cost_usd)
            frontier.add_metric([batch], status.frontier_cost_usd)
            if status.max_cost_usd is not None:
                cap.add_metric([batch], status.max_cost_usd)
        return [lines, cost, frontier, cap]


def serve(config: Config, client: redis.Redis, host: str, port: int) -> None:
    """Serve /metrics until SIGTERM or SIGINT. Handled, not left to the default: as a
    container's PID 1 the process would otherwise ignore SIGTERM and wait to be killed."""
    import signal
    import threading

    from prometheus_client import REGISTRY, start_http_server

    REGISTRY.register(TurnoutCollector(config, client))
    start_http_server(port, addr=host)
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    stop.wait()
