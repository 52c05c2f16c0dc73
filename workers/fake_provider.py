"""The fake provider: an OpenAI-compatible LLM endpoint over real HTTP, for tests, benchmarks
and the offline demo.

It answers ``POST /v1/chat/completions`` with a deterministic reply (a function of the model
and the messages) and can misbehave the way real providers do: be slow, fail with 429/5xx,
hang, refuse a context that is too long, rate-limit a model, take one model down, answer
badly, or reject a wrong API key. ``GET /_stats``, ``POST /_config`` and ``POST /_reset``
let a test watch it and change its behaviour while it runs.

It is hammered at ~1000 requests/s by the benchmarks, so each request does little: stdlib
json, one blake2b hash, no access log.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import json
import logging
import math
import os
import random
import re
import signal
import threading
import time
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

#: The window of a requests-per-minute limit, in seconds.
RPM_WINDOW_S = 60.0

#: A reply that a cascade's quality check should reject.
BAD_ANSWERS = ("", "I cannot help with that.")

#: OpenAI's error bodies by status: (message, type, code).
ERROR_BODIES: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: (
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: ("You are not allowed to access this model.", "invalid_request_error", None),
    404: ("The model does not exist or you do not have access to it.", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached for requests. Please try again in {retry_after}s.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}


#: OpenAI's message for an account out of credit (a 429 that waiting does not clear).
OUT_OF_QUOTA = ("You exceeded your current quota, please check your plan and billing details. For more information "
                "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.")


@dataclass(frozen=True)
class FakeProviderOptions:
    """How the fake provider behaves. Every field can also be patched at run time with
    ``POST /_config``. A model is named as the request names it: LiteLLM's
    ``openai/fake-cheap`` arrives as ``fake-cheap``."""

    latency_ms: float = 0.0
    """Mean delay before each answer or random failure."""
    jitter_ms: float = 0.0
    """The delay varies uniformly within ± jitter_ms of the mean (never below zero)."""
    error_rate: float = 0.0
    """Fraction of requests that fail with a status drawn from ``error_kinds``."""
    error_kinds: tuple[int, ...] = (429, 500, 503)
    """Statuses a random failure is drawn from."""
    retry_after_s: int = 1
    """Retry-After sent with a random or ``fail_models`` 429."""
    timeout_rate: float = 0.0
    """Fraction of requests that hang ``hang_s`` seconds before answering normally."""
    hang_s: float = 300.0
    """How long a hanging request hangs."""
    hang_on: tuple[str, ...] = ()
    """Requests whose last user message contains one of these strings always hang ``hang_s``:
    a poison job, for tests of what happens when a job's worker dies every time."""
    hang_models: tuple[str, ...] = ()
    """Models whose every request hangs ``hang_s``: a provider that takes connections and
    never answers (its calls end at the client's timeout)."""
    fail_on: Mapping[str, int] = field(default_factory=dict)
    """Marker → status: requests whose last user message contains the marker get that status,
    after the latency and any hang (a call that is slow and then fails)."""
    broken_unicode_on: tuple[str, ...] = ()
    """Requests whose last user message contains one of these strings get a reply ending in
    half a UTF-16 surrogate pair (the JSON escape ``\\ud83d``), as a model's output can."""
    context_limit: int | Mapping[str, int] | None = None
    """Prompt tokens above this get OpenAI's 400 ``context_length_exceeded``; per model if a mapping."""
    seed: int = 0
    """Seeds the random failures, so a run's sequence of failures repeats."""
    fail_models: Mapping[str, int] = field(default_factory=dict)
    """Model → status every request for that model gets, e.g. ``{"primary": 503}``."""
    out_of_quota_models: tuple[str, ...] = ()
    """Models whose account is out of credit: every request gets OpenAI's 429
    ``insufficient_quota`` (no Retry-After), which no wait clears."""
    rate_limit_rpm: int | Mapping[str, int] | None = None
    """Requests per sliding minute, per model (one number for each model, or a mapping)."""
    bad_answer_rate: float | Mapping[str, float] = 0.0
    """Fraction of prompts answered badly, per model if a mapping. A prompt's difficulty is
    fixed by its hash, so a model with a lower rate fails a subset of a higher one's prompts."""
    auth_key: str | None = None
    """When set, requests without ``Authorization: Bearer <auth_key>`` get 401."""
    models: tuple[str, ...] = ("fake-cheap", "fake-frontier")
    """Listed by ``GET /v1/models`` (with every model asked for so far); any name is answered."""

    def __post_init__(self) -> None:
        # Frozen, so normalise through object.__setattr__: JSON patches bring lists and
        # string keys, and a caller's later change to its own dict must not leak in.
        object.__setattr__(self, "error_kinds", tuple(int(k) for k in self.error_kinds))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "hang_on", tuple(str(m) for m in self.hang_on))
        object.__setattr__(self, "hang_models", tuple(str(m) for m in self.hang_models))
        object.__setattr__(self, "out_of_quota_models", tuple(str(m) for m in self.out_of_quota_models))
        object.__setattr__(self, "broken_unicode_on", tuple(str(m) for m in self.broken_unicode_on))
        object.__setattr__(self, "fail_models", {str(m): int(s) for m, s in self.fail_models.items()})
        object.__setattr__(self, "fail_on", {str(m): int(s) for m, s in self.fail_on.items()})
        for name in ("context_limit", "rate_limit_rpm", "bad_answer_rate"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, dict(value))
        self._validate()

    def _validate(self) -> None:
        for name in ("latency_ms", "jitter_ms", "retry_after_s", "hang_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number of at least 0")
        for name in ("error_rate", "timeout_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        rates = self.bad_answer_rate
        if not all(0.0 <= r <= 1.0 for r in (rates.values() if isinstance(rates, Mapping) else [rates])):
            raise ValueError("bad_answer_rate must be between 0 and 1")
        if not self.error_kinds or not all(400 <= k <= 599 for k in self.error_kinds):
            raise ValueError("error_kinds must list HTTP error statuses (400-599)")
        if not all(400 <= s <= 599 for s in self.fail_models.values()):
            raise ValueError("fail_models must map models to HTTP error statuses (400-599)")
        if not all(400 <= s <= 599 for s in self.fail_on.values()):
            raise ValueError("fail_on must map markers to HTTP error statuses (400-599)")

    def patched(self, changes: Mapping[str, Any]) -> FakeProviderOptions:
        """A copy with ``changes`` applied; raises ValueError on an unknown or invalid field."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}")
        return replace(self, **changes)

    def as_json(self) -> dict[str, Any]:
        """The options as JSON-ready values, the auth key masked."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["error_kinds"], data["models"] = list(self.error_kinds), list(self.models)
        data["auth_key"] = "***" if self.auth_key else None
        return data


def for_model(value: Any, model: str) -> Any:
    """An option's value for one model: the mapping's entry, or the one value for all."""
    return value.get(model) if isinstance(value, Mapping) else value


class SlidingWindow:
    """Timestamps of the last minute's requests, per model."""

    def __init__(self) -> None:
        self._times: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def count(self, model: str, now: float) -> int:
        times = self._times[model]
        while times and times[0] <= now - RPM_WINDOW_S:
            times.popleft()
        return len(times)

    def add(self, model: str, now: float) -> int:
        """Record a request; returns how many fall within the last minute."""
        self._times[model].append(now)
        return self.count(model, now)

    def seconds_until_free(self, model: str, now: float, limit: int) -> float:
        """How long until fewer than ``limit`` requests remain in the window."""
        times = self._times[model]
        return times[len(times) - limit] + RPM_WINDOW_S - now if limit > 0 else RPM_WINDOW_S


@dataclass
class ProviderStats:
    """What the provider has seen since start or the last reset, served by ``GET /_stats``."""

    requests: int = 0
    by_model: collections.Counter[str] = field(default_factory=collections.Counter)
    by_status: collections.Counter[str] = field(default_factory=collections.Counter)
    max_rpm_seen_by_model: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    abandoned: int = 0
    """Requests whose client hung up before the answer (a client timeout on a hang)."""
    hangs: int = 0
    """Requests that began a hang (drawn by ``timeout_rate``, or matched by ``hang_on`` or ``hang_models``)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    arrivals: SlidingWindow = field(default_factory=SlidingWindow)

    def arrive(self, model: str, now: float) -> None:
        # Counts every request that names the model, refused ones included, so a test of a
        # client-side rate limiter sees what the client actually sent.
        self.by_model[model] += 1
        rpm = self.arrivals.add(model, now)
        if rpm > self.max_rpm_seen_by_model.get(model, 0):
            self.max_rpm_seen_by_model[model] = rpm

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_model": dict(self.by_model),
            "by_status": dict(self.by_status),
            "max_rpm_seen_by_model": dict(self.max_rpm_seen_by_model),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "abandoned": self.abandoned,
            "hangs": self.hangs,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class RequestError(Exception):
    """Raised when a request body is not a chat completion request."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# ---------------------------------------------------------------- the reply, pure functions


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return ""


def count_tokens(text: str) -> int:
    """About four characters a token, as OpenAI's tokenizers average on English."""
    return (len(text) + 3) // 4


def count_prompt_tokens(texts: list[str]) -> int:
    # Three tokens of framing per message and three to prime the reply, as tiktoken counts.
    return sum(count_tokens(t) + 3 for t in texts) + 3


def difficulty(prompt_digest: bytes) -> float:
    """A prompt's fixed place in [0, 1): the prompts below a model's bad-answer rate fail."""
    return int.from_bytes(prompt_digest[:4], "big") / 2**32


#: How turnout's LLM-judge prompt (router.scorer.judge_prompt) frames the answer it asks about.
JUDGE_ANSWER = re.compile(r"\n\nProposed answer:\n(.*)\n\nGrade the proposed answer\.$", re.DOTALL)


def reply_text(model: str, texts: list[str], last_user: str, bad_rate: float) -> tuple[str, bool]:
    """The deterministic reply to these messages from this model, and whether it is bad.

    Asked to grade a proposed answer (turnout's judge prompt), it plays a perfect judge of its
    own bad answers: BAD for one of ``BAD_ANSWERS``, GOOD for anything else."""
    judged = JUDGE_ANSWER.search(last_user)
    if judged is not None:
        return ("Verdict: BAD" if judged.group(1).strip() in BAD_ANSWERS else "Verdict: GOOD"), False
    prompt_digest = hashlib.blake2b("\x1e".join(texts).encode(), digest_size=8).digest()
    if bad_rate and difficulty(prompt_digest) < bad_rate:
        return BAD_ANSWERS[prompt_digest[4] & 1], True
    tag = hashlib.blake2b(model.encode() + prompt_digest, digest_size=4).hexdigest()
    return f"[{model}] answer to: {last_user[:60]} #{tag}", False


def truncate(text: str, max_tokens: int | None) -> tuple[str, int, str]:
    """The text cut to ``max_tokens``, its token count and the finish reason."""
    tokens = count_tokens(text)
    if max_tokens is None or tokens <= max_tokens:
        return text, tokens, "stop"
    return text[: max_tokens * 4], max_tokens, "length"


def token_logprobs(text: str, bad: bool, top: int) -> list[dict[str, Any]]:
    """Deterministic logprobs: near zero for a good answer, low for a bad one, so a cascade
    that scores confidence can tell them apart."""
    entries = []
    for i, token in enumerate(re.findall(r"\s*\S+", text)):
        jitter = zlib.crc32(f"{i}:{token}".encode()) % 1000 / 1000
        logprob = -(1.5 + 2.5 * jitter) if bad else -0.3 * jitter
        alternatives = [_logprob_entry(token, logprob)] + [_logprob_entry(f"{token}{k}", logprob - 2.0 * k) for k in range(1, top)]
        entries.append({**_logprob_entry(token, logprob), "top_logprobs": alternatives[:top]})
    return entries


def _logprob_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": round(logprob, 4), "bytes": list(token.encode())}


def parse_request(body: bytes) -> tuple[dict[str, Any], str, list[str], str]:
    """The request, its model, each message's text and the last user message's text."""
    try:
        request = json.loads(body)
    except ValueError as exc:
        raise RequestError(f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("model"), str):
        raise RequestError("you must provide a model parameter", "model")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise RequestError("'messages' must be a non-empty array of message objects", "messages")
    texts = [message_text(m) for m in messages]
    users = [t for m, t in zip(messages, texts) if m.get("role") == "user"]
    return request, request["model"], texts, (users or texts)[-1]


def requested_max_tokens(request: Mapping[str, Any]) -> int | None:
    value = request.get("max_completion_tokens", request.get("max_tokens"))
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RequestError("max_tokens must be a positive integer", "max_tokens")
    return value


def completion_body(request: Mapping[str, Any], model: str, texts: list[str], last_user: str,
                    options: FakeProviderOptions) -> dict[str, Any]:
    """OpenAI's chat.completion object answering this request."""
    text, bad = reply_text(model, texts, last_user, for_model(options.bad_answer_rate, model) or 0.0)
    content, completion_tokens, finish_reason = truncate(text, requested_max_tokens(request))
    if any(marker in last_user for marker in options.broken_unicode_on):
        content += "\ud83d"  # json.dumps sends it as the escape; a client's parser accepts it
    prompt_tokens = count_prompt_tokens(texts)
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content, "refusal": None},
        "logprobs": None,
        "finish_reason": finish_reason,
    }
    if request.get("logprobs"):
        choice["logprobs"] = {"content": token_logprobs(content, bad, int(request.get("top_logprobs") or 0))}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "fp_turnout_fake",
    }


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


def error_response(status: int, *, retry_after_s: float = 1.0, message: str | None = None,
                   param: str | None = None, code: str | None = None) -> web.Response:
    """OpenAI's error body for this status; a 429 carries Retry-After (whole seconds, as
    OpenAI sends it) and retry-after-ms (exact, which the openai SDK prefers)."""
    default_message, kind, default_code = ERROR_BODIES.get(
        status, (f"Fake provider error {status}.", "server_error" if status >= 500 else "invalid_request_error", None)
    )
    seconds = max(1, math.ceil(retry_after_s))
    body = {"error": {
        "message": message or default_message.format(retry_after=seconds),
        "type": kind,
        "param": param,
        "code": code or default_code,
    }}
    headers = {"Retry-After": str(seconds), "retry-after-ms": str(max(1, int(retry_after_s * 1000)))} if status == 429 else None
    return json_response(status, body, headers)


def context_error(limit: int, prompt_tokens: int) -> web.Response:
    return error_response(
        400,
        message=(
            f"This model's maximum context length is {limit} tokens. However, your messages "
            f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
        ),
        param="messages",
        code="context_length_exceeded",
    )


# ---------------------------------------------------------------- the server


class FakeProvider:
    """A running fake provider: its options, its stats and its HTTP endpoints."""

    def __init__(self, options: FakeProviderOptions, host: str = "127.0.0.1") -> None:
        self.options = options
        self.host = host
        self.port = 0
        self.stats = ProviderStats()
        self._admitted = SlidingWindow()
        self._rng = random.Random(options.seed)
        self._latency_rng = random.Random(options.seed + 1)  # latency draws leave the failure sequence alone
        self._seen_models: dict[str, None] = {}
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The OpenAI base URL, as LiteLLM's ``api_base`` wants it."""
        return f"http://{self.host}:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)  # a 128k-token prompt is ~0.5 MB
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/chat/completions", self.chat_completions)
            app.router.add_get(f"{prefix}/models", self.list_models)
            app.router.add_get(f"{prefix}/_stats", self.get_stats)
            app.router.add_get(f"{prefix}/_config", self.get_config)
            app.router.add_post(f"{prefix}/_config", self.post_config)
            app.router.add_post(f"{prefix}/_reset", self.post_reset)
        return app

    async def listen(self, port: int = 0) -> None:
        # handler_cancellation: a client that gives up on a hanging request frees it here too.
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port, backlog=2048)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- chat completions

    async def chat_completions(self, request: web.Request) -> web.Response:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await self._respond(request)
        except asyncio.CancelledError:
            stats.abandoned += 1
            raise
        finally:
            stats.in_flight -= 1
        stats.by_status[str(response.status)] += 1
        return response

    async def _respond(self, request: web.Request) -> web.Response:
        options = self.options
        if options.auth_key and request.headers.get("Authorization") != f"Bearer {options.auth_key}":
            return error_response(401)
        try:
            body, model, texts, last_user = parse_request(await request.read())
            self._seen_models[model] = None
            self.stats.arrive(model, time.monotonic())
            return await self._answer(body, model, texts, last_user, options)
        except RequestError as exc:
            return error_response(400, message=str(exc), param=exc.param)

    async def _answer(self, body: dict[str, Any], model: str, texts: list[str], last_user: str,
                      options: FakeProviderOptions) -> web.Response:
        if model in options.fail_models:
            return error_response(options.fail_models[model], retry_after_s=options.retry_after_s)
        if model in options.out_of_quota_models:
            return json_response(429, {"error": {"message": OUT_OF_QUOTA, "type": "insufficient_quota", "param": None,
                                                 "code": "insufficient_quota"}})
        refused = self._rate_limit(model, options)
        if refused is not None:
            return refused
        await self._wait(options, last_user, model)
        failing = next((status for marker, status in options.fail_on.items() if marker in last_user), None)
        if failing is not None:
            return error_response(failing, retry_after_s=options.retry_after_s)
        if options.error_rate and self._rng.random() < options.error_rate:
            return error_response(self._rng.choice(options.error_kinds), retry_after_s=options.retry_after_s)
        limit = for_model(options.context_limit, model)
        prompt_tokens = count_prompt_tokens(texts)
        if limit is not None and prompt_tokens > limit:
            return context_error(limit, prompt_tokens)
        completion = completion_body(body, model, texts, last_user, options)
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion["usage"]["completion_tokens"]
        return json_response(200, completion)

    def _rate_limit(self, model: str, options: FakeProviderOptions) -> web.Response | None:
        """A 429 when the model has had its requests for the sliding minute; else take a slot."""
        limit = for_model(options.rate_limit_rpm, model)
        if limit is None:
            return None
        now = time.monotonic()
        if self._admitted.count(model, now) >= limit:
            wait = self._admitted.seconds_until_free(model, now, limit)
            return error_response(
                429,
                retry_after_s=wait,
                message=f"Rate limit reached for {model} on requests per min (RPM): Limit {limit}. "
                        f"Please try again in {max(1, math.ceil(wait))}s.",
            )
        self._admitted.add(model, now)
        return None

    async def _wait(self, options: FakeProviderOptions, last_user: str, model: str) -> None:
        """The latency, then, for a drawn fraction of requests, ``hang_on`` matches and
        ``hang_models``' requests, a hang."""
        delay_ms = options.latency_ms
        if options.jitter_ms:
            delay_ms += self._latency_rng.uniform(-options.jitter_ms, options.jitter_ms)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        poisoned = any(marker in last_user for marker in options.hang_on) or model in options.hang_models
        if poisoned or (options.timeout_rate and self._rng.random() < options.timeout_rate):
            self.stats.hangs += 1
            await asyncio.sleep(options.hang_s)

    # -- listing and control

    async def list_models(self, request: web.Request) -> web.Response:
        names = dict.fromkeys([*self.options.models, *self._seen_models])
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "turnout-fake"} for n in names]
        return json_response(200, {"object": "list", "data": data})

    async def get_stats(self, request: web.Request) -> web.Response:
        return json_response(200, self.stats.as_json())

    async def get_config(self, request: web.Request) -> web.Response:
        return json_response(200, self.options.as_json())

    async def post_config(self, request: web.Request) -> web.Response:
        try:
            changes = json.loads(await request.read() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the patch must be a JSON object")
            options = self.options.patched(changes)
        except (ValueError, TypeError) as exc:
            return error_response(400, message=f"bad options patch: {exc}")
        if options.seed != self.options.seed:
            self._reseed(options.seed)
        self.options = options
        return json_response(200, options.as_json())

    async def post_reset(self, request: web.Request) -> web.Response:
        """Zero the stats, and the rate-limit windows and random draws with them, so each test
        starts from the same state."""
        self.stats = ProviderStats()
        self._admitted = SlidingWindow()
        self._reseed(self.options.seed)
        return json_response(200, self.stats.as_json())

    def _reseed(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._latency_rng = random.Random(seed + 1)


# ---------------------------------------------------------------- ways to run it


async def start(options: FakeProviderOptions | None = None, host: str = "127.0.0.1", port: int = 0) -> FakeProvider:
    """Start a fake provider on the running loop; port 0 picks a free port (see ``.port``)."""
    provider = FakeProvider(options or FakeProviderOptions(), host)
    await provider.listen(port)
    log.info("fake provider listening on %s", provider.url)
    return provider


def serve(options: FakeProviderOptions | None = None, host: str = "127.0.0.1", port: int = 0,
          ready_file: str | None = None) -> None:
    """Run a fake provider until SIGINT or SIGTERM. Once it listens, the bound port is written
    to ``ready_file`` (atomically, so a parent polling for it never reads half a number)."""
    asyncio.run(_serve_until_signalled(options, host, port, ready_file))


async def _serve_until_signalled(options: FakeProviderOptions | None, host: str, port: int,
                                 ready_file: str | None) -> None:
    provider = await start(options, host, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stopping.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or not POSIX
            pass
    if ready_file:
        _write_atomically(ready_file, f"{provider.port}\n")
    try:
        await stopping.wait()
    finally:
        await provider.stop()


def _write_atomically(path: str, text: str) -> None:
    partial = f"{path}.{os.getpid()}.tmp"
    with open(partial, "w") as f:
        f.write(text)
    os.replace(partial, path)


def run_in_thread(options: FakeProviderOptions | None = None, host: str = "127.0.0.1",
                  port: int = 0) -> tuple[str, Callable[[], None]]:
    """Start a fake provider on its own loop in a daemon thread; returns its URL and a
    function that stops it (safe to call twice)."""
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[FakeProvider] = concurrent.futures.Future()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            provider = loop.run_until_complete(start(options, host, port))
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(provider)
        loop.run_forever()
        loop.run_until_complete(provider.stop())
        loop.close()

    thread = threading.Thread(target=run, name="fake-provider", daemon=True)
    thread.start()
    provider = started.result(timeout=10)

    def stop() -> None:
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    return provider.url, stop


# ---------------------------------------------------------------- a small client for tests


def _control(url: str, path: str, patch: Mapping[str, Any] | None = None, *, post: bool = False) -> dict[str, Any]:
    data = json.dumps(patch).encode() if patch is not None else (b"{}" if post else None)
    request = urllib.request.Request(f"{url.rstrip('/')}/{path}", data=data, method="POST" if post else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def fetch_stats(url: str) -> dict[str, Any]:
    """``GET /_stats`` of the provider at ``url`` (its ``/v1`` URL or its root)."""
    return _control(url, "_stats")


def configure(url: str, **changes: Any) -> dict[str, Any]:
    """Patch the running provider's options, e.g. ``configure(url, fail_models={"primary": 503})``;
    returns the options now in force."""
    return _control(url, "_config", changes, post=True)


def reset(url: str) -> dict[str, Any]:
    """Zero the provider's stats and rate-limit windows."""
    return _control(url, "_reset", post=True)
