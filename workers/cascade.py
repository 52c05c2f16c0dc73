"""Scoring a cascade tier's answers inside its task: the scorer, and the judge's calls.

The scorers themselves are pure (router/scorer.py); what needs the runtime is here: the
per-process scorer, the answer's finish reason and logprobs, and for a judge scorer the
call to the judge deployment, whose cost is added to the job's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from router.scorer import NEUTRAL, UNJUDGED, Candidate, JudgeScorer, cost_weighted, format_failures, judge_prompt
from schemas.config import Tier
from schemas.job import Job
from workers.answer import Answer
from workers.app import Runtime

Scored = tuple[float, list[str], float]  # value, reasons, judge cost in USD


async def score_answers(runtime: Runtime, tier: Tier, answers: list[tuple[Job, Answer]]) -> list[Scored]:
    assert tier.scorer is not None
    candidates = [_candidate(job, answer) for job, answer in answers]
    scored: list[Scored]
    if tier.scorer.kind.endswith("judge"):
        scored = list(await asyncio.gather(*(_judge(runtime, tier, c) for c in candidates)))
    else:
        scored = [(s.value, s.reasons, 0.0) for s in runtime.scorer(tier).score_batch(candidates)]
    if not tier.scorer.cost_aware:
        return scored
    weighted = cost_weighted([v for v, _, _ in scored], [c.prompt for c in candidates], [c.answer for c in candidates])
    return [
        (v, reasons, cost) if _unjudged(reasons) else (float(w), [*reasons, f"cost_weighted_from:{v:.4f}"], cost)
        for w, (v, reasons, cost) in zip(weighted, scored)
    ]


def _unjudged(reasons: list[str]) -> bool:
    """A neutral score that stands for "no verdict" (the judge failed, no logprobs): not a
    probability to weigh, or a judge outage would escalate every short answer."""
    return any(r.startswith(UNJUDGED) for r in reasons)


def _candidate(job: Job, answer: Answer) -> Candidate:
    choice = (answer.body.get("choices") or [{}])[0]
    content = (choice.get("logprobs") or {}).get("content") or []
    logprobs = [float(t["logprob"]) for t in content if isinstance(t, dict) and "logprob" in t] or None
    text = str((choice.get("message") or {}).get("content") or "")
    return Candidate(job.last_user_text, text, choice.get("finish_reason"), logprobs, job.max_tokens)


async def _judge(runtime: Runtime, tier: Tier, candidate: Candidate) -> Scored:
    """Ask the judge deployment to grade one answer; format failures are rejected without a call."""
    import litellm

    from workers.provider import fake_base_url, litellm_params

    assert tier.scorer is not None and tier.scorer.judge is not None
    if tier.scorer.kind.startswith("format+"):
        failures = format_failures(candidate.prompt, candidate.answer, finish_reason=candidate.finish_reason, max_tokens=candidate.max_tokens)
        if failures:
            return 0.0, failures, 0.0
    params = litellm_params(tier.scorer.judge, fake_base_url(runtime.config))
    try:
        response: Any = await litellm.acompletion(messages=judge_prompt(candidate.prompt, candidate.answer), **params)
    except Exception as exc:  # a judge that fails must not lose the job: keep the answer as unjudged
        return NEUTRAL, [f"judge_failed:{type(exc).__name__}"], 0.0
    verdict = JudgeScorer.from_reply(str(response.choices[0].message.content or ""))
    cost = float((getattr(response, "_hidden_params", {}) or {}).get("response_cost") or 0.0)
    return verdict.value, verdict.reasons, cost
