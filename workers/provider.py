"""Model calls: one LiteLLM Router per tier, its deployments in fallback order.

LiteLLM does the fallbacks, cooldowns and cost accounting; this module builds its model
list from the config, reads back which deployment answered, and sorts LiteLLM's
exceptions into turnout's two paths: retry later, or give up now.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # or every import waits on the network

import litellm  # noqa: E402
from litellm import Router  # noqa: E402
from litellm.types.router import AllowedFailsPolicy  # noqa: E402

from schemas.config import FAKE_API_BASE, Config, Deployment, Tier, resolve_secret  # noqa: E402
from schemas.errors import ContextWindowError, FatalProviderError, ProviderError, RetryableProviderError  # noqa: E402
from schemas.job import Job  # noqa: E402

litellm.suppress_debug_info = True
litellm.telemetry = False
for _name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
    # INFO logs a line per call: CPU spent, and LiteLLM's debug info can carry prompts
    logging.getLogger(_name).setLevel(logging.WARNING)

#: The key sent to the fake provider; it checks none, and this is no secret.
FAKE_API_KEY = "fake-provider-key"

_RETRYABLE = (
    litellm.RateLimitError,
    litellm.Timeout,
    litellm.APIConnectionError,
    litellm.InternalServerError,
    litellm.ServiceUnavailableError,
    litellm.exceptions.BadGatewayError,
)


@dataclass
class Answer:
    """A successful call: the OpenAI-shaped body and where it came from."""

    body: dict[str, Any]
    deployment: str
    model: str
    fallbacks: list[str]
    latency_s: float
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    request_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def fake_base_url(config: Config) -> str:
    """Where ``api_base: fake`` points: TURNOUT_FAKE_URL (set by `turnout run`), else the config's port."""
    url = os.environ.get("TURNOUT_FAKE_URL")
    if url:
        return url
    port = config.fake_provider.port if config.fake_provider else 0
    return f"http://127.0.0.1:{port}/v1"


def litellm_params(deployment: Deployment, fake_url: str) -> dict[str, Any]:
    """The litellm_params for one deployment, secrets resolved here and nowhere earlier."""
    params: dict[str, Any] = dict(deployment.params)
    params["model"] = deployment.model
    params["timeout"] = deployment.timeout_s
    params["max_retries"] = 0  # the OpenAI SDK's own hidden retries would multiply provider calls
    params["input_cost_per_token"] = deployment.input_cost_per_million / 1e6
    params["output_cost_per_token"] = deployment.output_cost_per_million / 1e6
    if deployment.api_base == FAKE_API_BASE:
        params["api_base"] = fake_url
        params["api_key"] = FAKE_API_KEY
    elif deployment.api_base:
        params["api_base"] = deployment.api_base
    if deployment.api_key:
        params["api_key"] = resolve_secret(deployment.api_key)
    if deployment.rpm:
        params["rpm"] = deployment.rpm
    if deployment.tpm:
        params["tpm"] = deployment.tpm
    return params


class TierProvider:
    """Calls one tier's deployments through a LiteLLM Router, in fallback order."""

    def __init__(self, tier: Tier, fake_url: str) -> None:
        self.tier = tier
        self.groups = [f"{tier.name}/{i}" for i in range(len(tier.deployments))]
        self.names = {group: tier.deployment_name(i) for i, group in enumerate(self.groups)}
        model_list = [
            {
                "model_name": group,
                "litellm_params": litellm_params(deployment, fake_url),
                "model_info": {"id": group},
            }
            for group, deployment in zip(self.groups, tier.deployments)
        ]
        fallbacks = [{self.groups[0]: self.groups[1:]}] if len(self.groups) > 1 else []
        self.router = Router(
            model_list=model_list,
            fallbacks=fallbacks,
            num_retries=0,  # retries are Celery's, with backoff across the whole cluster
            allowed_fails=1,
            # a bad request says nothing about the deployment's health: never cool it down for one
            allowed_fails_policy=AllowedFailsPolicy(
                BadRequestErrorAllowedFails=1_000_000, ContentPolicyViolationErrorAllowedFails=1_000_000
            ),
            cooldown_time=tier.cooldown_s,
            timeout=max(d.timeout_s for d in tier.deployments),
        )

    async def complete(self, job: Job) -> Answer:
        """Answer one job, or raise RetryableProviderError / FatalProviderError."""
        kwargs: dict[str, Any] = dict(job.params)
        if job.max_tokens is not None:
            kwargs["max_tokens"] = job.max_tokens
        started = time.perf_counter()
        try:
            response = await self.router.acompletion(model=self.groups[0], messages=job.messages, **kwargs)
        except Exception as exc:  # LiteLLM raises many kinds; classify() sorts them
            raise classify(exc) from None
        return self._answer(response, time.perf_counter() - started)

    def _answer(self, response: Any, latency_s: float) -> Answer:
        hidden = getattr(response, "_hidden_params", {}) or {}
        group = str(hidden.get("model_id") or self.groups[0])
        index = self.groups.index(group) if group in self.groups else 0
        usage = getattr(response, "usage", None)
        body = response.model_dump()
        return Answer(
            body=body,
            deployment=self.names.get(group, group),
            model=self.tier.deployments[index].model,
            fallbacks=[self.names[g] for g in self.groups[:index]],
            latency_s=latency_s,
            cost_usd=float(hidden.get("response_cost") or 0.0),
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            request_id=str(body.get("id", "")),
        )


def _classify_one(exc: BaseException) -> ProviderError:
    message = _short(exc)
    status = getattr(exc, "status_code", None)
    if isinstance(exc, litellm.ContextWindowExceededError):
        return ContextWindowError("context_length_exceeded", message, status)
    if _is_cooldown(exc):
        return RetryableProviderError("no_deployment_available", message, 429, None)
    if isinstance(exc, _RETRYABLE) or (isinstance(status, int) and (status in (408, 409, 429) or status >= 500)):
        return RetryableProviderError(_code(exc), message, status, retry_after(exc))
    return FatalProviderError(_code(exc), message, status)


#: LiteLLM re-raises the primary's error and names the fallbacks' failure only in its text.
_FALLBACK_FAILED = "also failed: "
_FATAL_FALLBACK_ERRORS = {
    "litellm.ContextWindowExceededError": ContextWindowError,
    "litellm.BadRequestError": FatalProviderError,
    "litellm.ContentPolicyViolationError": FatalProviderError,
}


def classify(exc: BaseException) -> ProviderError:
    """Sort a LiteLLM exception into turnout's error classes (DESIGN.md, Reliability rules).

    When the primary was only cooling down and the fallback rejected the request itself
    (a bad request, a context too long), the request is what is wrong: no retry.
    """
    text = str(exc)
    if _is_cooldown(exc) and _FALLBACK_FAILED in text:
        detail = text.split(_FALLBACK_FAILED, 1)[1]
        for marker, kind in _FATAL_FALLBACK_ERRORS.items():
            if detail.startswith(marker):
                code = "context_length_exceeded" if kind is ContextWindowError else "bad_request_error"
                return kind(code, _short(exc), 400)
    return _classify_one(exc)


def _is_cooldown(exc: BaseException) -> bool:
    """Every deployment of the group was cooling down, so LiteLLM did not call the provider."""
    return "No deployments available" in str(exc) or type(exc).__name__ == "RouterRateLimitError"


def retry_after(exc: BaseException) -> float | None:
    """Seconds from a Retry-After header on the provider's response, if it sent one."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _code(exc: BaseException) -> str:
    name = type(exc).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def _short(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."
