"""The tier policy: from a pinned model or a classifier score to a tier.

Resolution order, first match wins: ``model: tier:<name>`` pins a tier; a model name that
a tier lists (or one of its deployments' models) pins that tier; ``auto`` or no model lets
the classifier score decide by the tiers' thresholds (``min_score``, or ``min_score_by_kind``
for the kind the score came with); anything else is an error line, so a typo never silently
runs on the wrong model.
"""

from __future__ import annotations

import bisect

from router.classifier import Score
from schemas.config import PROMPT_KINDS, Config
from schemas.errors import InputLineError
from schemas.job import AUTO_MODELS, TIER_PREFIX, Decision


class TierPolicy:
    """Maps scores to tiers by threshold and honours pins."""

    def __init__(self, config: Config) -> None:
        self.tier_names = [tier.name for tier in config.tiers]
        self.thresholds = {kind: [tier.threshold(kind) for tier in config.tiers] for kind in (None, *PROMPT_KINDS)}
        self.by_model: dict[str, str] = {}
        for tier in reversed(config.tiers):  # a name listed by two tiers pins the cheaper one
            for model in tier.pinning_models():
                self.by_model[model] = tier.name

    def pinned_tier(self, model: str | None) -> str | None:
        """The tier a job's ``model`` field pins, None for "route it", InputLineError if unknown."""
        if model is None or model.strip().lower() in AUTO_MODELS:
            return None
        if model.startswith(TIER_PREFIX):
            name = model.removeprefix(TIER_PREFIX)
            if name not in self.tier_names:
                raise InputLineError("unknown_tier", f"model {model!r} pins an unknown tier; tiers are {self.tier_names}")
            return name
        if model in self.by_model:
            return self.by_model[model]
        known = sorted(self.by_model)
        more = f" (and {len(known) - 8} more)" if len(known) > 8 else ""
        raise InputLineError(
            "unknown_model",
            f"model {model!r} is not in the config; use auto, tier:<name> or one of {known[:8]}{more}",
        )

    def tier_for_score(self, score: float, kind: str | None = None) -> str:
        thresholds = self.thresholds.get(kind, self.thresholds[None])
        return self.tier_names[bisect.bisect_right(thresholds, score) - 1]

    def decide(self, score: Score, pin: str | None = None) -> Decision:
        """The decision for a scored job; a pinned tier overrides the score's tier."""
        if pin is not None:
            return Decision(tier=pin, score=round(score.value, 4), reasons=[f"pinned:{pin}"])
        return Decision(tier=self.tier_for_score(score.value, score.kind), score=round(score.value, 4), reasons=score.reasons)
