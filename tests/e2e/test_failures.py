"""Failures through real workers: fallbacks, retries, dead letters and replay."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import redis

from tests.e2e.conftest import Cluster
from tests.e2e.test_crash import assert_ledger_whole, run_while
from workers.dlq import DeadLetters, replay
from workers.ledger import PREFIX

EASY = "What is the capital of France?"


def cheap_jobs(prefix: str, n: int, prompt: str = EASY) -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}{i}", "prompt": f"{prompt} ({i})", "model": "tier:cheap"} for i in range(n)]


def test_a_down_primary_sends_every_job_to_the_backup(fresh_fake: Cluster) -> None:
    # Given the cheap tier's primary deployment answers 503 to everything
    fresh_fake.fake(fail_models={"fake-cheap": 503})

    # When a batch runs on the cheap tier
    result = fresh_fake.run(cheap_jobs("down", 20), "primary-down")

    # Then every job is answered by the backup, and the output says which fallback was taken
    assert result["err"] == [] and len(result["out"]) == 20
    for line in result["out"]:
        assert line["turnout"]["deployment"] == "cheap-backup"
        assert line["turnout"]["fallbacks"] == ["cheap-primary"]
        assert line["response"]["body"]["model"] == "fake-cheap-backup"


def test_bad_requests_go_straight_to_errors_without_retries(fresh_fake: Cluster) -> None:
    # Given both cheap deployments reject every request as a bad request
    fresh_fake.fake(fail_models={"fake-cheap": 400, "fake-cheap-backup": 400})

    # When a batch runs on the cheap tier
    result = fresh_fake.run(cheap_jobs("bad", 6), "bad-requests")

    # Then every job is an error line after one attempt, with a dead letter each
    assert result["out"] == [] and len(result["err"]) == 6
    letters = DeadLetters(fresh_fake.client.ledger.redis)
    assert {line["turnout"]["attempts"] for line in result["err"]} == {1}, [x.errors for x in letters.entries(["cheap"], "bad-requests")][0]
    assert {line["response"]["status_code"] for line in result["err"]} == {400}
    # And the provider saw at most one request per job and deployment: nothing was retried
    assert fresh_fake.fake_stats()["requests"] <= 12
    letters = DeadLetters(fresh_fake.client.ledger.redis)
    assert len([x for x in letters.entries(["cheap"], "bad-requests")]) == 6


def test_a_key_every_deployment_refuses_ends_every_job_at_once_not_one_per_cooldown(fresh_fake: Cluster) -> None:
    # Given both cheap deployments refuse the key (401, a failure for good)
    fresh_fake.fake(fail_models={"fake-cheap": 401, "fake-cheap-backup": 401})

    # When a batch of five micro-batches runs on the cheap tier
    started = time.monotonic()
    result = fresh_fake.run(cheap_jobs("nokey", 40), "no-key", timeout=60)

    # Then every job is an error line within seconds: once the deployments cooled down for
    # the 401s, jobs passing them over spend their attempts without calling them, rather than
    # waiting for the one call each cooldown allows (a batch of millions would take weeks)
    assert result["out"] == [] and len(result["err"]) == 40
    assert {line["error"]["code"] for line in result["err"]} == {"authentication_error"}
    # And each error line lists the deployments its last attempt tried, in order
    assert {tuple(line["turnout"]["fallbacks"]) for line in result["err"]} == {("cheap-primary", "cheap-backup")}
    assert fresh_fake.fake_stats()["requests"] < 2 * 40  # fewer calls than jobs × deployments
    assert time.monotonic() - started < 30


def test_a_job_whose_backup_refuses_the_key_while_the_primary_cools_down_ends_as_an_error(fresh_fake: Cluster) -> None:
    # Given the frontier backup refuses the key (401, a failure for good) while the primary
    # cools down for two minutes (as its own failures would have it, re-armed by each), on the
    # tier that waits out no outage (max_waits 0; a tier with waits holds such jobs that long)
    fresh_fake.fake(fail_models={"fake-frontier-backup": 401})
    redis.Redis.from_url(fresh_fake.redis_url).set(f"{PREFIX}:gate:frontier-primary:cooldown", 1, px=120_000)

    # When a batch runs on the frontier tier
    jobs = [{"custom_id": f"keys{i}", "prompt": f"{EASY} ({i})", "model": "tier:frontier"} for i in range(10)]
    result = fresh_fake.run(jobs, "bad-key", timeout=60)

    # Then every job ends as an error line once its attempts (the tier's max_attempts, 3) are
    # spent, rather than being retried without spending any while the primary cools down
    assert result["out"] == [] and len(result["err"]) == 10
    assert {line["error"]["code"] for line in result["err"]} == {"authentication_error"}
    assert {line["turnout"]["attempts"] for line in result["err"]} == {3}
    # And the backup was not called once an attempt: once its 401s cooled it down, attempts
    # passed it over, failing as those calls did
    assert 4 <= fresh_fake.fake_stats()["requests"] < 10 * 3
    # And each dead letter lists every attempt's error with the time it failed
    letters = list(DeadLetters(fresh_fake.client.ledger.redis).entries(["frontier"], "bad-key"))
    assert len(letters) == 10 and all(len(letter.errors) == 3 for letter in letters)
    assert all(letter.first_failed_at <= letter.last_failed_at - 1 for letter in letters)  # 3 attempts, backoffs between
    assert all(re.match(r"attempt \d on frontier \(20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ\): authentication_error", e) for e in letters[0].errors)


def test_jobs_wait_out_a_provider_refusing_every_call_for_load_and_none_is_dead_lettered(fresh_fake: Cluster) -> None:
    # Given both cheap deployments answer 429 (Retry-After 1 s) to every call for 7 s: longer
    # than a job's three attempts (the tier's max_attempts) take to spend
    fresh_fake.fake(fail_models={"fake-cheap": 429, "fake-cheap-backup": 429}, retry_after_s=1)
    lines = cheap_jobs("storm", 12)

    # When a batch runs on the cheap tier through the storm
    def clear_after_storm() -> None:
        time.sleep(7)
        fresh_fake.fake(fail_models={})

    result = run_while(fresh_fake, lines, "storm", clear_after_storm)

    # Then every job waited the storm out without spending its attempts, and was answered
    assert result["err"] == [] and sorted(line["custom_id"] for line in result["out"]) == sorted(x["custom_id"] for x in lines)
    assert {line["turnout"]["attempts"] for line in result["out"]} == {1}
    assert fresh_fake.fake_stats()["by_status"].get("429", 0) >= 12  # refused again and again meanwhile


def test_a_primary_that_hangs_gets_one_call_per_cooldown_not_each_micro_batchs_calls(fresh_fake: Cluster) -> None:
    # Given the cheap primary takes every call and never answers (its calls end at the 5 s
    # timeout; the tier cools a failing deployment down for 1 s) and the backup answers in 0.5 s
    fresh_fake.fake(hang_models=["fake-cheap"], hang_s=30, latency_ms=500)

    # When a batch of eight micro-batches runs on the cheap tier
    result = fresh_fake.run(cheap_jobs("hung", 64), "hung-primary", timeout=120)

    # Then every job is answered by the backup
    assert result["err"] == [] and len(result["out"]) == 64
    assert {line["turnout"]["deployment"] for line in result["out"]} == {"cheap-backup"}
    # And after the first micro-batch's calls timed out, the hung primary was probed with one
    # call at a time: not sent a micro-batch's calls each time its cooldown ended
    assert fresh_fake.fake_stats()["by_model"].get("fake-cheap", 0) <= 8 + 6


def test_a_prompt_too_long_for_the_cheap_tier_moves_up_a_tier(fresh_fake: Cluster) -> None:
    # Given the cheap models have a small context window and the frontier ones a large one
    fresh_fake.fake(context_limit={"fake-cheap": 30, "fake-cheap-backup": 30})

    # When a long prompt is routed to the cheap tier
    long_prompt = "Summarise this: " + "the quick brown fox jumps over the lazy dog " * 20
    result = fresh_fake.run(cheap_jobs("ctx", 2, long_prompt) + cheap_jobs("short", 2, "Hi"), "context")

    # Then the long ones are answered by the frontier tier and the short ones by the cheap tier
    tiers = {line["custom_id"]: line["turnout"]["tier"] for line in result["out"]}
    assert result["err"] == []
    assert tiers == {"ctx0": "frontier", "ctx1": "frontier", "short0": "cheap", "short1": "cheap"}


def test_random_failures_are_retried_until_every_job_is_answered(fresh_fake: Cluster) -> None:
    # Given a provider that fails a quarter of all requests with 429, 500 or 503
    fresh_fake.fake(error_rate=0.25, retry_after_s=1)

    # When a batch runs
    result = fresh_fake.run(cheap_jobs("flaky", 40), "flaky", timeout=120)

    # Then every job is answered exactly once, some of them after a fallback or a retry
    ids = [line["custom_id"] for line in result["out"]]
    assert result["err"] == [] and sorted(ids) == sorted(f"flaky{i}" for i in range(40))
    assert any(line["turnout"]["fallbacks"] or line["turnout"]["attempts"] > 1 for line in result["out"])


def test_dead_letters_are_replayed_into_a_whole_output(fresh_fake: Cluster, tmp_path: Any) -> None:
    # Given every deployment of the frontier tier (which waits out no outage: max_waits 0) is
    # down for the whole of a batch
    fresh_fake.fake(fail_models={"fake-frontier": 503, "fake-frontier-backup": 503})
    jobs = [{"custom_id": f"dlq{i}", "prompt": f"{EASY} ({i})", "model": "tier:frontier"} for i in range(5)]
    result = fresh_fake.run(jobs, "outage", timeout=120)
    # Then its jobs land in errors and the dead-letter queue after the tier's attempts
    assert result["out"] == [] and len(result["err"]) == 5
    assert {line["turnout"]["attempts"] for line in result["err"]} == {3}
    letters = DeadLetters(fresh_fake.client.ledger.redis)
    assert len(list(letters.entries(["frontier"], "outage"))) == 5

    # When the provider comes back (slowly) and the dead letters are replayed
    fresh_fake.fake(fail_models={}, latency_ms=500)
    assert replay(fresh_fake.client.app, fresh_fake.config, letters, ["frontier"], "outage", None) == 5

    # Then the batch counts their lines as not done until they are answered: waiting for it
    # waits for the answers
    status = fresh_fake.client.wait("outage", timeout=60)
    assert status.complete and status.failed == 0 and list(fresh_fake.client.ledger.error_lines("outage")) == []
    assert status.tiers["frontier"].failed == 0 and status.tiers["frontier"].jobs == 5

    # Then collect writes every job to the output and none to the errors
    env_config = ["-c", str(fresh_fake.config_path)]
    collected = subprocess.run(
        [sys.executable, "-m", "workers.cli", "collect", "outage", "-o", str(tmp_path), *env_config],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, TURNOUT_REDIS_URL=fresh_fake.redis_url),
    )  # fmt: skip
    assert collected.returncode == 0, collected.stderr
    output = [json.loads(x) for x in (tmp_path / "output.jsonl").read_text().splitlines()]
    assert sorted(line["custom_id"] for line in output) == sorted(f"dlq{i}" for i in range(5))
    assert (tmp_path / "errors.jsonl").read_text() == ""
    assert list(letters.entries(["frontier"], "outage")) == []



def test_a_batch_past_its_cost_cap_calls_nothing_more_and_its_other_lines_replay_under_a_higher_cap(fresh_fake: Cluster) -> None:
    # Given a batch capped at a tiny cost, which the first answers recorded reach
    ledger = fresh_fake.client.ledger
    lines = [{"custom_id": f"cap{i}", "prompt": f"What is {i} + {i}?"} for i in range(200)]
    fresh_fake.client.submit([json.dumps(line) for line in lines], "capped", max_cost=1e-9)
    fresh_fake.client.wait("capped", timeout=120)
    result = {"out": [json.loads(v) for v in ledger.lines("capped", "out")], "err": [json.loads(v) for v in ledger.error_lines("capped")]}

    # Then every line ends once: the micro-batches begun before any answer was recorded are
    # answered (one a pool process at most), and the rest end uncalled as budget_spent lines
    ids = sorted(line["custom_id"] for line in lines)
    assert sorted(line["custom_id"] for line in result["out"] + result["err"]) == ids
    most = sum(tier.processes * tier.batch_size for tier in fresh_fake.config.tiers)
    assert 0 < len(result["out"]) <= most
    assert {line["error"]["code"] for line in result["err"]} == {"budget_spent"}
    assert {line["turnout"]["attempts"] for line in result["err"]} == {0}  # no call was made for them
    assert "of its $0.0000 cap (--max-cost)" in result["err"][0]["error"]["message"]
    letters = DeadLetters(ledger.redis)
    tiers = [tier.name for tier in fresh_fake.config.tiers]
    assert len(list(letters.entries(tiers, "capped"))) == len(result["err"])

    # When they are replayed under the cap they spent, the replay says so, and they end as they did
    replay_command = [sys.executable, "-m", "workers.cli", "dlq", "replay", "--batch", "capped", "-c", str(fresh_fake.config_path)]
    env = dict(os.environ, TURNOUT_REDIS_URL=fresh_fake.redis_url)
    again = subprocess.run(replay_command, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0, again.stderr
    assert "which its $0.0000 cap does not exceed" in " ".join(again.stderr.split())
    status = fresh_fake.client.wait("capped", timeout=120)
    assert status.failed == len(result["err"]) and len(list(letters.entries(tiers, "capped"))) == len(result["err"])

    # When they are replayed under a higher cap
    replayed = subprocess.run([*replay_command, "--max-cost", "5"], capture_output=True, text=True, timeout=120, env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert "does not exceed" not in replayed.stderr

    # Then every line is answered, once, and the batch keeps its new cap
    status = fresh_fake.client.wait("capped", timeout=120)
    assert status.complete and status.failed == 0 and status.max_cost_usd == 5.0
    assert sorted(json.loads(v)["custom_id"] for v in ledger.lines("capped", "out")) == ids
    assert list(letters.entries(tiers, "capped")) == []


def test_a_rate_limit_holds_across_worker_processes_and_the_rest_spills_to_the_backup(fresh_fake: Cluster) -> None:
    # Given the frontier primary allows 30 requests a minute (config rpm and the provider's own
    # limit alike), and the frontier pool runs two worker processes
    fresh_fake.fake(rate_limit_rpm={"fake-frontier": 30})

    # When 60 frontier jobs run at once
    lines = [{"custom_id": f"rl{i}", "prompt": f"Prove {i} is a number.", "model": "tier:frontier"} for i in range(60)]
    result = fresh_fake.run(lines, "rate-limited", timeout=120)

    # Then every job is answered, and the provider never saw more than its limit
    assert result["err"] == [] and len(result["out"]) == 60
    stats = fresh_fake.fake_stats()
    assert stats["max_rpm_seen_by_model"]["fake-frontier"] <= 30
    assert stats["by_status"].get("429", 0) == 0
    by_deployment = {line["turnout"]["deployment"] for line in result["out"]}
    assert by_deployment == {"frontier-primary", "frontier-backup"}


def test_half_a_surrogate_pair_in_an_answer_or_a_prompt_ends_as_one_line_not_a_stall(fresh_fake: Cluster) -> None:
    # Given a model whose answer to one prompt ends in half a UTF-16 surrogate pair (a JSON
    # escape UTF-8 cannot encode), and an input line whose prompt holds one
    fresh_fake.fake(broken_unicode_on=["EMOJI"])
    lines: list[Any] = [{"custom_id": f"u{i}", "prompt": f"What is {i}?", "model": "tier:cheap"} for i in range(4)]
    lines[1]["prompt"] = "Draw an EMOJI"
    lines.append('{"custom_id": "bad", "prompt": "a broken \\ud83d escape", "model": "tier:cheap"}')
    try:
        result = fresh_fake.run(lines, "surrogates", timeout=60)
    finally:
        fresh_fake.fake(broken_unicode_on=[])

    # Then the answer is recorded once, the half pair replaced by U+FFFD, and the batch completes
    answers = {line["custom_id"]: line for line in result["out"]}
    assert sorted(answers) == ["u0", "u1", "u2", "u3"]
    assert answers["u1"]["response"]["body"]["choices"][0]["message"]["content"].endswith("\ufffd")
    # And the bad input line is one error line naming what is wrong
    assert [(e["custom_id"], e["error"]["code"]) for e in result["err"]] == [("bad", "invalid_unicode")]
    assert "\\ud83d" in result["err"][0]["error"]["message"]
    assert fresh_fake.fake_stats()["by_status"].get("200") == 4  # each answer paid once


def test_a_task_that_fails_to_record_its_answers_is_delivered_again_not_dropped(fresh_fake: Cluster) -> None:
    # Given a cheap micro-batch whose calls take 2 s
    fresh_fake.fake(latency_ms=2000)
    ids = [f"m{i}" for i in range(8)]
    lines = [{"custom_id": i, "prompt": f"What is {i}?", "model": "tier:cheap"} for i in ids]
    server = redis.Redis.from_url(fresh_fake.redis_url)
    out_key = "turnout:batch:refused:out"

    # When recording its answers fails (the batch's answers hash is, for a moment, a string:
    # the ledger's script raises) and then works again
    def break_recording_for_a_moment() -> None:
        deadline = time.monotonic() + 30
        while fresh_fake.fake_stats()["in_flight"] < 8:
            assert time.monotonic() < deadline, "the calls never went out"
            time.sleep(0.02)
        server.set(out_key, "not a hash")
        try:
            while fresh_fake.fake_stats()["in_flight"] > 0:
                time.sleep(0.02)
            time.sleep(0.5)  # the task has tried to record, and raised
        finally:
            server.delete(out_key)

    result = run_while(fresh_fake, lines, "refused", break_recording_for_a_moment)

    # Then the task was delivered again (Celery alone would have dropped it) and the batch is
    # whole, nothing doubled
    assert_ledger_whole(fresh_fake, result, ids, "refused")
