"""Routing without model calls: what `turnout classify` prints for a file."""

from __future__ import annotations

import contextlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TextIO

from router.classifier import load_classifier
from router.policy import TierPolicy
from schemas.config import Config
from schemas.errors import InputLineError
from schemas.job import Job, check_batch_length, numbered, parse_line

#: Tokens assumed per answer when estimating a batch's cost before any model has run.
ESTIMATED_COMPLETION_TOKENS = 256
#: Characters per token, OpenAI's rule of thumb for English.
CHARS_PER_TOKEN = 4


def dry_run(config: Config, path: Path, out: TextIO) -> str:
    """Write one ``{"custom_id", "tier", "score"}`` line per input line (of ``path``, or of
    stdin for ``-``), with ``"pinned": true`` where the line's model pinned the tier (the
    score then decided nothing), or the error line submit would record; returns the summary."""
    classifier = load_classifier(config.classifier)
    policy = TierPolicy(config)
    tiers: Counter[str] = Counter()
    pinned = 0
    seen: dict[str, int] = {}  # custom_id → the line that owns it, as the producer's claim
    cost = frontier = 0.0
    with open(path, "rb") if str(path) != "-" else contextlib.nullcontext(sys.stdin.buffer) as handle:
        for record, (line_no, raw) in enumerate(numbered(handle), start=1):  # numbered as submit numbers them
            custom_id = None
            try:
                check_batch_length(record, config.limits)  # as submit refuses them
                job = parse_line(raw, line_no, "dry-run", config.limits)
                custom_id = job.custom_id
                pin = policy.pinned_tier(job.model)
                owner = seen.setdefault(job.custom_id, line_no)
                if owner != line_no:
                    raise InputLineError("duplicate_custom_id", f"custom_id {job.custom_id!r} was already used on line {owner}")
            except InputLineError as exc:
                line = {"custom_id": exc.custom_id or custom_id, "line": line_no, "code": exc.code, "error": exc.message}
                out.write(json.dumps(line) + "\n")
                tiers["error"] += 1
                continue
            decision = policy.decide(classifier.score(job.prompt_text), pin)
            tiers[decision.tier] += 1
            shown: dict[str, object] = {"custom_id": job.custom_id, "tier": decision.tier, "score": decision.score}
            if pin is not None:
                shown["pinned"] = True
                pinned += 1
            out.write(json.dumps(shown) + "\n")
            cost += estimated_cost(config, decision.tier, job)
            frontier += estimated_cost(config, config.frontier.name, job)
    mix = ", ".join(f"{name} {count}" for name, count in tiers.most_common()) or "no lines"
    if pinned:
        mix += f" ({pinned} pinned by their model field)"
    return f"router {classifier.label}: {mix}. Estimated cost ${cost:.4f} against ${frontier:.4f} all-frontier."


def estimated_cost(config: Config, tier: str, job: Job) -> float:
    """A rough cost for one job on a tier's primary deployment, from prompt length alone."""
    primary = config.tier(tier).deployments[0]
    prompt_tokens = len(job.prompt_text) / CHARS_PER_TOKEN
    completion = job.max_tokens or ESTIMATED_COMPLETION_TOKENS
    return primary.cost(prompt_tokens, completion)
