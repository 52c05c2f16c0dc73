"""The fake provider answers like OpenAI over real HTTP, and misbehaves on request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from workers.fake_provider import FakeProviderOptions, configure, fetch_stats, reset, run_in_thread

# LiteLLM fetches its cost map from GitHub at import unless told otherwise; tests run offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

Reply = tuple[int, dict[str, str], dict[str, Any]]


@pytest.fixture
def provider() -> Iterator[Callable[..., str]]:
    """Starts fake providers with the given options; stops them after the test."""
    stops: list[Callable[[], None]] = []

    def start(**options: Any) -> str:
        url, stop = run_in_thread(FakeProviderOptions(**options))
        stops.append(stop)
        return url

    yield start
    for stop in stops:
        stop()


def chat(url: str, content: str = "What is the capital of France?", model: str = "fake-cheap",
         headers: dict[str, str] | None = None, timeout: float = 10, **extra: Any) -> Reply:
    """POST one chat completion; returns status, headers and JSON body, errors included."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}], **extra}).encode()
    request = urllib.request.Request(f"{url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_a_completion_has_openai_shape_and_deterministic_content(provider: Callable[..., str]) -> None:
    # Given a well-behaved provider
    url = provider()

    # When the same question is asked twice
    status, _, first = chat(url, model="fake-frontier")
    _, _, second = chat(url, model="fake-frontier")

    # Then both answers have OpenAI's shape and the same content, echoing the model
    assert status == 200
    assert first["object"] == "chat.completion" and first["id"].startswith("chatcmpl-")
    assert isinstance(first["created"], int)
    assert first["model"] == "fake-frontier"
    choice = first["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith("[fake-frontier] answer to: What is the capital of France?")
    assert choice["finish_reason"] == "stop"
    usage = first["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert second["choices"][0]["message"]["content"] == choice["message"]["content"]


def test_another_model_gives_another_answer(provider: Callable[..., str]) -> None:
    url = provider()
    assert chat(url, model="a")[2]["choices"][0]["message"]["content"] != chat(url, model="b")[2]["choices"][0]["message"]["content"]


def test_prompt_tokens_grow_with_the_prompt_at_about_four_characters_each(provider: Callable[..., str]) -> None:
    url = provider()
    short = chat(url, content="x" * 40)[2]["usage"]["prompt_tokens"]
    long = chat(url, content="x" * 4040)[2]["usage"]["prompt_tokens"]
    assert long - short == 1000


def test_max_tokens_truncates_the_reply_with_finish_reason_length(provider: Callable[..., str]) -> None:
    # Given a provider, when a reply is capped at 3 tokens
    url = provider()
    _, _, full = chat(url)
    status, _, capped = chat(url, max_tokens=3)

    # Then it is cut short, counted as 3 tokens and finishes for "length"
    assert status == 200
    assert capped["choices"][0]["finish_reason"] == "length"
    assert capped["usage"]["completion_tokens"] == 3
    assert full["choices"][0]["message"]["content"].startswith(capped["choices"][0]["message"]["content"])
    assert len(capped["choices"][0]["message"]["content"]) < len(full["choices"][0]["message"]["content"])


def test_a_prompt_over_the_context_limit_is_refused_with_context_length_exceeded(provider: Callable[..., str]) -> None:
    # Given a model with a 100-token window
    url = provider(context_limit=100)

    # When a 500-token prompt is sent
    status, _, body = chat(url, content="word " * 400)

    # Then OpenAI's 400 context_length_exceeded comes back, naming the limit
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == "messages"
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["message"].startswith("This model's maximum context length is 100 tokens.")
    assert chat(url, content="short")[0] == 200


def test_a_failed_model_answers_503_while_another_model_answers(provider: Callable[..., str]) -> None:
    # Given one server whose "primary" deployment is down
    url = provider(fail_models={"primary": 503})

    # Then primary gets 503s and backup answers, and the stats say so per model
    assert chat(url, model="primary")[0] == 503
    assert chat(url, model="backup")[0] == 200
    stats = fetch_stats(url)
    assert stats["by_model"] == {"primary": 1, "backup": 1}
    assert stats["by_status"] == {"503": 1, "200": 1}


def test_a_marked_prompt_fails_with_its_status_after_its_hang(provider: Callable[..., str]) -> None:
    # Given prompts marked SLOWFAIL hang 0.3 s and then fail with 500
    url = provider(hang_on=["SLOWFAIL"], hang_s=0.3, fail_on={"SLOWFAIL": 500})

    # Then a marked prompt gets its 500 after the hang, and others are answered
    assert chat(url, content="a SLOWFAIL one")[0] == 500
    assert chat(url, content="a plain one")[0] == 200
    stats = fetch_stats(url)
    assert stats["hangs"] == 1
    assert stats["by_status"] == {"500": 1, "200": 1}


def test_a_model_over_its_rate_limit_gets_429_with_retry_after(provider: Callable[..., str]) -> None:
    # Given a limit of 2 requests a minute per model
    url = provider(rate_limit_rpm=2)

    # When a model is asked three times
    statuses = [chat(url)[0] for _ in range(3)]
    status, headers, body = chat(url)

    # Then the third is refused until a slot frees a minute later; other models are not affected
    assert statuses == [200, 200, 429]
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    assert 55 <= int(headers["Retry-After"]) <= 60
    assert chat(url, model="fake-frontier")[0] == 200
    assert fetch_stats(url)["max_rpm_seen_by_model"] == {"fake-cheap": 4, "fake-frontier": 1}


def test_config_takes_a_model_down_and_brings_it_back_at_run_time(provider: Callable[..., str]) -> None:
    # Given a healthy provider
    url = provider()
    assert chat(url, model="primary")[0] == 200

    # When the primary is taken down, then it fails
    configure(url, fail_models={"primary": 503})
    assert chat(url, model="primary")[0] == 503

    # When it is brought back, then it answers again
    options = configure(url, fail_models={})
    assert options["fail_models"] == {}
    assert chat(url, model="primary")[0] == 200


def test_config_refuses_an_unknown_option(provider: Callable[..., str]) -> None:
    url = provider()
    with pytest.raises(urllib.error.HTTPError) as refused:
        configure(url, eror_rate=1.0)
    assert refused.value.code == 400


def test_reset_zeroes_the_stats(provider: Callable[..., str]) -> None:
    url = provider()
    chat(url)
    reset(url)
    assert fetch_stats(url)["requests"] == 0 and fetch_stats(url)["by_status"] == {}


def test_random_errors_repeat_with_the_same_seed(provider: Callable[..., str]) -> None:
    # Given two providers with the same seed and half the requests failing
    first, second = provider(error_rate=0.5, seed=7), provider(error_rate=0.5, seed=7)

    # Then both fail the same requests, with the configured kinds, and 429s carry Retry-After
    replies = [chat(first) for _ in range(30)]
    assert [r[0] for r in replies] == [chat(second)[0] for _ in range(30)]
    assert {r[0] for r in replies} == {200, 429, 500, 503}
    assert all(r[1]["Retry-After"] == "1" for r in replies if r[0] == 429)


def test_a_request_without_the_api_key_gets_401(provider: Callable[..., str]) -> None:
    url = provider(auth_key="sk-right")
    status, _, body = chat(url, headers={"Authorization": "Bearer sk-wrong"})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert chat(url, headers={"Authorization": "Bearer sk-right"})[0] == 200


def test_bad_answers_are_fixed_by_prompt_and_a_stronger_model_fails_a_subset(provider: Callable[..., str]) -> None:
    # Given a weak model that fails half the prompts and a strong one that fails a tenth
    url = provider(bad_answer_rate={"weak": 0.5, "strong": 0.1})
    prompts = [f"question {i}" for i in range(60)]

    def bad(model: str) -> set[str]:
        return {p for p in prompts if not chat(url, p, model)[2]["choices"][0]["message"]["content"].startswith("[")}

    # Then the strong model's bad answers are among the weak model's, and they repeat
    weak, strong = bad("weak"), bad("strong")
    assert 15 <= len(weak) <= 45 and strong < weak
    assert bad("weak") == weak


def test_logprobs_are_returned_when_asked_and_are_low_for_bad_answers(provider: Callable[..., str]) -> None:
    url = provider(bad_answer_rate={"weak": 1.0})
    good = chat(url, model="strong", logprobs=True)[2]["choices"][0]["logprobs"]["content"]
    bad = chat(url, content="I need help", model="weak", logprobs=True)[2]["choices"][0]["logprobs"]["content"]
    assert good and all(-0.3 <= t["logprob"] <= 0 for t in good)
    assert all(t["logprob"] < -1 for t in bad)
    assert chat(url, logprobs=True)[2] != chat(url)[2]
    assert chat(url)[2]["choices"][0]["logprobs"] is None


def test_a_hanging_request_times_the_client_out(provider: Callable[..., str]) -> None:
    # Given every request hangs for 5 s
    url = provider(timeout_rate=1.0, hang_s=5)

    # When the client waits 0.3 s, then it times out and the provider records the hang-up
    with pytest.raises(TimeoutError):
        chat(url, timeout=0.3)
    deadline = time.monotonic() + 2
    while fetch_stats(url)["abandoned"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fetch_stats(url)["abandoned"] == 1


def test_only_prompts_with_a_hang_marker_hang(provider: Callable[..., str]) -> None:
    # Given prompts containing "POISON" hang for 5 s
    url = provider(hang_on=["POISON"], hang_s=5)

    # Then an ordinary prompt is answered at once, and a poison one times the client out
    assert chat(url, content="hello", timeout=2)[0] == 200
    with pytest.raises(TimeoutError):
        chat(url, content="a POISON prompt", timeout=0.3)
    assert fetch_stats(url)["hangs"] == 1


def test_latency_delays_each_answer(provider: Callable[..., str]) -> None:
    url = provider(latency_ms=150, jitter_ms=20)
    started = time.monotonic()
    chat(url)
    assert 0.12 <= time.monotonic() - started < 1.0


def test_models_are_listed_with_and_without_the_v1_prefix(provider: Callable[..., str]) -> None:
    url = provider()
    for base in (url, url.removesuffix("/v1")):
        with urllib.request.urlopen(f"{base}/models", timeout=5) as response:
            listed = json.loads(response.read())
        assert listed["object"] == "list"
        assert {"fake-cheap", "fake-frontier"} <= {m["id"] for m in listed["data"]}
    assert chat(url.removesuffix("/v1"))[0] == 200


def test_serve_writes_its_port_to_the_ready_file(tmp_path: Path) -> None:
    # Given a provider served on port 0 in a child process
    ready = tmp_path / "port"
    child = subprocess.Popen([sys.executable, "-c", (
        "from workers.fake_provider import FakeProviderOptions, serve; "
        f"serve(FakeProviderOptions(), '127.0.0.1', 0, ready_file={str(ready)!r})"
    )])
    try:
        # When the ready file appears, then the port it names answers
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert chat(f"http://127.0.0.1:{int(ready.read_text())}/v1")[0] == 200
    finally:
        # And SIGTERM stops it cleanly
        child.terminate()
        assert child.wait(timeout=10) == 0


def test_litellm_gets_the_reply_and_usage_back(provider: Callable[..., str]) -> None:
    import litellm

    # Given a provider that wants a key
    url = provider(auth_key="fake")

    # When LiteLLM calls it as an OpenAI deployment
    response = litellm.completion(model="openai/fake-cheap", api_base=url, api_key="fake",
                                  messages=[{"role": "user", "content": "Say hello"}], max_tokens=50)

    # Then the reply and the usage come back through LiteLLM's types
    assert response.choices[0].message.content.startswith("[fake-cheap] answer to: Say hello")
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens == fetch_stats(url)["prompt_tokens"]
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def complete_once(redis_url: str, tier: Any, fake_url: str) -> None:
    """One job through the tier's deployments, as a tier task calls them, on a gate of its own."""
    import asyncio

    from schemas.job import Job
    from tests.conftest import other_db
    from workers.gate import Gate
    from workers.provider import TierProvider

    job = Job(batch_id="b", custom_id="a", line=1, messages=[{"role": "user", "content": "hi"}])

    async def call() -> None:
        gate = Gate(other_db(redis_url, 12))
        try:
            await gate.redis.flushdb()
            await TierProvider(tier, fake_url, gate).complete(job)
        finally:
            await gate.redis.flushdb()
            await gate.redis.aclose()

    asyncio.run(call())


def test_a_job_no_deployment_answers_fails_naming_each_deployment_and_its_error(provider: Callable[..., str], redis_url: str) -> None:
    from schemas.config import Tier
    from schemas.errors import RetryableProviderError

    # Given a tier of two deployments, both down (503 and 502)
    url = provider(fail_models={"primary": 503, "backup": 502})
    tier = Tier.model_validate({"name": "cheap", "deployments": [
        {"model": "openai/primary", "name": "cheap-primary", "api_base": "fake"},
        {"model": "openai/backup", "name": "cheap-backup", "api_base": "fake"},
    ]})  # fmt: skip

    # When a job is sent
    with pytest.raises(RetryableProviderError) as failed:
        complete_once(redis_url, tier, url)

    # Then its error (what the dead letter and the error line keep) says which deployment failed how
    message = failed.value.message
    assert message.startswith("no deployment answered: cheap-primary: ") and "; cheap-backup: " in message


def test_a_deployment_refusing_connections_is_a_connection_error_not_a_500(redis_url: str) -> None:
    import socket

    from schemas.config import Tier
    from schemas.errors import RetryableProviderError

    # Given a deployment at a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tier = Tier.model_validate({"name": "cheap", "deployments": [
        {"model": "openai/x", "name": "gone", "api_base": f"http://127.0.0.1:{port}/v1", "api_key": "os.environ/HOME"},
    ]})  # fmt: skip

    # Then the call fails as a retryable connection error with no made-up HTTP status
    with pytest.raises(RetryableProviderError) as failed:
        complete_once(redis_url, tier, "")
    assert failed.value.code == "connection_error" and failed.value.status_code is None
    # And its message (what status, the DLQ and the error line show) is the provider's words,
    # named, without LiteLLM's repeated class names
    assert failed.value.message.endswith("gone: connection_error: OpenAI: Connection error.")


def test_a_deployment_out_of_quota_hands_its_jobs_to_the_next_and_when_all_are_it_is_final(provider: Callable[..., str], redis_url: str) -> None:
    from schemas.config import Tier
    from schemas.errors import FatalProviderError

    def tier(*models: str) -> Tier:
        return Tier.model_validate({"name": "cheap", "deployments": [
            {"model": f"openai/{m}", "name": f"cheap-{m}", "api_base": "fake"} for m in models]})  # fmt: skip

    # Given a primary whose account is out of credit (OpenAI's 429 insufficient_quota)
    url = provider(out_of_quota_models=["primary", "backup"])
    # When a tier whose backup is another account calls them, the backup answers
    complete_once(redis_url, tier("primary", "other"), url)
    # And when every deployment is out of credit, the job fails for good (no retry can mend
    # it), saying so and what to do: not a 429 it would wait out for ten minutes
    with pytest.raises(FatalProviderError) as failed:
        complete_once(redis_url, tier("primary", "backup"), url)
    assert failed.value.code == "insufficient_quota" and failed.value.status_code == 429
    assert "out of quota or credit (top up, then `turnout dlq replay`)" in failed.value.message and "cheap-backup" in failed.value.message


def test_a_job_every_deployment_refused_for_load_is_an_outage_and_one_they_failed_is_not(provider: Callable[..., str], redis_url: str) -> None:
    from schemas.config import Tier
    from schemas.errors import RetryableProviderError

    tier = Tier.model_validate({"name": "cheap", "deployments": [
        {"model": "openai/primary", "name": "cheap-primary", "api_base": "fake"},
        {"model": "openai/backup", "name": "cheap-backup", "api_base": "fake"},
    ]})  # fmt: skip
    # Given both deployments refuse every call for load (429)
    url = provider(fail_models={"primary": 429, "backup": 429})
    with pytest.raises(RetryableProviderError) as refused:
        complete_once(redis_url, tier, url)
    # Then the job's failure is an outage, to wait out without spending an attempt
    assert refused.value.outage and refused.value.status_code == 429
    # But when deployments in service (not on probation) fail it with 503s, it is the job's
    url = provider(fail_models={"primary": 503, "backup": 503})
    with pytest.raises(RetryableProviderError) as failed:
        complete_once(redis_url, tier, url)
    assert not failed.value.outage
