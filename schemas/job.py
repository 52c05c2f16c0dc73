"""Input lines (OpenAI Batch and simple), the job envelope that travels the queues, and
the routing decision the classifier attaches to it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.config import Limits
from schemas.errors import InputLineError

CHAT_URL = "/v1/chat/completions"
#: ``model`` values that mean "let the classifier decide".
AUTO_MODELS = frozenset({"", "auto"})
TIER_PREFIX = "tier:"
#: The marker a line reader yields when a stream has been idle (``workers.producer.stream_lines``).
IDLE = b""


class BatchBody(BaseModel):
    """The ``body`` of an OpenAI Batch line: a chat completion request."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[dict[str, Any]]
    max_tokens: int | None = Field(None, gt=0)


class BatchLine(BaseModel):
    """``{"custom_id", "method", "url", "body"}`` as the OpenAI Batch API takes it."""

    custom_id: str = Field(min_length=1)
    method: str = "POST"
    url: str = CHAT_URL
    body: BatchBody


#: Request fields a simple line may carry beside its own, passed to the provider as an OpenAI
#: Batch line's body passes them.
SIMPLE_PARAMS = frozenset({
    "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
    "response_format", "logprobs", "top_logprobs", "user", "tools", "tool_choice", "reasoning_effort",
})


class SimpleLine(BaseModel):
    """``{"custom_id", "prompt"}`` with optional ``max_tokens``, ``model``, ``metadata``,
    ``system`` (a system message before the prompt) and OpenAI's sampling fields
    (``SIMPLE_PARAMS``). Any other field is refused, not dropped: a ``temperature`` misspelt,
    or data meant for ``metadata``, would otherwise change nothing, silently."""

    model_config = ConfigDict(extra="allow")

    custom_id: str = Field(min_length=1)
    prompt: str
    model: str | None = None
    max_tokens: int | None = Field(None, gt=0)
    metadata: dict[str, Any] | None = None
    system: str | None = None


class Decision(BaseModel):
    """Where the router sent a job and why."""

    tier: str
    score: float = Field(ge=0.0, le=1.0)
    reasons: list[str] = Field(default_factory=list)


class Job(BaseModel):
    """One prompt on its way through the queues; carries no secrets."""

    batch_id: str
    custom_id: str
    line: int = Field(description="1-based line number in the input")
    messages: list[dict[str, Any]]
    model: str | None = Field(None, description="the model the line asked for, if any")
    pin: str | None = Field(None, description="tier the model field pinned; None lets the classifier decide")
    max_tokens: int | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="other request fields")
    metadata: dict[str, Any] | None = None
    decision: Decision | None = None
    attempts: int = 0
    waits: int = Field(0, description="retries spent waiting for the tier's deployments to come back (an outage)")
    errors: list[str] = Field(default_factory=list, description="one entry per failed attempt")
    calls: list[dict[str, Any]] = Field(
        default_factory=list, description="earlier tiers' calls in a cascade, each with its answer and score"
    )

    @property
    def prompt_text(self) -> str:
        """All message text, the classifier's input."""
        return "\n".join(_content_text(m.get("content")) for m in self.messages)

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _content_text(message.get("content"))
        return self.prompt_text


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


@dataclass(frozen=True, slots=True)
class WireJob:
    """A job in the form it travels the queues in (``Job.model_dump(mode="json",
    exclude_defaults=True)``, as ``body``), with the fields the producer reads beside it."""

    custom_id: str
    line: int
    model: str | None
    body: dict[str, Any]


def check_batch_length(record: int, limits: Limits) -> None:
    """Refuse the ``record``-th line of a batch past ``limits.max_batch_lines``."""
    if record > limits.max_batch_lines:
        raise InputLineError("batch_too_long", f"the batch is over {limits.max_batch_lines} lines (limits.max_batch_lines)")


def parse_wire(raw: str | bytes, line: int, batch_id: str, limits: Limits) -> WireJob:
    """``parse_line``, returned in queue form. The common simple line goes straight there
    without a Job model in between: the producer's hot path (a worker validates it anyway)."""
    _check_size(raw, limits)
    _check_unicode(raw)
    simple = _simple_line(raw)
    # metadata: pydantic's JSON form (inf → null); a system message, sampling or unknown fields: the Job's
    if simple is None or simple.metadata is not None or simple.system is not None or simple.model_extra:
        job = parse_line(raw, line, batch_id, limits)
        return WireJob(job.custom_id, job.line, job.model, job.model_dump(mode="json", exclude_defaults=True))
    _check_prompt_text(simple.prompt, simple.custom_id, limits)
    body: dict[str, Any] = {
        "batch_id": batch_id,
        "custom_id": simple.custom_id,
        "line": line,
        "messages": [{"role": "user", "content": simple.prompt}],
    }
    for name, value in (("model", simple.model), ("max_tokens", simple.max_tokens)):
        if value is not None:
            body[name] = value
    return WireJob(simple.custom_id, line, simple.model, body)


def parse_line(raw: str | bytes, line: int, batch_id: str, limits: Limits) -> Job:
    """Turn one input line into a Job, or raise InputLineError with a reason a person can act on."""
    _check_size(raw, limits)
    _check_unicode(raw)
    fast = _simple_job(raw, line, batch_id)
    if fast is not None:
        _check_prompt(fast, limits)
        return fast
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputLineError("invalid_json", f"line is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputLineError("invalid_json", "line must be a JSON object")
    custom_id = data.get("custom_id") if isinstance(data.get("custom_id"), str) else None
    try:
        job = _job_from(data, line, batch_id)
    except ValidationError as exc:
        raise InputLineError("invalid_line", _first_error(exc), custom_id) from None
    _check_prompt(job, limits)
    return job


#: Half a UTF-16 surrogate pair with no other half beside it: a JSON escape (``\\ud83d``) of
#: a high half not followed by a low one, or of a low half not after a high one; in bytes
#: also the half encoded raw (``ED A0 BD``: CESU-8, or Python's "surrogatepass"), and in a
#: str the character itself. A whole pair, as ``json.dumps`` escapes an emoji, is text.
_HALF = r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
_HALF_STR = re.compile(_HALF + "|[\ud800-\udfff]")
_HALF_BYTES = re.compile(_HALF.encode() + rb"|\xed[\xa0-\xbf]")


def _check_unicode(raw: str | bytes) -> None:
    """Refuse a line holding half a surrogate pair: JSON parsers accept the escape, but it is
    not text, and no provider request or result line could be written with it."""
    found = _HALF_BYTES.search(raw) if isinstance(raw, bytes) else _HALF_STR.search(raw)
    if found is None:  # the common line, emoji escaped in pairs included
        return
    half = found.group()
    shown = half.decode("ascii", "backslashreplace") if isinstance(half, bytes) else half.encode("ascii", "backslashreplace").decode()
    data: Any = None
    try:
        data = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8 (a raw half, named as its bytes)
        if shown.startswith("\\u"):
            return  # the parse says what is wrong
    else:
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
            return  # the match was an escaped backslash before "u": text after all
        except UnicodeEncodeError as exc:
            shown = f"\\u{ord(exc.object[exc.start]):04x}"
    custom_id = data.get("custom_id") if isinstance(data, dict) else None
    raise InputLineError(
        "invalid_unicode", f"{shown} is half of a UTF-16 surrogate pair with no other half, which is not text; "
        "write the whole character (both halves) or remove it",
        custom_id if isinstance(custom_id, str) and _HALF_STR.search(json.dumps(custom_id)) is None else None,
    )


def _check_size(raw: str | bytes, limits: Limits) -> None:
    size = len(raw)
    if size > limits.max_line_bytes:
        raise InputLineError(
            "line_too_long", f"line is {size} bytes; the limit is {limits.max_line_bytes} (limits.max_line_bytes)"
        )


def _simple_line(raw: str | bytes) -> SimpleLine | None:
    """The common line, ``{"custom_id", "prompt", …}``, parsed and checked in one pass of pydantic's
    JSON parser (about 3x faster than json.loads and two validations); None for anything else,
    which the full path then parses again to name exactly what is wrong."""
    if (b'"body"' in raw) if isinstance(raw, bytes) else ('"body"' in raw):
        return None  # maybe an OpenAI Batch line
    try:
        simple = SimpleLine.model_validate_json(raw)
    except ValidationError:
        return None
    if "body" in (simple.model_extra or {}):  # spelt with escapes: a Batch line after all
        return None
    return simple


def _simple_job(raw: str | bytes, line: int, batch_id: str) -> Job | None:
    """``_simple_line`` as a Job."""
    simple = _simple_line(raw)
    return None if simple is None else _simple_to_job(simple, line, batch_id)


def _simple_to_job(simple: SimpleLine, line: int, batch_id: str) -> Job:
    extra = dict(simple.model_extra or {})
    unknown = sorted(set(extra) - SIMPLE_PARAMS)
    if unknown:
        raise InputLineError(
            "unknown_field", f"{unknown[0]!r} is not a field of a simple line (custom_id, prompt, model, max_tokens, "
            "metadata, system, or an OpenAI sampling field such as temperature); put your own data in metadata, "
            "or write an OpenAI Batch line", simple.custom_id,
        )
    system = [{"role": "system", "content": simple.system}] if simple.system is not None else []
    return Job(
        batch_id=batch_id,
        custom_id=simple.custom_id,
        line=line,
        messages=[*system, {"role": "user", "content": simple.prompt}],
        model=simple.model,
        max_tokens=simple.max_tokens,
        metadata=simple.metadata,
        params=extra,
    )


def _job_from(data: dict[str, Any], line: int, batch_id: str) -> Job:
    if "body" in data:
        batch = BatchLine.model_validate(data)
        if batch.url != CHAT_URL:
            raise InputLineError("unsupported_url", f"url {batch.url!r} is not supported; use {CHAT_URL}", batch.custom_id)
        extra = dict(batch.body.model_extra or {})
        return Job(
            batch_id=batch_id,
            custom_id=batch.custom_id,
            line=line,
            messages=batch.body.messages,
            model=batch.body.model,
            max_tokens=batch.body.max_tokens,
            params=extra,
        )
    if "prompt" not in data and "custom_id" in data:
        raise InputLineError("missing_prompt", 'line has neither "prompt" nor "body"', str(data["custom_id"]))
    return _simple_to_job(SimpleLine.model_validate(data), line, batch_id)


def _check_prompt(job: Job, limits: Limits) -> None:
    if not job.messages:
        raise InputLineError("empty_messages", "body.messages is empty; give at least one message", job.custom_id)
    _check_prompt_text(job.prompt_text, job.custom_id, limits)


def _check_prompt_text(text: str, custom_id: str, limits: Limits) -> None:
    if not text.strip():
        raise InputLineError("empty_prompt", "the prompt is empty", custom_id)
    if len(text) > limits.max_prompt_chars:
        raise InputLineError(
            "prompt_too_long",
            f"prompt is {len(text)} characters; the limit is {limits.max_prompt_chars} (limits.max_prompt_chars)",
            custom_id,
        )


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "line"
    if first["type"] == "missing":
        return f"missing field {where!r}"
    return f"{where}: {first['msg']}"


def numbered(lines: Iterable[bytes], physical: bool = True) -> Iterator[tuple[int, bytes]]:
    """Each non-blank line with its line number, as an editor (or `sed -n Np`) counts them,
    blank lines included; IDLE passes through with the number of the line before it. Not
    ``physical``: blank lines are not counted, as in a batch begun by an earlier turnout that
    did not count them (``Ledger.counts_blank_lines``)."""
    line_no = 0
    for raw in lines:
        if raw is IDLE:
            yield line_no, raw
        elif raw.strip():
            line_no += 1
            yield line_no, raw
        elif physical:
            line_no += 1
