"""The Celery app: queues, reliability settings, and the per-process runtime the tasks use.

Every process (producer, classify pool, tier pool, collector) builds its app from the same
config and Redis URL, so they agree on queue and task names without importing each other.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from celery import Celery
from kombu import Queue

from schemas.config import CLASSIFY_POOL, Config, Tier, load_config
from schemas.errors import ConfigError, TurnoutError
from workers.broker import connect, kombu_url
from workers.ledger import Ledger

if TYPE_CHECKING:
    from router.classifier import Classifier
    from router.policy import TierPolicy
    from router.scorer import AnswerScorer
    from workers.provider import TierProvider

CLASSIFY_QUEUE = "turnout.classify"
CLASSIFY_TASK = "turnout.classify"
DEFAULT_CONFIG = "turnout.yaml"
#: How often each worker looks for tasks whose worker died (past the visibility timeout).
RESTORE_SWEEP_S = 5
#: Margin on top of twice the longest task before Redis hands an unacknowledged task to another
#: worker: room for a retry's longest countdown (workers.tasks.RETRY_CAP_S, 60 s) and more.
VISIBILITY_MARGIN_S = 120


def config_path() -> Path:
    return Path(os.environ.get("TURNOUT_CONFIG", DEFAULT_CONFIG))


def configured_redis_url(config: Config) -> str | None:
    """TURNOUT_REDIS_URL, else the config's redis_url; None when neither names one."""
    return os.environ.get("TURNOUT_REDIS_URL") or config.redis_url


def redis_url_for(config: Config) -> str:
    url = configured_redis_url(config)
    if not url:
        raise ConfigError("no Redis configured: set TURNOUT_REDIS_URL (or redis_url in the config), or use `turnout run`")
    return url


def visibility_timeout(config: Config) -> int:
    """Longer than any task can be held: a retry's countdown, a wait behind the task its
    process is running, then its own run (every deployment and a judge timing out in turn).

    Redis re-delivers an unacknowledged task after this long, so a shorter value would run a
    slow task twice while it still runs; a longer one delays recovery after a worker dies.
    """
    if config.visibility_timeout_s is not None:
        return config.visibility_timeout_s
    longest = max(tier.longest_run_s for tier in config.tiers)
    return int(2 * longest + VISIBILITY_MARGIN_S)


@dataclass
class Runtime:
    """What a process needs to run tasks, built lazily so that each forked child makes its own."""

    config: Config
    redis_url: str
    providers: dict[str, TierProvider] = field(default_factory=dict)
    scorers: dict[str, AnswerScorer] = field(default_factory=dict)

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(connect(self.redis_url))

    @cached_property
    def classifier(self) -> Classifier:
        from router.classifier import load_classifier

        classifier = load_classifier(self.config.classifier)
        by_kind = [tier.name for tier in self.config.tiers if tier.min_score_by_kind]
        if by_kind and classifier.name == "heuristic":
            logging.getLogger("turnout.app").warning(
                "tiers %s set min_score_by_kind, but the heuristic classifier routes (no trained model file): "
                "its scores carry no kind, so every prompt goes by min_score",
                by_kind,
            )
        return classifier

    @cached_property
    def policy(self) -> TierPolicy:
        from router.policy import TierPolicy

        return TierPolicy(self.config)

    def scorer(self, tier: Tier) -> AnswerScorer:
        """The tier's answer scorer, loaded once per process."""
        if tier.name not in self.scorers:
            from router.scorer import load_scorer

            assert tier.scorer is not None
            self.scorers[tier.name] = load_scorer(tier.scorer.kind, tier.scorer.model_path)
        return self.scorers[tier.name]

    def provider(self, tier: str) -> TierProvider:
        """The tier's provider, made on first use in this process, on its event loop (after fork)."""
        if tier not in self.providers:
            from workers.gate import Gate
            from workers.provider import TierProvider, fake_base_url

            self.providers[tier] = TierProvider(self.config.tier(tier), fake_base_url(self.config), Gate(self.redis_url))
        return self.providers[tier]


def create_app(config: Config, redis_url: str) -> Celery:
    """A Celery app with turnout's queues, tasks and reliability settings."""
    app = Celery("turnout", broker=kombu_url(redis_url), set_as_current=True)
    concurrency = max([config.classify_processes] + [tier.processes for tier in config.tiers])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # results go to the ledger, idempotently, not to a result backend
        task_acks_late=True,  # a task lost with its worker is delivered again ...
        task_reject_on_worker_lost=True,  # ... also when the pool process is killed -9
        # a task that raised is rejected, not acknowledged; Celery rejects it without requeue (on
        # Redis: deleted), so every task puts itself back on its queue (tasks.requeued_on_error)
        task_acks_on_failure_or_timeout=False,
        worker_prefetch_multiplier=1,  # a slow tier task must not hold others hostage
        task_default_queue=CLASSIFY_QUEUE,
        task_queues=[Queue(CLASSIFY_QUEUE)] + [Queue(q) for tier in config.tiers for q in (tier.queue, tier.guard_queue)],
        task_routes={CLASSIFY_TASK: {"queue": CLASSIFY_QUEUE}}
        | {tier.task_name: {"queue": tier.queue} for tier in config.tiers},
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": visibility_timeout(config),
            # kombu's default of 10 connections makes acks fail under load; then the job runs twice
            "max_connections": 16 + 4 * concurrency,
            "health_check_interval": 30,
            # kombu sweeps for timed-out unacked tasks every interval × throttle seconds (10 × 10
            # by default): a re-delivered job could wait ~100 s past the visibility timeout
            "unacked_restore_interval": RESTORE_SWEEP_S,
            "unacked_restore_throttle": 1,
        },
        worker_send_task_events=True,  # Flower sees every pool
        task_send_sent_event=False,  # a PUBLISH per message; Flower still sees received/started/succeeded
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
    )
    app.turnout_runtime = Runtime(config, redis_url)
    from workers.tasks import register

    register(app, config)
    return app


def app_from_env() -> Celery:
    """The app for a process started with TURNOUT_CONFIG and TURNOUT_REDIS_URL in its environment."""
    config = load_config(config_path())
    return create_app(config, redis_url_for(config))


def preflight(config: Config, pools: list[str], runtime: Runtime | None = None) -> None:
    """Raise TurnoutError, in one sentence, on what would fail every task of these pools: an
    unusable classifier model, a tier's API key that cannot be read, an unusable verifier
    file. A worker checks its own pool before it forks; ``turnout run`` checks every pool
    before it starts one (a pool that fails at start would only be restarted, again and again).
    Loads what it checks into ``runtime``, so a worker's pool processes inherit it."""
    from schemas.config import resolve_secret

    runtime = runtime or Runtime(config, "")
    for pool in pools:
        if pool == CLASSIFY_POOL:
            runtime.classifier  # load the model once, before fork
            continue
        tier = config.tier(pool)
        judge = tier.judge if tier.policy == "cascade" else None  # a route tier never calls one
        for deployment in [*tier.deployments, *([judge] if judge is not None else [])]:
            if deployment.api_key:
                try:
                    resolve_secret(deployment.api_key)
                except TurnoutError as exc:
                    raise TurnoutError(f"tier {tier.name}, deployment {deployment.name or deployment.model}: {exc}") from None
        if tier.policy == "cascade" and tier.scorer is not None and tier.judge is None:
            runtime.scorer(tier)  # a bad verifier file fails here, not mid-batch

