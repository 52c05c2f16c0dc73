"""A provider's answer to one job, as the tasks record it.

Kept apart from provider.py so that importing the tasks (the producer does) does not
import LiteLLM: seconds of start-up and ~170 MB of memory the producer does not need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The error code of a job no deployment was asked about: all were cooling down or rate-limited.
BUSY = "deployments_busy"


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
