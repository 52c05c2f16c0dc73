"""The classify task's own failures: a prompt the classifier cannot score ends as one error
line, and the rest of its chunk is routed (real Redis, a real Celery app sending to it)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis

from router.classifier import Classifier, Score
from schemas.config import Config
from tests.conftest import other_db
from workers.app import create_app
from workers.tasks import MAX_DELIVERIES, classify_chunk, run_classify

DB = 10  # a database of its own: no test cluster's worker consumes what lands here


class Brittle(Classifier):
    """Fails on prompts saying BOOM, like a classifier with a bug for some inputs."""

    name = "brittle"

    def score(self, text: str) -> Score:
        if "BOOM" in text:
            raise ValueError("cannot score this")
        if "NAN" in text:
            return Score(float("nan"))
        return Score(0.9 if "hard" in text else 0.1)


@pytest.fixture
def db_url(redis_url: str) -> Iterator[str]:
    url = other_db(redis_url, DB)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def test_a_prompt_the_classifier_fails_on_is_an_error_line_and_its_chunk_is_routed(db_url: str) -> None:
    config = Config.model_validate({
        "tiers": [
            {"name": "unit-cheap", "deployments": [{"model": "openai/gpt-4o-mini"}]},
            {"name": "unit-frontier", "min_score": 0.5, "deployments": [{"model": "openai/gpt-4o"}]},
        ],
    })  # fmt: skip
    app = create_app(config, db_url)
    runtime = app.turnout_runtime
    runtime.__dict__["classifier"] = Brittle()
    prompts = {"easy": "Say hi", "boom": "BOOM goes the classifier", "hard": "A hard one"}
    jobs = [
        {"batch_id": "b", "custom_id": custom_id, "line": n, "messages": [{"role": "user", "content": prompt}]}
        for n, (custom_id, prompt) in enumerate(prompts.items(), 1)
    ]

    classify_chunk(app, runtime, "b", jobs)

    # The failing prompt is one error line naming the failure ...
    errors = [json.loads(line) for line in runtime.ledger.error_lines("b")]
    assert [(e["custom_id"], e["error"]["code"], e["turnout"]["line"]) for e in errors] == [("boom", "classify_failed", 2)]
    assert "ValueError: cannot score this" in errors[0]["error"]["message"]
    # ... and the others went to their tiers' queues, one task each
    client = redis.Redis.from_url(db_url)
    sent = {}
    for tier in config.tiers:
        messages = client.lrange(tier.queue, 0, -1)
        assert len(messages) == 1
        args, _, _ = json.loads(base64.b64decode(json.loads(messages[0])["body"]))  # kombu: base64 of (args, kwargs, embed)
        sent[tier.name] = [job["custom_id"] for job in args[1]]
    assert sent == {"unit-cheap": ["easy"], "unit-frontier": ["hard"]}
    client.close()


def _config() -> Config:
    return Config.model_validate({
        "tiers": [
            {"name": "unit-cheap", "deployments": [{"model": "openai/gpt-4o-mini"}]},
            {"name": "unit-frontier", "min_score": 0.5, "deployments": [{"model": "openai/gpt-4o"}]},
        ],
    })  # fmt: skip


def test_an_unusable_score_and_jobs_with_no_id_each_end_as_their_own_error_line(db_url: str) -> None:
    app = create_app(_config(), db_url)
    runtime = app.turnout_runtime
    runtime.__dict__["classifier"] = Brittle()
    nan_job = {"batch_id": "c", "custom_id": "nan", "line": 1, "messages": [{"role": "user", "content": "NAN"}]}
    no_ids = [{"batch_id": "c", "messages": "not a list"}, {"batch_id": "c", "messages": "nor this"}]

    classify_chunk(app, runtime, "c", [nan_job, *no_ids])
    classify_chunk(app, runtime, "c", [nan_job, *no_ids])  # delivered again: recorded once

    errors = [json.loads(line) for line in runtime.ledger.error_lines("c")]
    assert sorted(e["error"]["code"] for e in errors) == ["classify_failed", "unreadable_job", "unreadable_job"]
    status = runtime.ledger.status("c")
    assert status is not None and status.done == 3



class FakeTask:
    """What run_classify reads of a Celery task: its app and its delivery's id."""

    def __init__(self, app: object, task_id: str) -> None:
        self.app = app
        self.request = type("Request", (), {"id": task_id, "retries": 0})()


def test_a_chunk_whose_task_never_finishes_ends_as_error_lines_not_a_loop(db_url: str) -> None:
    # Given a classify task already delivered MAX_DELIVERIES times (it failed, or its worker
    # died, each time)
    app = create_app(_config(), db_url)
    runtime = app.turnout_runtime
    jobs = [{"batch_id": "b", "custom_id": f"j{n}", "line": n, "messages": [{"role": "user", "content": "hi"}]} for n in (1, 2)]
    redis.Redis.from_url(db_url).set("turnout:deliveries:c1:0", MAX_DELIVERIES)

    # When it is delivered once more
    run_classify(FakeTask(app, "c1"), runtime, "b", jobs)

    # Then each of its jobs ends as an error line saying so, and nothing is routed
    errors = [json.loads(line) for line in runtime.ledger.error_lines("b")]
    assert sorted((e["custom_id"], e["error"]["code"]) for e in errors) == [("j1", "classify_failed"), ("j2", "classify_failed")]
    assert "did not finish in 3 deliveries" in errors[0]["error"]["message"]
    client = redis.Redis.from_url(db_url)
    assert all(client.llen(tier.queue) == 0 for tier in _config().tiers)
    client.close()


def test_a_chunk_under_its_delivery_limit_is_classified(db_url: str) -> None:
    app = create_app(_config(), db_url)
    runtime = app.turnout_runtime
    runtime.__dict__["classifier"] = Brittle()
    jobs = [{"batch_id": "b", "custom_id": "j1", "line": 1, "messages": [{"role": "user", "content": "hi"}]}]

    run_classify(FakeTask(app, "c2"), runtime, "b", jobs)

    assert list(runtime.ledger.error_lines("b")) == []
    assert redis.Redis.from_url(db_url).llen(_config().tiers[0].queue) == 1
