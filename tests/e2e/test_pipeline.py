"""A batch through real Redis, real Celery worker processes and the fake provider over HTTP."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from router.heuristic import HeuristicClassifier
from router.policy import TierPolicy
from tests.e2e.conftest import Cluster

EASY = "What is the capital of France?"
HARD = (
    "Prove step by step that the algorithm below has O(n log n) complexity, analyze the trade-offs, "
    "and explain why it must terminate.\n```python\ndef sort(xs):\n    return sorted(xs)\n```"
)


def batch_line(custom_id: str, content: str, model: str = "auto") -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 64}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def test_a_mixed_batch_comes_back_with_every_custom_id_once_in_its_tier(cluster: Cluster) -> None:
    # Given a batch of easy and hard prompts in both input forms
    lines: list[Any] = []
    for i in range(60):
        prompt = HARD if i % 3 == 0 else EASY + f" ({i})"
        lines.append({"custom_id": f"m{i}", "prompt": prompt} if i % 2 else batch_line(f"m{i}", prompt))

    # When it runs through the pools
    result = cluster.run(lines, "mixed")

    # Then every custom_id comes back exactly once, with no errors
    ids = Counter(line["custom_id"] for line in result["out"])
    assert result["err"] == []
    assert ids == Counter(f"m{i}" for i in range(60))
    # And each went to the tier the router picks for its prompt, answered by that tier's model
    policy, classifier = TierPolicy(cluster.config), HeuristicClassifier()
    for line in result["out"]:
        prompt = HARD if int(line["custom_id"][1:]) % 3 == 0 else EASY
        expected = policy.tier_for_score(classifier.score(prompt + ("" if prompt == HARD else " (0)")).value)
        assert line["turnout"]["tier"] == expected
        tier_models = {d.model.split("/")[-1] for d in cluster.config.tier(expected).deployments}
        assert line["response"]["body"]["model"] in tier_models  # its primary, or its backup past a rate limit
        assert line["response"]["status_code"] == 200
        assert line["turnout"]["cost_usd"] > 0
    assert {line["turnout"]["tier"] for line in result["out"]} == {"cheap", "frontier"}
    # And the batch's counters agree with the lines
    status = cluster.client.status("mixed")
    assert status.done == status.submitted == 60 and status.failed == 0
    assert abs(status.cost_usd - sum(line["turnout"]["cost_usd"] for line in result["out"])) < 1e-9


def test_pins_are_honoured_and_an_unknown_model_is_an_error_line(cluster: Cluster) -> None:
    # Given an easy prompt pinned to the frontier, a hard one asking for the cheap tier's
    # model by name, and one asking for a model the config does not list
    lines = [
        batch_line("pin-tier", EASY, model="tier:frontier"),
        batch_line("pin-model", HARD, model="gpt-4o-mini"),
        batch_line("pin-unknown", EASY, model="gpt-9-ultra"),
        batch_line("pin-bad-tier", EASY, model="tier:platinum"),
    ]

    # When the batch runs
    result = cluster.run(lines, "pins")

    # Then the pins decide the tier, and the unknown names are error lines saying why
    tiers = {line["custom_id"]: line["turnout"]["tier"] for line in result["out"]}
    assert tiers == {"pin-tier": "frontier", "pin-model": "cheap"}
    errors = {line["custom_id"]: line["error"] for line in result["err"]}
    assert errors["pin-unknown"]["code"] == "unknown_model"
    assert "gpt-9-ultra" in errors["pin-unknown"]["message"]
    assert errors["pin-bad-tier"]["code"] == "unknown_tier"


def test_malformed_lines_become_error_lines_and_the_batch_completes(cluster: Cluster) -> None:
    # Given good lines with every kind of bad line mixed in
    lines: list[Any] = [{"custom_id": f"ok{i}", "prompt": EASY} for i in range(10)]
    lines += [
        "this is not json",
        json.dumps({"custom_id": "no-prompt"}),
        json.dumps(batch_line("empty-messages", EASY) | {"body": {"model": "auto", "messages": []}}),
        json.dumps({"custom_id": "too-long", "prompt": "x" * 2500}),
        json.dumps({"custom_id": "ok3", "prompt": "a duplicate id"}),
        json.dumps([1, 2, 3]),
    ]

    # When the batch runs
    result = cluster.run(lines, "malformed")

    # Then each good line has an output line and each bad line exactly one error line
    assert sorted(line["custom_id"] for line in result["out"]) == sorted(f"ok{i}" for i in range(10))
    codes = sorted(line["error"]["code"] for line in result["err"])
    assert codes == sorted(
        ["invalid_json", "missing_prompt", "empty_messages", "prompt_too_long", "duplicate_custom_id", "invalid_json"]
    )
    by_code = {line["error"]["code"]: line for line in result["err"]}
    assert "2500" in by_code["prompt_too_long"]["error"]["message"]
    assert "2000" in by_code["prompt_too_long"]["error"]["message"]
    assert by_code["duplicate_custom_id"]["custom_id"] == "ok3"
    assert len(result["out"]) + len(result["err"]) == len(lines)


def test_a_job_delivered_twice_yields_one_line_and_one_cost(cluster: Cluster) -> None:
    # Given a finished batch
    cluster.run([{"custom_id": f"twice{i}", "prompt": EASY} for i in range(8)], "twice")
    before = cluster.client.status("twice")
    lines_before = list(cluster.client.ledger.lines("twice", "out"))

    # When its jobs reach the tier queue again (a re-delivery after a lost ack)
    cluster.run([{"custom_id": f"twice{i}", "prompt": EASY} for i in range(8)], "twice")

    # Then nothing is added: the same lines, the same cost
    after = cluster.client.status("twice")
    assert sorted(cluster.client.ledger.lines("twice", "out")) == sorted(lines_before)
    assert after.cost_usd == before.cost_usd and after.done == before.done == 8
