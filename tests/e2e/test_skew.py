"""A producer and workers that disagree (another config, another turnout version): the jobs
the workers cannot handle end as error lines, the rest are answered, the batch finishes."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import yaml

from schemas.config import Config
from schemas.job import Decision, Job, WireJob
from tests.e2e.conftest import Cluster
from workers.client import Client
from workers.tasks import send_classify


def _results(cluster: Cluster, batch_id: str) -> dict[str, list[dict[str, Any]]]:
    status = cluster.client.wait(batch_id, timeout=60)
    assert status.complete, status
    ledger = cluster.client.ledger
    return {
        "out": [json.loads(v) for v in ledger.lines(batch_id, "out")],
        "err": [json.loads(v) for v in ledger.error_lines(batch_id)],
    }


def test_a_tier_only_the_producers_config_has_ends_as_an_error_line_and_the_batch_finishes(fresh_fake: Cluster) -> None:
    # Given a producer whose config has a tier "mid" that the running workers' config lacks
    raw = cluster_config(fresh_fake)
    mid = dict(raw["tiers"][0], name="mid", min_score=0.3)
    producer_config = Config.model_validate(dict(raw, tiers=[raw["tiers"][0], mid, raw["tiers"][1]]))
    producer = Client(producer_config, fresh_fake.redis_url)
    lines = [{"custom_id": f"s{i}", "prompt": f"What is {i} + 1?"} for i in range(4)]
    lines.append({"custom_id": "pinned-mid", "prompt": "Say hi", "model": "tier:mid"})

    # When it submits a line pinned to that tier among routed ones
    batch_id = producer.submit(lines, "skew-tier")

    # Then the pinned line ends as one error line naming the tier and the fix, the rest are answered
    result = _results(fresh_fake, batch_id)
    assert Counter(line["custom_id"] for line in result["out"]) == Counter(f"s{i}" for i in range(4))
    assert [line["custom_id"] for line in result["err"]] == ["pinned-mid"]
    error = result["err"][0]["error"]
    assert error["code"] == "unknown_tier"
    assert "'mid'" in error["message"] and "same config" in error["message"]


def test_jobs_a_worker_cannot_read_end_as_error_lines_and_their_neighbours_are_answered(fresh_fake: Cluster) -> None:
    # Given a batch whose queued jobs include ones this turnout version cannot read (as a
    # producer of another version might send): "messages" is not a list
    ledger, app, batch_id = fresh_fake.client.ledger, fresh_fake.client.app, "skew-unreadable"
    ledger.open_batch(batch_id)
    good = [_wire(batch_id, f"g{i}", i + 1) for i in range(3)]
    bad = WireJob("bad-classify", 4, None, dict(_wire(batch_id, "bad-classify", 4).body, messages="hello"))
    ledger.claim_ids(batch_id, [(job.custom_id, job.line) for job in [*good, bad]] + [("bad-tier", 5), ("tier-ok", 6)])

    # When the classify pool gets them in one chunk, and a tier pool gets an unreadable job
    # beside a readable one in one micro-batch
    send_classify(app, batch_id, [*good, bad])
    tier = fresh_fake.config.tier("cheap")
    readable = Job(batch_id=batch_id, custom_id="tier-ok", line=6, messages=[{"role": "user", "content": "Hi"}],
                   decision=Decision(tier="cheap", score=0.1))  # fmt: skip
    unreadable = {"batch_id": batch_id, "custom_id": "bad-tier", "line": 5}  # no messages
    app.send_task(tier.task_name, args=[batch_id, [unreadable, readable.model_dump(mode="json")]], queue=tier.queue)
    ledger.seal(batch_id, 6)

    # Then each unreadable job is one error line saying why, the others are answered, and the batch finishes
    result = _results(fresh_fake, batch_id)
    assert Counter(line["custom_id"] for line in result["out"]) == Counter(["g0", "g1", "g2", "tier-ok"])
    errors = {line["custom_id"]: line for line in result["err"]}
    assert sorted(errors) == ["bad-classify", "bad-tier"]
    for custom_id, line in errors.items():
        assert line["error"]["code"] == "unreadable_job"
        assert "messages" in line["error"]["message"] and "same turnout version" in line["error"]["message"]
    assert errors["bad-classify"]["turnout"]["line"] == 4 and errors["bad-tier"]["turnout"]["line"] == 5


def _wire(batch_id: str, custom_id: str, line: int) -> WireJob:
    body = {"batch_id": batch_id, "custom_id": custom_id, "line": line, "messages": [{"role": "user", "content": f"What is {line}?"}]}
    return WireJob(custom_id, line, None, body)


def cluster_config(cluster: Cluster) -> dict[str, Any]:
    """The running workers' config as plain data, to derive a producer's config from."""
    raw: dict[str, Any] = yaml.safe_load(cluster.config_path.read_text())
    return raw
