"""turnout.yaml: tiers, deployments, limits and their defaults, in one place.

Every default has a name here and a reason beside it. Environment variables named
``TURNOUT_<FIELD>`` override the top-level scalar fields (``TURNOUT_REDIS_URL``,
``TURNOUT_HIGH_WATER``, …); secrets are never written in the file but referenced as
``os.environ/NAME`` (LiteLLM's own convention) or ``file:/path``.
"""

from __future__ import annotations

import functools
import math
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.errors import ConfigError

#: Jobs per classify task: Celery's per-message cost (~2 ms to publish) spread over many jobs
#: (the producer ran 10,600 jobs/s at 64, 17,100 at 256); the producer also caps a chunk at 1 MiB.
DEFAULT_CHUNK_SIZE = 256
#: Jobs per tier task: the calls one worker process keeps in flight on its event loop.
DEFAULT_TIER_BATCH_SIZE = 32
#: Queued jobs (all turnout queues together) above which the producer waits.
DEFAULT_HIGH_WATER = 50_000
#: Attempts per job before a retryable failure goes to the dead-letter queue.
DEFAULT_MAX_ATTEMPTS = 4
#: Seconds a failing deployment sits out before LiteLLM sends it calls again.
DEFAULT_COOLDOWN_S = 10.0
#: Retries a job may wait through while its tier's deployments are down; they back off to
#: 15-30 s apart, so 30 is about 10 minutes of outage.
DEFAULT_MAX_WAITS = 30
#: Seconds one provider call may take before it counts as a timeout.
DEFAULT_CALL_TIMEOUT_S = 60.0

FAKE_API_BASE = "fake"
#: The classify stage's pool (`turnout worker --pool classify`); no tier may take its name.
CLASSIFY_POOL = "classify"
#: A set visibility timeout must exceed the longest tier's calls by this much (a retry waits in it too).
VISIBILITY_SLACK_S = 10.0
#: A tier task stops waiting for calls still out this many times as long as half its calls took.
DEFAULT_HAND_OFF_AFTER = 2.0
_SECRET_REF = re.compile(r"^(os\.environ/[A-Za-z_][A-Za-z0-9_]*|file:.+)$")
_NAME = r"^[a-z0-9][a-z0-9_-]*$"
#: The kinds of prompt the trained router tells apart (multiple choice, word problems, the rest);
#: each is scored by its own model, on its own scale, so a tier may set a threshold per kind.
PromptKind = Literal["choice", "math", "general"]
PROMPT_KINDS: tuple[str, ...] = get_args(PromptKind)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Deployment(_Strict):
    """One LiteLLM deployment: a model at one provider, with its prices and limits."""

    model: str = Field(description="LiteLLM model string, e.g. openai/gpt-4o-mini")
    name: str | None = Field(None, description="id shown in outputs and metrics; default tier/index")
    api_base: str | None = Field(None, description='provider URL, or "fake" for the fake provider')
    api_key: str | None = Field(None, description="os.environ/NAME or file:/path, never the key itself")
    input_cost_per_million: float | None = Field(None, ge=0, description="USD; default LiteLLM's price for the model")
    output_cost_per_million: float | None = Field(None, ge=0, description="USD; default LiteLLM's price for the model")
    rpm: int | None = Field(None, gt=0, description="requests per minute, cluster-wide")
    tpm: int | None = Field(None, gt=0, description="tokens per minute, cluster-wide")
    timeout_s: float = Field(DEFAULT_CALL_TIMEOUT_S, gt=0)
    max_context_tokens: int | None = Field(None, gt=0)
    params: dict[str, Any] = Field(default_factory=dict, description="extra litellm_params")

    @field_validator("api_key")
    @classmethod
    def _key_is_a_reference(cls, value: str | None) -> str | None:
        if value is not None and not _SECRET_REF.match(value):
            raise ValueError("write the key as os.environ/NAME or file:/path, never the key itself")
        return value

    @property
    def prices(self) -> tuple[float, float]:
        """USD per million input and output tokens: the config's, else LiteLLM's cost map's for
        the model, else 0 (``priced`` is then False; costs count the calls as free)."""
        given = (self.input_cost_per_million, self.output_cost_per_million)
        if given[0] is not None and given[1] is not None:
            return given[0], given[1]
        known = _litellm_prices(self.model) or (0.0, 0.0)
        return (given[0] if given[0] is not None else known[0], given[1] if given[1] is not None else known[1])

    @property
    def priced(self) -> bool:
        return (self.input_cost_per_million is not None and self.output_cost_per_million is not None) or bool(_litellm_prices(self.model))

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        """What a call of these many tokens costs here, in USD."""
        input_price, output_price = self.prices
        return (prompt_tokens * input_price + completion_tokens * output_price) / 1e6


#: A cascade tier's scorers (router/scorer.py): each alone, or gated by the format checks.
ScorerKind = Literal["format", "logprob", "verifier", "judge", "format+logprob", "format+verifier", "format+judge"]


class ScorerConfig(_Strict):
    """How a cascade tier judges its own answers before returning them."""

    kind: ScorerKind = Field("format", description="format, logprob, verifier, judge, or format+<kind>")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="answers scoring below it are escalated")
    cost_aware: bool = Field(
        False, description="weigh the score by the size of the escalation it would cost (README: Cascade)"
    )
    model_path: str | None = Field(None, description="verifier model file; default the shipped one")
    judge: Deployment | None = Field(None, description="the deployment that grades answers for kind judge")

    @model_validator(mode="after")
    def _settings_fit_the_kind(self) -> ScorerConfig:
        if self.kind.endswith("judge") and self.judge is None:
            raise ValueError("a judge scorer needs a judge: deployment to ask")
        if self.cost_aware and self.kind == "format":
            raise ValueError("cost_aware weighs a probability, and format checks only pass or fail: drop it, or use format+<kind>")
        return self


class Tier(_Strict):
    """A pool of workers on queue ``turnout.tier.<name>`` answering with one set of deployments."""

    name: str = Field(pattern=_NAME)
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="lowest classifier score routed here")
    min_score_by_kind: dict[PromptKind, float] = Field(
        default_factory=dict, description="per prompt kind, in place of min_score (turnout calibrate writes them)"
    )
    deployments: list[Deployment] = Field(min_length=1, description="in fallback order")
    models: list[str] = Field(default_factory=list, description="model names that pin a job here")
    batch_size: int = Field(DEFAULT_TIER_BATCH_SIZE, ge=1, le=1024, description="jobs per task")
    processes: int = Field(1, ge=1, description="worker processes per pool (concurrency hint)")
    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1)
    max_waits: int = Field(
        DEFAULT_MAX_WAITS,
        ge=0,
        description=(
            "retries a job waits through, without spending an attempt, while the deployments are down (every one "
            "called answered 429, or failed again after a run of failures); 15-30 s apart, so 30 is about 10 minutes"
        ),
    )
    cooldown_s: float = Field(DEFAULT_COOLDOWN_S, ge=0, description="how long a failing deployment sits out")
    policy: Literal["route", "cascade"] = Field("route", description="cascade: escalate answers the scorer rejects")
    scorer: ScorerConfig | None = Field(None, description="for policy cascade")
    hand_off_after: float | None = Field(
        DEFAULT_HAND_OFF_AFTER,
        ge=1.0,
        description=(
            "once half a micro-batch has answered, calls still out after this many times as long are handed to "
            "the process's event loop and the task ends (route tiers; null waits for every call)"
        ),
    )

    @field_validator("min_score_by_kind")
    @classmethod
    def _scores_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        outside = {kind: score for kind, score in value.items() if not 0.0 <= score <= 1.0}
        if outside:
            raise ValueError(f"scores lie in [0, 1], got {outside}")
        return value

    def threshold(self, kind: str | None) -> float:
        """The lowest score of a prompt of ``kind`` routed here (None: a classifier without kinds)."""
        return next((score for name, score in self.min_score_by_kind.items() if name == kind), self.min_score)

    @model_validator(mode="after")
    def _cascade_has_a_scorer(self) -> Tier:
        if self.policy == "cascade" and self.scorer is None:
            raise ValueError(f"tier {self.name} has policy cascade: give it a scorer: (e.g. kind: format)")
        return self

    @property
    def queue(self) -> str:
        return f"turnout.tier.{self.name}"

    @property
    def guard_queue(self) -> str:
        """Where the guards of this tier's handed-off calls wait (workers/stragglers.py): the
        tier's workers consume it beside ``queue``, so a guard does not wait behind the backlog."""
        return f"turnout.guard.{self.name}"

    @property
    def judge(self) -> Deployment | None:
        """The deployment that grades this tier's answers, for a judge scorer."""
        return self.scorer.judge if self.scorer is not None and self.scorer.kind.endswith("judge") else None

    @property
    def longest_run_s(self) -> float:
        """The longest one of this tier's tasks may run: every deployment timing out in turn,
        then the judge's call for a judge-scored cascade."""
        return sum(d.timeout_s for d in self.deployments) + (self.judge.timeout_s if self.judge is not None else 0.0)

    @property
    def task_name(self) -> str:
        return f"turnout.complete.{self.name}"

    def deployment_name(self, index: int) -> str:
        return self.deployments[index].name or f"{self.name}/{index}"

    def pinning_models(self) -> set[str]:
        """Model names that send a job to this tier: the aliases and each deployment's model."""
        names = set(self.models)
        for deployment in self.deployments:
            names.add(deployment.model)
            names.add(deployment.model.split("/", 1)[-1])
        return names


class Limits(_Strict):
    """Input limits; a line beyond them becomes an error line naming the limit and the size."""

    max_line_bytes: int = Field(1_000_000, gt=0)
    max_prompt_chars: int = Field(200_000, gt=0)
    max_batch_lines: int = Field(50_000_000, gt=0)


class ClassifierConfig(_Strict):
    """Which router scores prompts: the trained model (default when present) or the heuristic."""

    kind: Literal["auto", "heuristic", "trained"] = "auto"
    model_path: str | None = None

    @model_validator(mode="after")
    def _heuristic_reads_no_model(self) -> ClassifierConfig:
        if self.kind == "heuristic" and self.model_path:
            raise ValueError(f"kind heuristic reads no model, yet model_path is {self.model_path!r}: drop one of the two")
        return self


class FakeProviderConfig(_Strict):
    """The offline OpenAI-compatible server that `turnout run` starts for ``api_base: fake``."""

    port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    latency_ms: float = Field(0.0, ge=0)
    error_rate: float = Field(0.0, ge=0, le=1)
    context_limit: int | None = Field(None, gt=0)


class Config(_Strict):
    """The whole of turnout.yaml."""

    redis_url: str | None = Field(None, description="None: start an embedded Redis under .turnout/")
    state_dir: str = Field(".turnout", description="embedded Redis socket and data")
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1, le=10_000)
    high_water: int = Field(DEFAULT_HIGH_WATER, ge=1)
    classify_processes: int = Field(1, ge=1)
    visibility_timeout_s: int | None = Field(
        None, gt=0, description="re-delivery delay for a task whose worker died; default derived from the tiers' timeouts"
    )
    tiers: list[Tier] = Field(min_length=1, description="ordered from cheapest to strongest")
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    limits: Limits = Field(default_factory=Limits)
    fake_provider: FakeProviderConfig | None = None

    @model_validator(mode="after")
    def _tiers_are_ordered(self) -> Config:
        names = [tier.name for tier in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        if CLASSIFY_POOL in names:
            raise ValueError(f"a tier may not be named {CLASSIFY_POOL}: the classify stage's pool has that name; rename the tier")
        if self.tiers[0].min_score != 0.0 or self.tiers[0].min_score_by_kind:
            raise ValueError("the first (cheapest) tier takes every score below the next tier's: give it min_score 0 and no min_score_by_kind")
        for kind in (None, *PROMPT_KINDS):
            scores = [tier.threshold(kind) for tier in self.tiers]
            if scores != sorted(scores) or len(set(scores)) != len(scores):
                which = "min_score" if kind is None else f"the {kind} prompts' threshold (min_score_by_kind, else min_score)"
                unset = [t.name for t in self.tiers[1:] if "min_score" not in t.model_fields_set]
                hint = f" ({', '.join(unset)} gives none, so 0: give each a rising min_score, then `turnout calibrate --write` tunes them)" if unset else ""
                raise ValueError(f"{which} must rise from tier to tier, got {scores}{hint}")
        if self.tiers[-1].policy == "cascade":
            raise ValueError(f"the strongest tier ({self.tiers[-1].name}) cannot cascade: there is no tier above it")
        uses_fake = any(d.api_base == FAKE_API_BASE for t in self.tiers for d in t.deployments)
        if uses_fake and self.fake_provider is None:
            raise ValueError('a deployment uses api_base "fake": add a fake_provider: section')
        longest = max(t.longest_run_s for t in self.tiers)
        if self.visibility_timeout_s is not None and self.visibility_timeout_s < longest + VISIBILITY_SLACK_S:
            raise ValueError(
                f"visibility_timeout_s {self.visibility_timeout_s} is too short: a tier's calls may take {longest:g} s "
                f"(its deployments' timeout_s added up, and its judge's), and a task still running would be delivered twice; "
                f"set it to at least {math.ceil(longest + VISIBILITY_SLACK_S)} or leave it unset"
            )
        return self

    def unpriced_note(self) -> str | None:
        """A sentence naming the tiers' deployments with no price in the config nor in LiteLLM's
        cost map, whose calls costs and savings count as free; None when every one is priced."""
        unpriced = [f"{t.name}/{d.name or d.model}" for t in self.tiers for d in t.deployments if not d.priced]
        if not unpriced:
            return None
        return (f"no price for {', '.join(unpriced)}, in the config or LiteLLM's cost map: costs and savings count "
                "its calls as free; set input_cost_per_million and output_cost_per_million")

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise ConfigError(f"no tier named {name!r}; the config has {[t.name for t in self.tiers]}")

    @property
    def frontier(self) -> Tier:
        return self.tiers[-1]


def resolve_secret(reference: str) -> str:
    """Read the secret an ``os.environ/NAME`` or ``file:/path`` reference points at."""
    if reference.startswith("os.environ/"):
        name = reference.removeprefix("os.environ/")
        if name not in os.environ:
            raise ConfigError(f"the config reads an API key from ${name}, which is not set; export it")
        return os.environ[name]
    path = Path(reference.removeprefix("file:"))
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None


#: Top-level fields that a TURNOUT_<NAME> environment variable may override.
ENV_OVERRIDABLE = ("redis_url", "state_dir", "chunk_size", "high_water", "classify_processes")


def _env_overrides(raw: dict[str, Any]) -> dict[str, Any]:
    for name in ENV_OVERRIDABLE:
        value = os.environ.get(f"TURNOUT_{name.upper()}")
        if value is not None:
            raw[name] = value
    return raw


@functools.lru_cache(maxsize=None)
def _litellm_prices(model: str) -> tuple[float, float] | None:
    """LiteLLM's price for ``model`` per million input and output tokens, from the cost map it
    ships (LITELLM_LOCAL_MODEL_COST_MAP: never downloaded); None for a model it does not know.
    Imported here, not at the top: only a deployment without prices in the config needs it."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    try:
        info = litellm.get_model_info(model)
    except Exception:  # litellm raises its own "not mapped" errors, and others, for an unknown model
        return None
    input_price, output_price = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if input_price is None or output_price is None:
        return None
    return float(input_price) * 1e6, float(output_price) * 1e6


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, override from the environment and validate a config file, or raise ConfigError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; pass -c PATH or copy examples/turnout.yaml") from None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not text
        raise ConfigError(f"config file {path} cannot be read ({exc.__class__.__name__}); pass -c PATH to a YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping with a 'tiers:' list")
    try:
        return Config.model_validate(_env_overrides(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
        raise ConfigError(f"config file {path}: {where}: {message}") from None
