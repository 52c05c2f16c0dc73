"""How long a failed job waits before its retry: never long enough to be delivered twice."""

from __future__ import annotations

from pathlib import Path

from schemas.config import load_config
from workers.app import visibility_timeout
from workers.tasks import RETRY_BASE_S, RETRY_CAP_S, RETRY_SLACK_S, backoff, retry_ceiling, retry_countdown

CONFIG = """
{visibility}
tiers:
  - name: cheap
    deployments: [{{model: openai/a, timeout_s: 10}}, {{model: openai/b, timeout_s: 10}}]
  - name: frontier
    min_score: 0.6
    deployments: [{{model: openai/c, timeout_s: 30}}]
"""


def test_a_retry_fits_in_the_visibility_timeout_beside_the_tiers_longest_run(tmp_path: Path) -> None:
    # Given a visibility timeout of 60 s and a cheap tier whose calls may take 20 s in all
    path = tmp_path / "turnout.yaml"
    path.write_text(CONFIG.format(visibility="visibility_timeout_s: 60"))
    config = load_config(path)

    # Then a retry waits at most the visibility timeout less two of its tier's longest runs
    # (one it may wait behind, its own) and a slack; never less than the base delay
    assert retry_ceiling(config, config.tier("cheap")) == 60 - 2 * 20 - RETRY_SLACK_S
    assert retry_ceiling(config, config.tier("frontier")) == RETRY_BASE_S
    # And a micro-batch's countdown is its longest wanted delay, capped there
    assert retry_countdown(config, config.tier("cheap"), [3.0, 9.0]) == 9.0
    assert retry_countdown(config, config.tier("cheap"), [3.0, 50.0]) == 60 - 2 * 20 - RETRY_SLACK_S


def test_the_derived_visibility_timeout_leaves_room_for_the_longest_backoff(tmp_path: Path) -> None:
    path = tmp_path / "turnout.yaml"
    path.write_text(CONFIG.format(visibility=""))
    config = load_config(path)
    for tier in config.tiers:
        assert retry_ceiling(config, tier) == RETRY_CAP_S
        assert RETRY_CAP_S + 2 * tier.longest_run_s < visibility_timeout(config)


def test_backoff_grows_with_attempts_and_honours_retry_after() -> None:
    first = [backoff(1, None) for _ in range(200)]
    fourth = [backoff(4, None) for _ in range(200)]
    assert all(RETRY_BASE_S / 2 <= d <= RETRY_BASE_S for d in first)
    assert all(RETRY_BASE_S * 4 <= d <= RETRY_BASE_S * 8 for d in fourth)
    assert all(backoff(1, 30.0) >= 30.0 for _ in range(20))
    assert max(backoff(20, None) for _ in range(200)) <= RETRY_CAP_S


def test_a_job_a_deployment_failed_for_good_while_the_others_cooled_down_spends_an_attempt() -> None:
    from schemas.errors import ContextWindowError, FatalProviderError, RetryableProviderError
    from workers.answer import BUSY
    from workers.provider import _exhausted

    # Given a pass where the primary answered 401 and the backup was cooling down
    unauthorised = FatalProviderError("authentication_error", "bad key", 401)
    error = _exhausted([unauthorised], [4.0], ["a: authentication_error: bad key", "b: cooling down or at its rate limit"])
    # Then the job is retried later (the backup may answer), spending an attempt: not BUSY,
    # which spends none and would call the failing primary again for ever
    assert isinstance(error, RetryableProviderError) and error.code == "authentication_error" and error.code != BUSY
    assert error.retry_after == 4.0 and "a: authentication_error" in error.message
    # And a pass that called no deployment at all is BUSY, as is one whose only refusal was
    # the prompt's size (the cooling deployment may have a larger window)
    assert _exhausted([], [4.0, 2.0], ["a: cooling", "b: cooling"]).code == BUSY
    too_long = ContextWindowError("context_length_exceeded", "too long", 400)
    assert _exhausted([too_long], [4.0], ["a: context_length_exceeded", "b: cooling"]).code == BUSY
    # And one every deployment failed for good is final
    assert isinstance(_exhausted([unauthorised, unauthorised], [], ["a: 401", "b: 401"]), FatalProviderError)


def test_a_job_every_deployment_refused_for_load_or_failed_on_probation_is_an_outage() -> None:
    from schemas.errors import RetryableProviderError
    from workers.provider import _exhausted

    def failure(status: int, outage: bool) -> RetryableProviderError:
        error = RetryableProviderError("rate_limit_error" if status == 429 else "service_unavailable_error", "no", status, 1.0)
        error.outage = outage  # as TierProvider.complete marks a 429 or a probe's failure
        return error

    # Given a pass where the primary answered 429 and the backup failed on probation
    error = _exhausted([failure(429, True), failure(503, True)], [], ["a: 429", "b: 503"])
    # Then the job's retry is an outage: the provider's state, not the job's
    assert isinstance(error, RetryableProviderError) and error.outage
    # And so is one where the primary was cooling down and the backup refused it for load
    assert _exhausted([failure(429, True)], [3.0], ["a: cooling", "b: 429"]).outage  # type: ignore[attr-defined]
    # But a deployment in service that failed this job makes it the job's failure
    assert not _exhausted([failure(429, True), failure(500, False)], [], ["a: 429", "b: 500"]).outage  # type: ignore[attr-defined]
    assert not _exhausted([failure(500, False)], [3.0], ["a: cooling", "b: 500"]).outage  # type: ignore[attr-defined]


def test_an_outage_costs_a_job_a_wait_not_an_attempt_until_its_waits_are_spent(tmp_path: Path) -> None:
    from schemas.errors import RetryableProviderError
    from schemas.job import Job
    from workers.tasks import _handle_failure

    path = tmp_path / "turnout.yaml"
    path.write_text(CONFIG.format(visibility=""))
    tier = load_config(path).tier("cheap").model_copy(update={"max_waits": 3})
    job = Job(batch_id="b", custom_id="c", line=1, messages=[{"role": "user", "content": "hi"}])
    outage = RetryableProviderError("rate_limit_error", "no deployment answered", 429, 5.0, outage=True)
    # Given a job whose calls every deployment refused, three times (attempts are counted
    # before the call, as the task does)
    delays = []
    for _ in range(3):
        job.attempts += 1
        delays.append(_handle_failure(None, None, tier, job, outage))  # type: ignore[arg-type]
    # Then it spent no attempt, waited each time at least the Retry-After, backing off
    assert job.attempts == 0 and job.waits == 3 and job.errors == []
    assert all(d is not None and d >= 5.0 for d in delays)
    # And once its waits are spent, the next outage failure spends an attempt (and is logged)
    job.attempts += 1
    assert _handle_failure(None, None, tier, job, outage) is not None  # type: ignore[arg-type]
    assert job.attempts == 1 and job.waits == 3 and len(job.errors) == 1


def test_a_deployment_passed_over_for_an_earlier_failure_for_good_is_no_wait_but_no_verdict_either() -> None:
    from schemas.errors import FatalProviderError, RetryableProviderError
    from workers.answer import BUSY
    from workers.provider import _exhausted

    out_of_credit = FatalProviderError("insufficient_quota", "out of credit", 429)
    tried = ["a: insufficient_quota (on an earlier call)", "b: cooling down or at its rate limit"]
    # Given the primary cools down after running out of credit: beside a backup only at its
    # rate limit, the job waits for the backup without spending anything (it will answer)
    assert _exhausted([], [12.0], tried, [out_of_credit], busy=True).code == BUSY
    # And beside a backup cooling down after failures, it waits, counted (an outage): one
    # broken deployment and one down must not hold the job for ever, nor end it at once
    waiting = _exhausted([], [12.0], tried, [out_of_credit], busy=False)
    assert isinstance(waiting, RetryableProviderError) and waiting.outage and waiting.code == "insufficient_quota"
    # And alone (every deployment broken), it spends an attempt without a call, so a bad key
    # everywhere ends each line in seconds but a blip of 401s costs only an attempt
    alone = _exhausted([], [], ["a: insufficient_quota (on an earlier call)"], [out_of_credit])
    assert isinstance(alone, RetryableProviderError) and not alone.outage and alone.code == "insufficient_quota"
    assert "a: insufficient_quota (on an earlier call)" in alone.message


def test_quota_and_size_refusals_are_read_from_what_the_provider_meant() -> None:
    import httpx
    import litellm

    from schemas.errors import ContextWindowError, FatalProviderError, RetryableProviderError
    from workers.provider import classify

    response = httpx.Response(429, request=httpx.Request("POST", "http://x/v1/chat/completions"))

    def rate_limit(message: str, body: dict[str, str] | None = None) -> Exception:
        error = litellm.RateLimitError(message, llm_provider="openai", model="m", response=response)
        error.body = body  # type: ignore[attr-defined]  # as the OpenAI SDK's error carries it
        return error

    # OpenAI's insufficient_quota is known by its body's code: the deployment's failure for good
    quota = classify(rate_limit("You exceeded your current quota, please check your plan", {"code": "insufficient_quota"}))
    assert isinstance(quota, FatalProviderError) and quota.code == "insufficient_quota"
    # Gemini's per-minute limit says the same words without that code: a 429 to wait out
    gemini = classify(rate_limit("You exceeded your current quota, please check your plan and billing details"))
    assert isinstance(gemini, RetryableProviderError) and gemini.status_code == 429
    # A request with more tokens than the per-minute limit is the request's size: no wait mends it
    too_large = classify(rate_limit("Request too large for gpt-4o on tokens per min (TPM): Limit 30000, Requested 45000."))
    assert isinstance(too_large, ContextWindowError) and too_large.code == "request_too_large"


def test_waits_back_off_to_at_most_the_wait_cap() -> None:
    from workers.tasks import WAIT_CAP_S

    assert all(WAIT_CAP_S / 2 <= backoff(30, None, WAIT_CAP_S) <= WAIT_CAP_S for _ in range(200))
    assert all(RETRY_BASE_S / 2 <= backoff(1, None, WAIT_CAP_S) <= RETRY_BASE_S for _ in range(200))


def test_a_dead_letter_says_when_its_job_first_failed_from_its_first_errors_time() -> None:
    from workers.dlq import first_failure

    errors = ["attempt 1 on cheap (2026-12-07T18:07:53Z): service_unavailable_error: down",
              "attempt 2 on cheap (2026-12-07T18:07:58Z): service_unavailable_error: down"]  # fmt: skip
    assert first_failure(errors, 0.0) == 1796666873.0  # 2026-12-07T18:07:53Z
    assert first_failure([], 5.0) == 5.0 and first_failure(["no time here"], 5.0) == 5.0


def test_error_messages_keep_the_providers_words_without_litellms_repeats() -> None:
    from workers.provider import _short

    said = {
        "litellm.InternalServerError: InternalServerError: OpenAIException - Connection error.": "OpenAI: Connection error.",
        "litellm.Timeout: APITimeoutError - Request timed out. Error_str: Request timed out. - timeout value=5.0, time taken=5.06 seconds":
            "Request timed out. timeout value=5.0, time taken=5.06 seconds",
        "the provider said no": "the provider said no",
    }  # fmt: skip
    assert {raw: _short(Exception(raw)) for raw in said} == said
