"""Output and error lines in the OpenAI Batch output format, plus turnout's own ``turnout``
object, and the per-batch report."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, Field
from pydantic_core import PydanticSerializationError


class TurnoutInfo(BaseModel):
    """What turnout adds to each output line: where the job went and what it cost."""

    line: int | None = None
    tier: str | None = None
    model: str | None = None
    deployment: str | None = None
    score: float | None = None
    reasons: list[str] = Field(default_factory=list)
    attempts: int = 0
    fallbacks: list[str] = Field(
        default_factory=list, description="deployments that failed first (on an error line: those its last attempt tried)"
    )
    latency_s: float | None = None
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: list[dict[str, Any]] = Field(
        default_factory=list, description="every model call in a cascade: tier, deployment, tokens, cost, score"
    )


class Response(BaseModel):
    status_code: int
    request_id: str
    body: dict[str, Any]


class ErrorInfo(BaseModel):
    code: str
    message: str


class ResultLine(BaseModel):
    """One line of output.jsonl or errors.jsonl."""

    id: str
    custom_id: str | None = Field(description="None only for an input line whose custom_id could not be read")
    response: Response | None = None
    error: ErrorInfo | None = None
    turnout: TurnoutInfo = Field(default_factory=TurnoutInfo)

    @property
    def ok(self) -> bool:
        return self.error is None


def json_text(model: BaseModel) -> str:
    """``model.model_dump_json()``, with any unpaired UTF-16 surrogate (a model's broken
    ``\\ud83d`` escape, which JSON parsers accept and UTF-8 cannot encode) replaced by U+FFFD,
    where pydantic would raise: a paid answer must still be recorded, and readable."""
    try:
        return model.model_dump_json()
    except PydanticSerializationError:
        text = json.dumps(model.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def request_id(batch_id: str, custom_id: str) -> str:
    """A stable id per (batch, custom_id): a job that runs twice gets the same id."""
    return "batch_req_" + hashlib.sha1(f"{batch_id}\0{custom_id}".encode()).hexdigest()[:24]


def error_line(batch_id: str, custom_id: str | None, code: str, message: str, info: TurnoutInfo | None = None) -> ResultLine:
    return ResultLine(
        id=request_id(batch_id, custom_id or f"@line:{info.line if info else 0}"),
        custom_id=custom_id,
        error=ErrorInfo(code=code, message=message),
        turnout=info or TurnoutInfo(),
    )


class TierReport(BaseModel):
    jobs: int = 0
    failed: int = 0
    cost_usd: float = 0.0


def spent_text(cost_usd: float, max_cost_usd: float | None) -> str:
    """``$0.0123``, or ``$0.0123 of $5.0000`` for a batch with a spending cap."""
    return f"${cost_usd:.4f}" + (f" of ${max_cost_usd:.4f}" if max_cost_usd is not None else "")


class BatchStatus(BaseModel):
    """Progress of one batch, as read from Redis."""

    batch_id: str
    submitted: int = Field(0, description="input lines read so far")
    done: int = Field(0, description="lines with an output or error line")
    failed: int = 0
    sealed: bool = Field(False, description="the producer reached the end of the input")
    cost_usd: float = 0.0
    frontier_cost_usd: float = Field(0.0, description="estimated cost had every job gone to the frontier tier")
    max_cost_usd: float | None = Field(None, description="the batch's spending cap (--max-cost), if it has one")
    tiers: dict[str, TierReport] = Field(default_factory=dict)
    started_at: float | None = None
    updated_at: float | None = None

    @property
    def complete(self) -> bool:
        return self.sealed and self.done >= self.submitted
