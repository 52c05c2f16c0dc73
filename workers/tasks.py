"""The tasks: classify a chunk of jobs, and answer a micro-batch of one tier's jobs.

A tier task carries up to ``tier.batch_size`` jobs and runs their calls concurrently on
one persistent asyncio loop per worker process: LiteLLM costs ~3 ms of CPU per call, so
one process keeps many calls in flight instead of one. Each job is still treated on its
own: its own fallbacks, retries, DLQ record and result.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from celery import Celery, Task
from pydantic import ValidationError

from router.classifier import Score
from schemas.config import Config, Tier
from schemas.errors import ContextWindowError, ProviderError, RetryableProviderError
from schemas.job import Job, WireJob
from schemas.result import ResultLine, Response, TurnoutInfo, error_line, request_id
from workers.app import CLASSIFY_QUEUE, CLASSIFY_TASK, Runtime, visibility_timeout
from workers.dlq import DeadLetters
from workers.metrics import Stats
from workers.answer import BUSY, Answer

log = logging.getLogger("turnout.tasks")

#: Backoff for a job whose every deployment failed: base × 2^attempt, capped, with full jitter.
RETRY_BASE_S = 2.0
RETRY_CAP_S = 60.0
#: Room left in the visibility timeout after a retried task's wait and its longest run.
RETRY_SLACK_S = 5.0
#: A task delivered this many times without finishing (its worker died each time) is split
#: into single jobs; a single job that keeps killing workers goes to the DLQ.
MAX_DELIVERIES = 3
#: At most this many custom_ids are listed in the task's argsrepr that Flower shows.
ARGSREPR_IDS = 64
#: While some calls of a route tier's micro-batch are still out, the answers it already has are
#: recorded this often: a worker dying then loses only the calls in flight, not the answers
#: that waited for the slowest call (and would be paid for again).
EARLY_RECORD_S = 2.0

T = TypeVar("T")
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0


def run_on_loop(coroutine: Awaitable[T]) -> T:
    """Run on this process's own event loop, made lazily after fork and kept for its life.

    asyncio.run per task would leak LiteLLM's cached HTTP sessions (one per loop).
    """
    global _loop, _loop_pid
    if _loop is None or _loop_pid != os.getpid():
        _loop = asyncio.new_event_loop()
        _loop_pid = os.getpid()
    return _loop.run_until_complete(coroutine)


async def _gather(calls: list[Awaitable[T]], early: Callable[[list[tuple[int, T]]], None] | None = None) -> list[T | BaseException]:
    """Every call's result or exception, in order. ``early``, if given, is handed the results
    that came in (by index, each once) every ``EARLY_RECORD_S`` while others are still out."""
    futures = [asyncio.ensure_future(call) for call in calls]
    pending: set[asyncio.Future[T]] = set(futures)
    handed: set[int] = set()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=EARLY_RECORD_S if early else None)
        if pending and early is not None:
            ready = [(i, f.result()) for i, f in enumerate(futures) if i not in handed and f.done() and f.exception() is None]
            if ready:
                handed.update(i for i, _ in ready)
                early(ready)
    outcomes: list[T | BaseException] = []
    for future in futures:
        exception = future.exception()
        outcomes.append(exception if exception is not None else future.result())
    return outcomes


def argsrepr(batch_id: str, jobs: Sequence[Job] | Sequence[WireJob]) -> str:
    """What Flower shows: the batch, the job count and the custom_ids, never the prompts."""
    ids = ",".join(job.custom_id for job in jobs[:ARGSREPR_IDS])
    more = f",…+{len(jobs) - ARGSREPR_IDS}" if len(jobs) > ARGSREPR_IDS else ""
    return f"(batch={batch_id!r}, jobs={len(jobs)}, ids=[{ids}{more}])"


def dump(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    return [job.model_dump(mode="json", exclude_defaults=True) for job in jobs]


def send_classify(app: Celery, batch_id: str, jobs: Sequence[Job] | Sequence[WireJob]) -> None:
    """One classify task for these jobs; WireJobs are sent as they are, already in queue form."""
    bodies = [job.body if isinstance(job, WireJob) else job.model_dump(mode="json", exclude_defaults=True) for job in jobs]
    app.send_task(CLASSIFY_TASK, args=[batch_id, bodies], queue=CLASSIFY_QUEUE, argsrepr=argsrepr(batch_id, jobs))


def send_tier(app: Celery, tier: Tier, batch_id: str, jobs: Sequence[Job], countdown: float = 0) -> None:
    """Send jobs to a tier's queue in micro-batches of the tier's batch size."""
    for start in range(0, len(jobs), tier.batch_size):
        piece = jobs[start : start + tier.batch_size]
        app.send_task(
            tier.task_name,
            args=[batch_id, dump(piece)],
            queue=tier.queue,
            countdown=countdown or None,
            argsrepr=argsrepr(batch_id, piece),
        )


# --- classify --------------------------------------------------------------------------


def classify_chunk(app: Celery, runtime: Runtime, batch_id: str, raw_jobs: list[dict[str, Any]]) -> None:
    """Score each job, attach its decision, and send it to its tier's queue.

    A job this worker cannot handle (unreadable, a tier its config lacks, a prompt the
    classifier fails on) ends as an error line on its own: the task raising instead would
    be delivered again and fail again, and the batch would never finish.
    """
    jobs = readable_jobs(runtime, batch_id, raw_jobs)
    by_tier: dict[str, list[Job]] = defaultdict(list)
    for job, score in zip(jobs, _scores(runtime, jobs)):
        if isinstance(score, BaseException):
            reject_job(runtime, job, "classify_failed", f"the classifier failed on this prompt: {type(score).__name__}: {score}")
            continue
        try:
            job.decision = runtime.policy.decide(score, job.pin)
        except ValidationError as exc:  # a score outside [0, 1], or NaN
            message = f"the classifier gave an unusable score {score.value!r}: {exc.errors()[0]['msg']}"
            reject_job(runtime, job, "classify_failed", message)
            continue
        if job.decision.tier not in runtime.policy.tier_names:  # pinned by a producer with another config
            message = (
                f"this worker's config has no tier {job.decision.tier!r} (it has {runtime.policy.tier_names}); "
                "run the producer and the workers with the same config"
            )
            reject_job(runtime, job, "unknown_tier", message)
            continue
        by_tier[job.decision.tier].append(job)
    stats = Stats(runtime.ledger.redis)
    for tier_name, tier_jobs in by_tier.items():
        send_tier(app, runtime.config.tier(tier_name), batch_id, tier_jobs)
        stats.add("routed", tier_name, by=len(tier_jobs))
    stats.flush()


def _scores(runtime: Runtime, jobs: list[Job]) -> list[Score | BaseException]:
    """The classifier's scores; when the batch call fails, each job is scored alone, so only
    the prompts it fails on are lost to it (and logged)."""
    texts = [job.prompt_text for job in jobs]
    try:
        return list(runtime.classifier.score_batch(texts))
    except Exception:
        log.exception("the classifier failed on a chunk of %d jobs; scoring them one by one", len(jobs))
    scores: list[Score | BaseException] = []
    for job, text in zip(jobs, texts):
        try:
            scores.append(runtime.classifier.score(text))
        except Exception as exc:
            log.exception("the classifier failed on job %s", job.custom_id)
            scores.append(exc)
    return scores


def readable_jobs(runtime: Runtime, batch_id: str, raw_jobs: list[dict[str, Any]]) -> list[Job]:
    """The jobs of a task's arguments; one this worker cannot read (sent by a producer of
    another turnout version, say) becomes its line's error line instead of failing the task."""
    jobs = []
    for raw in raw_jobs:
        try:
            jobs.append(Job.model_validate(raw))
        except ValidationError as exc:
            custom_id = raw.get("custom_id") if isinstance(raw, dict) else None
            custom_id = custom_id if isinstance(custom_id, str) and custom_id else None
            line = raw.get("line") if isinstance(raw, dict) else None
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"]) or "job"
            message = (
                f"this worker cannot read the job ({where}: {problem['msg']}); "
                "run the producer and the workers on the same turnout version"
            )
            info = TurnoutInfo(line=line if isinstance(line, int) else 0)
            # no id to key it by: a digest of the job, the same on every delivery, one per job
            digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]
            key = custom_id or f"@job:{digest}"
            log.error("job %s in batch %s is unreadable: %s", key, batch_id, message)
            runtime.ledger.record_error(batch_id, key, error_line(batch_id, custom_id, "unreadable_job", message, info))
    return jobs


def reject_job(runtime: Runtime, job: Job, code: str, message: str) -> None:
    """End a job that this worker cannot route as its line's error line."""
    log.error("job %s in batch %s: %s", job.custom_id, job.batch_id, message)
    line = error_line(job.batch_id, job.custom_id, code, message, TurnoutInfo(line=job.line, attempts=job.attempts))
    runtime.ledger.record_error(job.batch_id, job.custom_id, line)


# --- complete --------------------------------------------------------------------------


def complete_batch(task: Task, runtime: Runtime, tier: Tier, batch_id: str, raw_jobs: list[dict[str, Any]]) -> None:
    """Answer a micro-batch: skip what is already answered, call the rest concurrently, record each."""
    jobs = readable_jobs(runtime, batch_id, raw_jobs)
    if not jobs or _split_if_poisoned(task, runtime, tier, batch_id, jobs):
        return
    answered = runtime.ledger.answered(batch_id, [job.custom_id for job in jobs])
    fresh = [job for job, done in zip(jobs, answered) if not done]
    provider = runtime.provider(tier.name)
    extra = {"logprobs": True} if tier.scorer is not None and "logprob" in tier.scorer.kind else {}
    stats = Stats(runtime.ledger.redis)
    recorded_early: set[int] = set()

    def record_early(ready: list[tuple[int, Answer]]) -> None:
        for i, _ in ready:
            fresh[i].attempts += 1
        pairs = [(fresh[i], answer) for i, answer in ready]
        for recorded, (_, answer) in zip(record_answers(runtime, tier, pairs), pairs):
            if recorded:
                _count_answer(stats, tier, answer)
        recorded_early.update(i for i, _ in ready)

    # a cascade tier scores its answers together before keeping any: it records at the end
    early = record_early if tier.policy == "route" else None
    outcomes = run_on_loop(_gather([provider.complete(job, extra) for job in fresh], early))
    retry: list[tuple[Job, float]] = []
    answers: list[tuple[Job, Answer]] = []
    for i, (job, outcome) in enumerate(zip(fresh, outcomes)):
        if i in recorded_early:
            continue
        job.attempts += 1
        if isinstance(outcome, Answer):
            answers.append((job, outcome))
        elif isinstance(outcome, ProviderError):
            delay = _handle_failure(task.app, runtime, tier, job, outcome)
            stats.add("jobs", tier.name, "retried" if delay is not None else "failed")
            if delay is not None:
                retry.append((job, delay))
        else:  # a bug of ours, not the provider's: log it, and let the job retry, then dead-letter
            log.error("job %s failed unexpectedly: %r", job.custom_id, outcome, exc_info=outcome)
            error = RetryableProviderError("internal_error", f"{type(outcome).__name__}: {outcome}")
            delay = _handle_failure(task.app, runtime, tier, job, error)
            stats.add("jobs", tier.name, "retried" if delay is not None else "failed")
            if delay is not None:
                retry.append((job, delay))
    if tier.policy == "cascade" and answers:
        answers = _cascade(task.app, runtime, tier, answers, stats)
    for recorded, (_, answer) in zip(record_answers(runtime, tier, answers), answers):
        if recorded:
            _count_answer(stats, tier, answer)
    stats.flush()
    if retry:
        again = [job for job, _ in retry]
        countdown = retry_countdown(runtime.config, tier, [d for _, d in retry])
        task.retry(args=[batch_id, dump(again)], countdown=countdown, argsrepr=argsrepr(batch_id, again))


def _count_answer(stats: Stats, tier: Tier, answer: Answer) -> None:
    stats.add("jobs", tier.name, "done")
    stats.add("cost", tier.name, by=answer.cost_usd)
    stats.add("calls", answer.deployment)
    stats.observe_latency(tier.name, answer.deployment, answer.latency_s)
    for deployment in answer.fallbacks:
        stats.add("fallback", deployment)


def _cascade(app: Celery, runtime: Runtime, tier: Tier, answers: list[tuple[Job, Answer]], stats: Stats) -> list[tuple[Job, Answer]]:
    """Score each answer; send the ones below the threshold to the next tier with their call attached.

    Returns the answers this tier keeps. An escalated job's first call rides along in
    ``job.calls``, so the final line records both calls and their summed cost.
    """
    from workers.cascade import score_answers

    assert tier.scorer is not None  # the config guarantees it for policy cascade
    scores = run_on_loop(score_answers(runtime, tier, answers))
    kept: list[tuple[Job, Answer]] = []
    escalated: list[Job] = []
    for (job, answer), (value, reasons, judge_cost) in zip(answers, scores):
        answer.extra["score"] = value
        answer.extra["score_reasons"] = reasons
        answer.cost_usd += judge_cost
        if value >= tier.scorer.threshold:
            kept.append((job, answer))
            continue
        job.calls.append(call_record(tier, answer) | {"answer": answer_text(answer.body)})
        escalated.append(job)
    bigger = _next_tier(runtime.config, tier)
    if escalated and bigger is not None:
        send_tier(app, bigger, escalated[0].batch_id, escalated)
        stats.add("jobs", tier.name, "escalated", by=len(escalated))
    return kept


def call_record(tier: Tier, answer: Answer) -> dict[str, Any]:
    """One model call as the output line lists it."""
    record: dict[str, Any] = {
        "tier": tier.name,
        "deployment": answer.deployment,
        "model": answer.model,
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "cost_usd": answer.cost_usd,
        "latency_s": round(answer.latency_s, 4),
    }
    if "score" in answer.extra:
        record["score"] = round(answer.extra["score"], 4)
        record["score_reasons"] = answer.extra["score_reasons"]
    return record


def answer_text(body: dict[str, Any]) -> str:
    choices = body.get("choices") or [{}]
    return str((choices[0].get("message") or {}).get("content") or "")


def record_answers(runtime: Runtime, tier: Tier, answers: list[tuple[Job, Answer]]) -> list[bool]:
    """Record a micro-batch's answers in one round trip; False for a job that already had one."""
    if not answers:
        return []
    items = [(job.custom_id, result_line(tier, job, answer), frontier_cost(runtime.config, answer)) for job, answer in answers]
    return runtime.ledger.record_ok_many(answers[0][0].batch_id, items)


def result_line(tier: Tier, job: Job, answer: Answer) -> ResultLine:
    decision = job.decision
    info = TurnoutInfo(
        line=job.line,
        tier=tier.name,
        model=answer.model,
        deployment=answer.deployment,
        score=decision.score if decision else None,
        reasons=decision.reasons if decision else [],
        attempts=job.attempts,
        fallbacks=answer.fallbacks,
        latency_s=round(answer.latency_s, 4),
        cost_usd=answer.cost_usd + sum(call["cost_usd"] for call in job.calls),
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        calls=job.calls + [call_record(tier, answer)] if job.calls or tier.policy == "cascade" else [],
    )
    return ResultLine(
        id=request_id(job.batch_id, job.custom_id),
        custom_id=job.custom_id,
        response=Response(status_code=200, request_id=answer.request_id, body=answer.body),
        turnout=info,
    )


def frontier_cost(config: Config, answer: Answer) -> float:
    """What this answer would have cost on the frontier tier's primary deployment (same tokens)."""
    primary = config.frontier.deployments[0]
    return (answer.prompt_tokens * primary.input_cost_per_million + answer.completion_tokens * primary.output_cost_per_million) / 1e6


def _handle_failure(app: Celery, runtime: Runtime, tier: Tier, job: Job, error: ProviderError) -> float | None:
    """Decide a failed job's path; returns the retry delay, or None when it left this tier."""
    if isinstance(error, RetryableProviderError) and error.code == BUSY:
        # every deployment was cooling down or at its rate limit: no call was made, so no
        # attempt is spent; the job waits for the gate instead of drifting into the DLQ
        job.attempts -= 1
        return max(error.retry_after or RETRY_BASE_S, RETRY_BASE_S)
    job.errors.append(f"attempt {job.attempts} on {tier.name}: {error.code}: {error.message}")
    if isinstance(error, RetryableProviderError) and job.attempts < tier.max_attempts:
        return backoff(job.attempts, error.retry_after)
    if isinstance(error, ContextWindowError):
        bigger = _next_tier(runtime.config, tier)
        if bigger is not None:
            job.decision = job.decision.model_copy(update={"tier": bigger.name}) if job.decision else None
            send_tier(app, bigger, job.batch_id, [job])
            return None
    dead_letter(runtime, tier, job, error.code, error.message, error.status_code)
    return None


def dead_letter(runtime: Runtime, tier: Tier, job: Job, code: str, message: str, status: int | None = None) -> None:
    """Park the job in the tier's DLQ and give its line an error record."""
    DeadLetters(runtime.ledger.redis).add(tier.name, job, code, message)
    decision = job.decision
    info = TurnoutInfo(
        line=job.line,
        tier=tier.name,
        score=decision.score if decision else None,
        reasons=decision.reasons if decision else [],
        attempts=job.attempts,
    )
    line = error_line(job.batch_id, job.custom_id, code, message, info)
    if status is not None:
        line.response = Response(status_code=status, request_id="", body={"error": {"code": code, "message": message}})
    runtime.ledger.record_error(job.batch_id, job.custom_id, line)


def retry_countdown(config: Config, tier: Tier, delays: Sequence[float]) -> float:
    """One countdown for a micro-batch's retried jobs: the longest they asked for, capped."""
    return min(max(delays), retry_ceiling(config, tier))


def retry_ceiling(config: Config, tier: Tier) -> float:
    """The longest a retry may wait: a retried task sits unacknowledged in a worker until its
    countdown ends, waits for a free pool process (up to one longest run with prefetch 1),
    then runs, and Redis hands it to a second worker if all that outlasts the visibility
    timeout (the job would then be paid twice). A job sent back sooner
    than a deployment's Retry-After loses nothing: the gate still holds that deployment cool,
    so the job waits again without spending an attempt."""
    # the countdown, then perhaps a wait for the process busy with another task, then its own run
    room = visibility_timeout(config) - 2 * tier.longest_run_s - RETRY_SLACK_S
    return max(RETRY_BASE_S, min(RETRY_CAP_S, room))


def backoff(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter, never sooner than the provider's Retry-After."""
    ceiling = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (attempt - 1))
    return max(retry_after or 0.0, random.uniform(ceiling / 2, ceiling))


def _next_tier(config: Config, tier: Tier) -> Tier | None:
    names = [t.name for t in config.tiers]
    index = names.index(tier.name)
    return config.tiers[index + 1] if index + 1 < len(names) else None


def _split_if_poisoned(task: Task, runtime: Runtime, tier: Tier, batch_id: str, jobs: list[Job]) -> bool:
    """Count deliveries of this task; one that keeps killing its worker is split, then dead-lettered.

    With late acks, a task whose job crashes the process is delivered again and again.
    After MAX_DELIVERIES a micro-batch is split into single-job tasks (its innocent
    neighbours then finish); a single job past the limit goes to the DLQ.
    """
    key = f"turnout:deliveries:{task.request.id}:{task.request.retries}"
    pipe = runtime.ledger.redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, 86_400)
    deliveries = int(pipe.execute()[0])
    if deliveries <= MAX_DELIVERIES:
        return False
    if len(jobs) > 1:
        for job in jobs:
            send_tier(task.app, tier, batch_id, [job])
        return True
    job = jobs[0]
    job.attempts += 1
    job.errors.append(f"delivered {deliveries} times; its worker died every time")
    dead_letter(runtime, tier, job, "worker_lost", f"the job's worker died {deliveries - 1} times while running it")
    return True


# --- registration ----------------------------------------------------------------------


def register(app: Celery, config: Config) -> None:
    """Register the classify task and one completion task per tier, named for Flower."""
    runtime: Runtime = app.turnout_runtime

    @app.task(name=CLASSIFY_TASK, bind=True)
    def classify(self: Task, batch_id: str, jobs: list[dict[str, Any]]) -> None:
        classify_chunk(self.app, runtime, batch_id, jobs)

    for tier in config.tiers:
        _register_tier(app, runtime, tier)


def _register_tier(app: Celery, runtime: Runtime, tier: Tier) -> None:
    # max_retries=None: Celery would count a task's retries across all its jobs and, past 3,
    # fail it and drop them; each job's own attempts (tier.max_attempts) decide instead
    @app.task(name=tier.task_name, bind=True, max_retries=None)
    def complete(self: Task, batch_id: str, jobs: list[dict[str, Any]]) -> None:
        complete_batch(self, runtime, tier, batch_id, jobs)
