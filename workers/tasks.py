"""The tasks: classify a chunk of jobs, and answer a micro-batch of one tier's jobs.

A tier task carries up to ``tier.batch_size`` jobs and runs their calls concurrently on
one persistent asyncio loop per worker process: LiteLLM costs ~3 ms of CPU per call, so
one process keeps many calls in flight instead of one. Each job is still treated on its
own: its own fallbacks, retries, DLQ record and result.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from celery import Celery, Task
from celery.exceptions import Ignore, Reject, Retry
from celery.signals import worker_process_shutdown
from kombu.exceptions import OperationalError
from pydantic import ValidationError

from router.classifier import Score
from schemas.config import Config, Tier
from schemas.errors import ContextWindowError, ProviderError, RetryableProviderError
from schemas.job import Job, WireJob
from schemas.result import ResultLine, Response, TurnoutInfo, error_line, request_id
from workers.app import CLASSIFY_QUEUE, CLASSIFY_TASK, Runtime, visibility_timeout
from workers.dlq import BUDGET_SPENT, DeadLetters
from workers.metrics import Stats
from workers.answer import BUSY, Answer
from workers.stragglers import (
    CLAIMED,
    GUARD_S,
    MIN_WAIT_S,
    STILL_OUT,
    claim,
    current_stragglers,
    marked,
    process_stragglers,
    release,
)

log = logging.getLogger("turnout.tasks")

#: Backoff for a job whose every deployment failed: base × 2^attempt, capped, with full jitter.
RETRY_BASE_S = 2.0
RETRY_CAP_S = 60.0
#: The longest backoff between a job's waits for its deployments to come back: the gate
#: already spares the provider (a cooldown, then one probe), so a job need not stay away
#: long after it is back.
WAIT_CAP_S = 30.0
#: Room left in the visibility timeout after a retried task's wait and its longest run.
RETRY_SLACK_S = 5.0
#: A task delivered this many times without finishing (its worker died, or it raised, each time) is split
#: into single jobs; a single job that keeps killing workers goes to the DLQ.
MAX_DELIVERIES = 3
#: A task that failed waits this long before it goes back on its queue.
REQUEUE_PAUSE_S = 1.0
#: At most this many custom_ids are listed in the task's argsrepr that Flower shows.
ARGSREPR_IDS = 64
#: While some calls of a route tier's micro-batch are still out, the answers it already has are
#: recorded this often: a worker dying then loses only the calls in flight, not the answers
#: that waited for the slowest call (and would be paid for again).
EARLY_RECORD_S = 2.0

T = TypeVar("T")
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0


def process_loop() -> asyncio.AbstractEventLoop:
    """This process's event loop, running in a thread of its own, made lazily after fork and
    kept for the process's life: calls a task handed off go on running on it between tasks.

    A loop per task would leak LiteLLM's cached HTTP sessions (one per loop).
    """
    global _loop, _loop_pid
    if _loop is None or _loop_pid != os.getpid():
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="turnout-loop", daemon=True).start()
        _loop, _loop_pid = loop, os.getpid()
    return _loop


def run_on_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on this process's event loop and wait for the result."""
    return asyncio.run_coroutine_threadsafe(coroutine, process_loop()).result()


#: What ``_gather`` gives for a call it stopped waiting for: the call's future, still running.
Handed = asyncio.Future


async def _gather(
    calls: list[Coroutine[Any, Any, T]],
    early: Callable[[list[tuple[int, T]]], None] | None = None,
    hand_off_after: float | None = None,
    room: Callable[[], int] = lambda: 0,
) -> list[T | BaseException | Handed[T]]:
    """Every call's result or exception, in order.

    ``early``, if given, is handed the results that came in (by index, each once) every
    ``EARLY_RECORD_S`` while others are still out. With ``hand_off_after``, once half the
    calls have answered and ``hand_off_after`` times as long has passed (at least
    ``stragglers.MIN_WAIT_S``), the calls still out are left running and given as their
    futures, if ``room()`` takes that many.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    futures = [asyncio.ensure_future(call) for call in calls]
    pending: set[asyncio.Future[T]] = set(futures)
    reported: set[int] = set()
    next_early = start + EARLY_RECORD_S
    cut_at: float | None = None
    while pending:
        waiting_for_half = hand_off_after is not None and cut_at is None
        deadlines = [t for t in (next_early if early else None, cut_at) if t is not None]
        timeout = max(0.0, min(deadlines) - loop.time()) if deadlines else None
        when = asyncio.FIRST_COMPLETED if waiting_for_half else asyncio.ALL_COMPLETED
        _, pending = await asyncio.wait(pending, timeout=timeout, return_when=when)
        now = loop.time()
        if not pending:
            break
        if waiting_for_half and 2 * (len(futures) - len(pending)) >= len(futures):
            assert hand_off_after is not None
            cut_at = start + max(MIN_WAIT_S, hand_off_after * (now - start))
        if early is not None and now >= next_early:
            next_early = now + EARLY_RECORD_S
            ready = [(i, f.result()) for i, f in enumerate(futures) if i not in reported and f.done() and f.exception() is None]
            if ready:
                reported.update(i for i, _ in ready)
                early(ready)
        if cut_at is not None and now >= cut_at:
            if len(pending) <= room():
                break
            cut_at = now + 1.0  # this process holds as many handed calls as it may: look again soon
    outcomes: list[T | BaseException | Handed[T]] = []
    for future in futures:
        if not future.done():
            outcomes.append(future)
            continue
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


def send_tier(app: Celery, tier: Tier, batch_id: str, jobs: Sequence[Job], countdown: float = 0,
              guard: str | None = None, ahead: bool = False) -> None:
    """Send jobs to a tier's queue in micro-batches of the tier's batch size. ``guard``: as the
    guard of calls handed off under that token (see complete_batch); a guard, and with
    ``ahead`` any task, goes to the tier's guard queue, which its workers read beside the
    tier's queue: it does not wait behind the backlog."""
    for start in range(0, len(jobs), tier.batch_size):
        piece = jobs[start : start + tier.batch_size]
        app.send_task(
            tier.task_name,
            args=[batch_id, dump(piece)],
            kwargs={"guard": guard} if guard else None,
            queue=tier.guard_queue if guard or ahead else tier.queue,
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


def run_classify(task: Task, runtime: Runtime, batch_id: str, raw_jobs: list[dict[str, Any]]) -> None:
    """The classify task: route a chunk; a chunk whose task never finishes (its worker dies, or
    it fails, each time) ends its lines as error lines after MAX_DELIVERIES."""
    deliveries = _count_delivery(task, runtime)
    if deliveries <= MAX_DELIVERIES:
        classify_chunk(task.app, runtime, batch_id, raw_jobs)
        return
    message = f"the classify task for this job did not finish in {deliveries - 1} deliveries (see the classify worker's log)"
    for job in readable_jobs(runtime, batch_id, raw_jobs):
        reject_job(runtime, job, "classify_failed", message)


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


def complete_batch(task: Task, runtime: Runtime, tier: Tier, batch_id: str, raw_jobs: list[dict[str, Any]], guard: str | None = None) -> None:
    """Answer a micro-batch: skip what is already answered, call the rest concurrently, record each.

    ``guard``: these are jobs an earlier task handed off with their calls still out, under this
    token (workers/stragglers.py); the guard calls nothing itself.
    """
    jobs = readable_jobs(runtime, batch_id, raw_jobs)
    if not jobs:
        return
    if guard:
        _guard(task.app, runtime, tier, batch_id, guard, jobs)
        return
    deliveries = _count_delivery(task, runtime)
    answered = runtime.ledger.answered(batch_id, [job.custom_id for job in jobs])
    fresh = [job for job, done in zip(jobs, answered) if not done]
    if deliveries > 1:  # this task's process died after handing calls off: their guard owns them
        fresh = [job for job, owned in zip(fresh, marked(runtime.ledger.redis, batch_id, [j.custom_id for j in fresh])) if not owned]
    if not fresh or _split_if_poisoned(task, runtime, tier, batch_id, len(jobs), fresh, deliveries):
        return
    stats = Stats(runtime.ledger.redis)
    if _over_budget(runtime, tier, batch_id, fresh, stats):
        return
    provider = runtime.provider(tier.name)
    extra = {"logprobs": True} if tier.scorer is not None and "logprob" in tier.scorer.kind else {}
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
    route = tier.policy == "route"
    stragglers = process_stragglers(runtime.ledger.redis)
    calls = [provider.complete(job, extra) for job in fresh]
    outcomes = run_on_loop(_gather(calls, record_early if route else None,
                                   tier.hand_off_after if route else None, lambda: stragglers.room(tier.batch_size)))
    retry: list[tuple[Job, float]] = []
    answers: list[tuple[Job, Answer]] = []
    handed: list[tuple[Job, Handed[Answer]]] = []
    for i, (job, outcome) in enumerate(zip(fresh, outcomes)):
        if i in recorded_early:
            continue
        if isinstance(outcome, asyncio.Future):
            handed.append((job, outcome))
            continue
        job.attempts += 1
        if isinstance(outcome, Answer):
            answers.append((job, outcome))
            continue
        delay = _failed(task.app, runtime, tier, job, outcome, stats)
        if delay is not None:
            retry.append((job, delay))
    if tier.policy == "cascade" and answers:
        answers = _cascade(task.app, runtime, tier, answers, stats)
    for recorded, (_, answer) in zip(record_answers(runtime, tier, answers), answers):
        if recorded:
            _count_answer(stats, tier, answer)
    stats.flush()
    if handed:  # after recording the answers it has: handing off can fail, and they are paid for
        _hand_off(task.app, runtime, tier, batch_id, handed)
    if retry:
        again = [job for job, _ in retry]
        countdown = retry_countdown(runtime.config, tier, [d for _, d in retry])
        task.retry(args=[batch_id, dump(again)], countdown=countdown, argsrepr=argsrepr(batch_id, again))


def _over_budget(runtime: Runtime, tier: Tier, batch_id: str, jobs: list[Job], stats: Stats) -> bool:
    """Dead-letter ``jobs`` uncalled when their batch has spent its cap (``--max-cost``): a soft
    cap, read once per micro-batch, so the calls already out when it is reached still finish."""
    spent, cap = runtime.ledger.spending(batch_id)
    if cap is None or spent < cap:
        return False
    message = (f"batch {batch_id} has spent ${spent:.4f} of its ${cap:.4f} cap (--max-cost), so this line was not sent; "
               f"to answer it, raise the cap: with pools running, `turnout dlq replay --batch {batch_id} --max-cost USD`; "
               f"after a `turnout run`, `turnout dlq replay --batch {batch_id}`, then the run again with a higher --max-cost")
    log.warning("batch %s is over its cost cap ($%.4f of $%.4f): %d jobs dead-lettered uncalled", batch_id, spent, cap, len(jobs))
    for job in jobs:
        dead_letter(runtime, tier, job, BUDGET_SPENT, message)
        stats.add("jobs", tier.name, "failed")
    stats.flush()
    return True


def _failed(app: Celery, runtime: Runtime, tier: Tier, job: Job, outcome: BaseException, stats: Stats) -> float | None:
    """Take a failed call's job on its path; returns its retry delay, or None when it left this tier."""
    if isinstance(outcome, ProviderError):
        error = outcome
    else:  # a bug of ours, not the provider's: log it, and let the job retry, then dead-letter
        log.error("job %s failed unexpectedly: %r", job.custom_id, outcome, exc_info=outcome)
        error = RetryableProviderError("internal_error", f"{type(outcome).__name__}: {outcome}")
    delay = _handle_failure(app, runtime, tier, job, error)
    stats.add("jobs", tier.name, "retried" if delay is not None else "failed")
    return delay


def _hand_off(app: Celery, runtime: Runtime, tier: Tier, batch_id: str, handed: list[tuple[Job, Handed[Answer]]]) -> None:
    """Leave the calls still out to this process's loop: their guard is sent first (the jobs as
    they are now), then each call is marked and leased (workers/stragglers.py)."""

    def settler(job: Job) -> Callable[[object], None]:
        return lambda outcome: _settle(app, runtime, tier, job, outcome)

    token = uuid.uuid4().hex[:16]
    jobs = [job for job, _ in handed]
    send_tier(app, tier, batch_id, jobs, countdown=guard_countdown(runtime.config, tier), guard=token)
    deadline = time.monotonic() + tier.longest_run_s
    calls: list[tuple[str, asyncio.Future[Any], Callable[[object], None]]] = [(job.custom_id, future, settler(job)) for job, future in handed]
    run_on_loop(process_stragglers(runtime.ledger.redis).adopt(batch_id, token, deadline, calls))
    log.info("batch %s: handed %d calls still out to this process's loop, the task goes on", batch_id, len(jobs))


def guard_countdown(config: Config, tier: Tier) -> float:
    """A guard's wait: long enough for a dead process's leases to lapse, within the visibility timeout."""
    return min(GUARD_S, retry_ceiling(config, tier))


def _settle(app: Celery, runtime: Runtime, tier: Tier, job: Job, outcome: object) -> None:
    """A handed-off call ended: record its answer, or take its failure on its path, as its task would have."""
    job.attempts += 1
    stats = Stats(runtime.ledger.redis)
    if isinstance(outcome, Answer):
        if record_answers(runtime, tier, [(job, outcome)])[0]:
            _count_answer(stats, tier, outcome)
    else:
        assert isinstance(outcome, BaseException)
        delay = _failed(app, runtime, tier, job, outcome, stats)
        if delay is not None:
            send_tier(app, tier, job.batch_id, [job], countdown=retry_countdown(runtime.config, tier, [delay]))
    stats.flush()


def _guard(app: Celery, runtime: Runtime, tier: Tier, batch_id: str, token: str, jobs: list[Job]) -> None:
    """Look after jobs whose calls were handed off under ``token``.

    A job answered, settled or handed off again is left alone; one whose call is still out is
    guarded again later; one whose lease lapsed (its process died with the call out) is claimed
    and sent on as an ordinary job, the lost call counted as an attempt, so a job that kills
    its process each time ends in the DLQ. The guard calls nothing; a claim holds until the
    job is sent on, so a guard that fails in between claims it again when delivered again.
    """
    answered = runtime.ledger.answered(batch_id, [job.custom_id for job in jobs])
    open_jobs = [job for job, done in zip(jobs, answered) if not done]
    verdicts = claim(runtime.ledger.redis, batch_id, token, [job.custom_id for job in open_jobs])
    still_out = [job for job, verdict in zip(open_jobs, verdicts) if verdict == STILL_OUT]
    if still_out:
        send_tier(app, tier, batch_id, still_out, countdown=guard_countdown(runtime.config, tier), guard=token)
    lost = [job for job, verdict in zip(open_jobs, verdicts) if verdict == CLAIMED]
    again = []
    for job in lost:
        job.attempts += 1
        job.errors.append(f"attempt {job.attempts} on {tier.name} ({_now()}): its worker stopped while the call was out")
        if job.attempts >= tier.max_attempts:
            dead_letter(runtime, tier, job, "worker_lost", f"the job's worker stopped {job.attempts} times while its call was out")
        else:
            again.append(job)
    if again:
        log.warning("batch %s: %d handed-off calls were lost with their process; sending their jobs again", batch_id, len(again))
        send_tier(app, tier, batch_id, again, ahead=True)
    # only now: a guard that fails before this is delivered again and finds them still claimed
    release(runtime.ledger.redis, batch_id, token, [job.custom_id for job in lost])


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
        job.waits = 0  # the next tier's deployments are another provider's to wait for
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
    return primary.cost(answer.prompt_tokens, answer.completion_tokens)


def _now() -> str:
    """The time an attempt failed, as a dead letter's error list gives it (UTC, to the second)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _handle_failure(app: Celery, runtime: Runtime, tier: Tier, job: Job, error: ProviderError) -> float | None:
    """Decide a failed job's path; returns the retry delay, or None when it left this tier."""
    if isinstance(error, RetryableProviderError) and error.code == BUSY:
        # every deployment was cooling down or at its rate limit: no call was made, so no
        # attempt is spent; the job waits for the gate instead of drifting into the DLQ
        job.attempts -= 1
        return max(error.retry_after or RETRY_BASE_S, RETRY_BASE_S)
    if isinstance(error, RetryableProviderError) and error.outage and job.waits < tier.max_waits:
        # every deployment it called refused it for load or was down already: the provider's
        # state, not the job's; it waits that out, backing off, without spending an attempt
        job.attempts -= 1
        job.waits += 1
        return backoff(job.waits, error.retry_after, WAIT_CAP_S)
    job.errors.append(f"attempt {job.attempts} on {tier.name} ({_now()}): {error.code}: {error.message}")
    if isinstance(error, RetryableProviderError) and job.attempts < tier.max_attempts:
        return backoff(job.attempts, error.retry_after)
    if isinstance(error, ContextWindowError):
        bigger = _next_tier(runtime.config, tier)
        if bigger is not None:
            job.decision = job.decision.model_copy(update={"tier": bigger.name}) if job.decision else None
            job.waits = 0
            send_tier(app, bigger, job.batch_id, [job])
            return None
    waited = f" (it had waited through {job.waits} retries while the deployments were down)" if job.waits else ""
    dead_letter(runtime, tier, job, error.code, error.message + waited, error.status_code, error.deployments)
    return None


def dead_letter(
    runtime: Runtime, tier: Tier, job: Job, code: str, message: str, status: int | None = None, failed: Sequence[str] = ()
) -> None:
    """Park the job in the tier's DLQ and give its line an error record; ``failed``: the
    deployments its last attempt tried (its line's ``fallbacks``)."""
    DeadLetters(runtime.ledger.redis).add(tier.name, job, code, message)
    decision = job.decision
    info = TurnoutInfo(
        line=job.line,
        tier=tier.name,
        score=decision.score if decision else None,
        reasons=decision.reasons if decision else [],
        attempts=job.attempts,
        fallbacks=list(failed),
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


def backoff(attempt: int, retry_after: float | None, cap: float = RETRY_CAP_S) -> float:
    """Exponential backoff with full jitter, never sooner than the provider's Retry-After."""
    ceiling = min(cap, RETRY_BASE_S * 2 ** (attempt - 1))
    return max(retry_after or 0.0, random.uniform(ceiling / 2, ceiling))


def _next_tier(config: Config, tier: Tier) -> Tier | None:
    names = [t.name for t in config.tiers]
    index = names.index(tier.name)
    return config.tiers[index + 1] if index + 1 < len(names) else None


def _count_delivery(task: Task, runtime: Runtime) -> int:
    """How many times this task (this retry of it) has been delivered, this time included."""
    pipe = runtime.ledger.redis.pipeline()
    pipe.incr(_deliveries_key(task))
    pipe.expire(_deliveries_key(task), 86_400)
    return int(pipe.execute()[0])


def _uncount_delivery(task: Task, runtime: Runtime) -> None:
    """Take back this delivery's count (it failed on Redis, not on the job), if Redis lets us."""
    try:
        runtime.ledger.redis.decr(_deliveries_key(task))
    except redis.RedisError:
        pass


def _deliveries_key(task: Task) -> str:
    return f"turnout:deliveries:{task.request.id}:{task.request.retries}"


def _split_if_poisoned(task: Task, runtime: Runtime, tier: Tier, batch_id: str, size: int, jobs: list[Job], deliveries: int) -> bool:
    """A task that keeps killing its worker is split, then dead-lettered.

    With late acks, a task whose job crashes the process is delivered again and again.
    After MAX_DELIVERIES a micro-batch (of ``size`` jobs, ``jobs`` of them still to answer)
    is split into single-job tasks (its innocent neighbours then finish); a single job past
    the limit goes to the DLQ.
    """
    if deliveries <= MAX_DELIVERIES:
        return False
    if size > 1:
        for job in jobs:
            send_tier(task.app, tier, batch_id, [job])
        return True
    job = jobs[0]
    job.attempts += 1
    job.errors.append(f"delivered {deliveries} times; it never finished")
    message = f"the job's task did not finish in {deliveries - 1} deliveries: its worker died, or it failed (see the worker's log)"
    dead_letter(runtime, tier, job, "worker_lost", message)
    return True


# --- registration ----------------------------------------------------------------------


def register(app: Celery, config: Config) -> None:
    """Register the classify task and one completion task per tier, named for Flower."""
    runtime: Runtime = app.turnout_runtime

    @app.task(name=CLASSIFY_TASK, bind=True)
    def classify(self: Task, batch_id: str, jobs: list[dict[str, Any]]) -> None:
        with requeued_on_error(self, runtime):
            run_classify(self, runtime, batch_id, jobs)

    for tier in config.tiers:
        _register_tier(app, runtime, tier)
    longest = max(tier.longest_run_s for tier in config.tiers)

    @worker_process_shutdown.connect(weak=False, dispatch_uid="turnout.stragglers")
    def finish_handed_calls(**_: Any) -> None:
        """A pool process about to exit (a warm shutdown, a scale-down) waits for the calls it
        handed off, as for a running task: cut, they would be paid for again by their guard."""
        stragglers = current_stragglers()
        if stragglers is not None and stragglers.out:
            log.info("waiting up to %g s (or until this worker is killed) for %d handed-off calls before this process exits",
                     longest, len(stragglers.out))
            left = stragglers.drain(longest)
            if left:
                log.warning("%d handed-off calls still out at exit: their guard runs them again", left)


def _register_tier(app: Celery, runtime: Runtime, tier: Tier) -> None:
    # max_retries=None: Celery would count a task's retries across all its jobs and, past 3,
    # fail it and drop them; each job's own attempts (tier.max_attempts) decide instead
    @app.task(name=tier.task_name, bind=True, max_retries=None)
    def complete(self: Task, batch_id: str, jobs: list[dict[str, Any]], guard: str | None = None) -> None:
        with requeued_on_error(self, runtime):
            complete_batch(self, runtime, tier, batch_id, jobs, guard)


@contextmanager
def requeued_on_error(task: Task, runtime: Runtime) -> Iterator[None]:
    """A task that raises goes back on its queue instead of being dropped.

    With late acks and ``task_acks_on_failure_or_timeout`` off, Celery rejects a failed task
    without requeueing it (and so does ``Task.retry`` when it cannot publish the retry), which
    on Redis deletes the message: a Redis refusing writes for a moment (disk full, out of
    memory) while a task records its answers would lose its jobs. Rejected with requeue, it is
    delivered again (at once; when Redis cannot take it back, it stays unacknowledged and
    returns after the visibility timeout), and what it had recorded is skipped. A failure of
    Redis does not count as a delivery (_count_delivery): only crashes and our own bugs bring a
    task to its delivery limit."""
    try:
        yield
    except (Retry, Ignore):
        raise
    except Reject as exc:
        if exc.requeue:
            raise
        log.error("task %s[%s] could not send its retry (%s); it goes back on its queue", task.name, task.request.id, exc.reason)
        time.sleep(REQUEUE_PAUSE_S)
        raise Reject(exc.reason, requeue=True) from exc
    except Exception as exc:
        log.exception("task %s[%s] failed; it goes back on its queue", task.name, task.request.id)
        if isinstance(exc, (redis.RedisError, OperationalError)):
            _uncount_delivery(task, runtime)
        time.sleep(REQUEUE_PAUSE_S)  # a failure that repeats at once must not spin
        raise Reject(exc, requeue=True) from exc
