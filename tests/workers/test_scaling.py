"""Worker recommendations: Little's law, capped by the deployments' rate limits."""

from __future__ import annotations

from schemas.config import Tier
from workers.scaling import recommend


def tier(rpm: int | None = None, batch_size: int = 32) -> Tier:
    deployments = [{"model": "openai/a", "rpm": rpm}, {"model": "openai/b", "rpm": rpm}]
    return Tier.model_validate({"name": "cheap", "batch_size": batch_size, "deployments": deployments})


def test_in_flight_calls_are_arrival_rate_times_latency() -> None:
    # 100 jobs/s at 2 s latency keeps 200 calls in flight: 7 processes of 32
    advice = recommend(tier(), arrival_per_s=100, queued_jobs=0, latency_s=2.0)
    assert advice.in_flight == 200 and advice.processes == 7 and not advice.capped_by_rate_limit


def test_a_backlog_adds_the_rate_that_drains_it_in_time() -> None:
    advice = recommend(tier(), arrival_per_s=0, queued_jobs=6000, latency_s=1.0, drain_s=60)
    assert advice.target_per_s == 100 and advice.processes == 4


def test_no_point_in_concurrency_above_the_rate_limits() -> None:
    # two deployments at 600 rpm each can take 20 jobs/s together, whatever arrives
    advice = recommend(tier(rpm=600), arrival_per_s=500, queued_jobs=0, latency_s=1.0)
    assert advice.capped_by_rate_limit and advice.target_per_s == 20 and advice.processes == 1


def test_an_idle_tier_needs_no_processes() -> None:
    assert recommend(tier(), arrival_per_s=0, queued_jobs=0, latency_s=1.0).processes == 0


def test_jobs_workers_hold_count_as_backlog_so_a_tier_retrying_them_keeps_a_process() -> None:
    # Nothing arriving or queued, but 196 jobs waiting out a retry: the tier still needs a process
    advice = recommend(tier(), arrival_per_s=0, queued_jobs=0, latency_s=1.0, held_jobs=196)
    assert advice.processes == 1 and advice.target_per_s > 0
    assert advice.note.startswith("0.0 arriving + 196 waiting / 600s = ")
