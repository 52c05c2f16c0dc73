"""Model calls: a tier's deployments tried in fallback order through ``litellm.acompletion``.

LiteLLM talks to the providers, maps their errors and prices each call. The fallback
loop is turnout's own, in front of a Gate that keeps cooldowns and rpm/tpm limits in
Redis for the whole cluster. LiteLLM's Router was measured doing the same job at +55-73%
CPU per call (bench/call_costs.py), and its redis-backed usage routing let two processes
send 38 requests against an rpm of 20: per-process limits, not cluster-wide ones.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # or every import waits on the network

import litellm  # noqa: E402

from schemas.config import FAKE_API_BASE, Config, Deployment, Tier, resolve_secret  # noqa: E402
from schemas.errors import ContextWindowError, FatalProviderError, ProviderError, RetryableProviderError  # noqa: E402
from schemas.job import Job  # noqa: E402
from workers.answer import BUSY, Answer  # noqa: E402
from workers.gate import FailedForGood, Gate  # noqa: E402

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
    # the config's prices; without them LiteLLM prices each call from its own map, which also
    # knows cached-token and tiered prices (a flat price passed here would override those)
    if deployment.input_cost_per_million is not None:
        params["input_cost_per_token"] = deployment.input_cost_per_million / 1e6
    if deployment.output_cost_per_million is not None:
        params["output_cost_per_token"] = deployment.output_cost_per_million / 1e6
    if deployment.api_base == FAKE_API_BASE:
        params["api_base"] = fake_url
        params["api_key"] = FAKE_API_KEY
    elif deployment.api_base:
        params["api_base"] = deployment.api_base
    if deployment.api_key:
        params["api_key"] = resolve_secret(deployment.api_key)
    return params


class TierProvider:
    """Calls one tier's deployments in fallback order, each behind the cluster-wide gate."""

    def __init__(self, tier: Tier, fake_url: str, gate: Gate) -> None:
        self.tier = tier
        self.gate = gate
        self.names = [tier.deployment_name(i) for i in range(len(tier.deployments))]
        self.params = [litellm_params(d, fake_url) for d in tier.deployments]

    async def complete(self, job: Job, extra: dict[str, Any] | None = None) -> Answer:
        """Answer one job, or raise RetryableProviderError / FatalProviderError.

        A retryable failure, or one that belongs to the deployment (authentication, an
        unknown model), cools that deployment down for every worker and moves on to the
        next. A bad request is the request's fault: no other deployment is asked. A
        context window error moves on too (the next deployment may have a larger window)
        without counting against the deployment. A deployment on probation after a cooldown
        takes one call at a time (workers/gate.py); its answer ends the probation.
        """
        kwargs: dict[str, Any] = dict(job.params) | (extra or {})
        if job.max_tokens is not None:
            kwargs["max_tokens"] = job.max_tokens
        tokens = len(job.prompt_text) // 4 + (job.max_tokens or 256)
        failed: list[str] = []
        errors: list[ProviderError] = []
        waits: list[float] = []
        broken: list[ProviderError] = []  # passed over: cooling down after failing for good
        busy = False  # one passed over was only at its rate limit, or another's probe was out
        tried: list[str] = []  # each deployment and what it did, for the error if none answers
        for index, deployment in enumerate(self.tier.deployments):
            name = self.names[index]
            admission = await self.gate.admit(name, deployment.rpm, deployment.tpm, tokens, deployment.timeout_s)
            if admission.broken:  # cooling down after a failure for good: this call would fail as it did
                why = admission.broken
                failed.append(name)
                broken.append(FatalProviderError(why.code, why.message, why.status))
                tried.append(f"{name}: {why.code} (on an earlier call): {why.message}")
                continue
            if admission.wait > 0:  # cooling down, on probation, or at its rate limit: passed over, like a failure
                waits.append(admission.wait)
                busy = busy or not admission.cooling
                failed.append(name)
                tried.append(f"{name}: cooling down or at its rate limit")
                continue
            started = time.perf_counter()
            try:
                response = await litellm.acompletion(messages=job.messages, **self.params[index], **kwargs)
            except Exception as exc:  # LiteLLM raises many kinds; classify() sorts them
                error = classify(exc)
                # a bad request, or a prompt too big for it: the request's doing, not the deployment's health
                healthy = _request_at_fault(error) or isinstance(error, ContextWindowError)
                if healthy and admission.probe:
                    await self.gate.answered(name)
                if _request_at_fault(error):
                    raise error from None
                if not healthy:
                    retry_after = error.retry_after if isinstance(error, RetryableProviderError) else None
                    for_good = None if isinstance(error, RetryableProviderError) else FailedForGood(error.code, error.message, error.status_code)
                    await self.gate.failed(name, retry_after, self.tier.cooldown_s, probe=admission.probe, for_good=for_good,
                                           what=f"{error.code}: {error.message}")
                if isinstance(error, RetryableProviderError):
                    # refused for load, or failing still after a run of failures: the provider's
                    # state, which the job waits out (other jobs were answered between its tries)
                    error.outage = admission.probe or error.status_code == 429
                failed.append(name)
                errors.append(error)
                tried.append(f"{name}: {error.code}: {error.message}")
                continue
            if admission.probe:
                await self.gate.answered(name)
            return self._answer(response, index, failed, time.perf_counter() - started)
        exhausted = _exhausted(errors, waits, tried, broken, busy)
        exhausted.deployments = failed
        raise exhausted

    def _answer(self, response: Any, index: int, failed: list[str], latency_s: float) -> Answer:
        hidden = getattr(response, "_hidden_params", {}) or {}
        usage = getattr(response, "usage", None)
        body = response.model_dump()
        return Answer(
            body=body,
            deployment=self.names[index],
            model=self.tier.deployments[index].model,
            fallbacks=failed,
            latency_s=latency_s,
            cost_usd=float(hidden.get("response_cost") or 0.0),
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            request_id=str(body.get("id", "")),
        )


def _request_at_fault(error: ProviderError) -> bool:
    """A bad request fails the same on every deployment; auth, missing models and an account
    out of credit do not."""
    if isinstance(error, (RetryableProviderError, ContextWindowError)) or error.code == OUT_OF_CREDIT:
        return False
    return error.status_code not in (401, 403, 404)


def _exhausted(
    errors: list[ProviderError], waits: list[float], tried: list[str], broken: list[ProviderError] | None = None, busy: bool = False
) -> ProviderError:
    """The error for a job no deployment answered: retry later unless all failed for good.
    Its message names every deployment and what it did, so a dead letter says which failed how.

    Only a job no deployment was even called for (all cooling down or at their rate limits),
    or that one refused only for its size, is BUSY, retried without spending an attempt. One
    that a deployment failed for good (a bad key) while the others cooled down spends one:
    their cooldown is often that failure's own doing, and a BUSY retry would call the failing
    deployment again and again, for ever. One that every deployment it called refused for
    load or failed on probation is an ``outage``: it waits (``Tier.max_waits``) instead.

    A deployment passed over while it cools down after failing for good (``broken``) is no
    wait: beside one only ``busy`` (at its rate limit, or another's probe out) the job is BUSY;
    beside ones cooling down, or that refused it for load, an outage (counted waits: one
    bad key and one provider down for good must not hold a job for ever); alone, it spends an
    attempt without a call: a bad key everywhere ends every line within seconds, not one per
    cooldown, and a short blip of 401s, or a key fixed by a restart, costs an attempt, not
    the line."""
    every = "; ".join(tried)
    retryable = [e for e in errors if isinstance(e, RetryableProviderError)]
    if waits or retryable:
        hints = [w for w in waits] + [e.retry_after for e in retryable if e.retry_after]
        # a context window error is the prompt's size, no failure: a cooling deployment may take it
        failures = [e for e in errors if not isinstance(e, ContextWindowError)]
        last = retryable[-1] if retryable else (failures[-1] if failures else None)
        if last is None and broken and not busy:  # the others only cool down: wait, counted
            return RetryableProviderError(broken[-1].code, f"no deployment answered: {every}", broken[-1].status_code,
                                          min(hints) if hints else None, outage=True)
        code = last.code if last else BUSY
        message = f"no deployment answered: {every}" if last or broken else "every deployment is cooling down or at its rate limit"
        outage = bool(failures) and all(isinstance(e, RetryableProviderError) and e.outage for e in failures)
        return RetryableProviderError(code, message, last.status_code if last else 429, min(hints) if hints else None, outage)
    if broken:
        return RetryableProviderError(broken[-1].code, f"no deployment answered: {every}", broken[-1].status_code)
    contexts = [e for e in errors if isinstance(e, ContextWindowError)]
    final = contexts[-1] if contexts else errors[-1]
    if len(tried) > 1:
        final.message = f"no deployment answered: {every}"
        final.args = (final.message,)
    return final


#: The error code of a deployment whose account is out of quota or credit.
OUT_OF_CREDIT = "insufficient_quota"
#: How Anthropic says an account is out of credit (a 400); OpenAI's 429 says so in its body's code.
_LOW_CREDIT = "credit balance is too low"
#: OpenAI's 429 for a request with more tokens than the deployment's per-minute limit: no wait
#: mends it; a deployment with a higher limit, or a tier up, may take it.
_TOO_LARGE = "Request too large"


def _out_of_credit(exc: BaseException, message: str) -> bool:
    """OpenAI's (and Azure's) 429 ``insufficient_quota``, by its body's code, not its words:
    Gemini's per-minute 429 also says "You exceeded your current quota"; Anthropic's 400."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and OUT_OF_CREDIT in (body.get("code"), body.get("type")):
        return True
    return _LOW_CREDIT in message.lower()


def classify(exc: BaseException) -> ProviderError:
    """Sort a LiteLLM exception into turnout's error classes (DESIGN.md, Reliability rules)."""
    message = _short(exc)
    status = getattr(exc, "status_code", None)
    if isinstance(exc, litellm.ContextWindowExceededError):
        return ContextWindowError("context_length_exceeded", message, status)
    if _out_of_credit(exc, message):  # a 429 or 400 that no wait clears
        return FatalProviderError(OUT_OF_CREDIT, f"out of quota or credit (top up, then `turnout dlq replay`): {message}", status)
    if status == 429 and _TOO_LARGE in message:  # more tokens than the deployment's per-minute limit
        return ContextWindowError("request_too_large", message, status)
    if _refused(exc):  # LiteLLM reports it as a 500 the provider never sent
        return RetryableProviderError("connection_error", message, None, None)
    if isinstance(exc, _RETRYABLE) or (isinstance(status, int) and (status in (408, 409, 429) or status >= 500)):
        return RetryableProviderError(_code(exc), message, status, retry_after(exc))
    return FatalProviderError(_code(exc), message, status)


def _refused(exc: BaseException) -> bool:
    """Whether the call never reached the provider: a connection refused or reset, or a host
    that cannot be reached, somewhere in the exception's chain (not a timeout)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ConnectionError) or type(seen).__name__ in ("ConnectError", "APIConnectionError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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


#: LiteLLM's prefixes, "litellm.RateLimitError: RateLimitError: OpenAIException - ": the error
#: code says the first two; the provider's name is kept ("OpenAI: ").
_LITELLM_PREFIX = re.compile(r"^(?:litellm\.\w+: )?(?:\w+Error(?:: | - ))?(?:(\w+?)Exception - )?")
#: LiteLLM's timeout repeats itself: "Request timed out. Error_str: Request timed out. - timeout value=…".
_ERROR_STR = re.compile(r" Error_str: [^-]*- ")


def _short(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    text = _LITELLM_PREFIX.sub(lambda m: f"{m.group(1)}: " if m.group(1) else "", text, count=1)
    text = _ERROR_STR.sub(" ", text, count=1)
    return text if len(text) <= 300 else text[:297] + "..."
