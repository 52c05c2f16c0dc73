"""The ledger records each line once, whatever runs twice (real Redis)."""

from __future__ import annotations

import uuid

import redis

from schemas.result import ResultLine, TurnoutInfo, error_line
from workers.ledger import BatchKeys, Ledger


def ok_line(custom_id: str, cost: float) -> ResultLine:
    return ResultLine(id="x", custom_id=custom_id, turnout=TurnoutInfo(tier="cheap", cost_usd=cost))


def test_a_success_recorded_twice_counts_once(redis_client: redis.Redis) -> None:
    # Given a batch
    ledger, batch = Ledger(redis_client), uuid.uuid4().hex
    ledger.open_batch(batch)

    # When the same job's success is recorded twice (a re-delivered task)
    first = ledger.record_ok(batch, "a", ok_line("a", 0.5), frontier_cost=2.0)
    second = ledger.record_ok(batch, "a", ok_line("a", 0.5), frontier_cost=2.0)

    # Then the first write wins and the counters moved once
    status = ledger.status(batch)
    assert (first, second) == (True, False)
    assert status is not None and status.done == 1 and status.cost_usd == 0.5 and status.frontier_cost_usd == 2.0
    assert status.tiers["cheap"].jobs == 1


def test_an_error_after_a_success_is_ignored_and_a_success_replaces_an_error(redis_client: redis.Redis) -> None:
    ledger, batch = Ledger(redis_client), uuid.uuid4().hex
    ledger.open_batch(batch)

    # Given one job that succeeded and one that failed
    ledger.record_ok(batch, "a", ok_line("a", 0.1), 0.0)
    ledger.record_error(batch, "b", error_line(batch, "b", "boom", "it failed"))

    # When a late error arrives for the first, and a replay succeeds for the second
    assert ledger.record_error(batch, "a", error_line(batch, "a", "late", "too late")) is False
    assert ledger.record_ok(batch, "b", ok_line("b", 0.2), 0.0) is True

    # Then both have exactly one output line and no error line
    status = ledger.status(batch)
    assert status is not None and status.done == 2 and status.failed == 0
    assert sorted(ResultLine.model_validate_json(v).custom_id for v in ledger.lines(batch, "out")) == ["a", "b"]
    assert list(ledger.error_lines(batch)) == []


def test_a_batch_is_complete_when_sealed_and_every_line_is_recorded(redis_client: redis.Redis) -> None:
    ledger, batch = Ledger(redis_client), uuid.uuid4().hex
    ledger.open_batch(batch)
    ledger.progress(batch, submitted=2, enqueued_line=2)
    ledger.record_ok(batch, "a", ok_line("a", 0.0), 0.0)
    ledger.record_ok(batch, "b", ok_line("b", 0.0), 0.0)
    assert not ledger.status(batch).complete  # type: ignore[union-attr]
    ledger.seal(batch, 2)
    assert ledger.status(batch).complete  # type: ignore[union-attr]


def test_claiming_ids_reports_the_line_that_owns_each(redis_client: redis.Redis) -> None:
    ledger, batch = Ledger(redis_client), uuid.uuid4().hex
    assert ledger.claim_ids(batch, [("a", 1), ("b", 2)]) == [1, 2]
    # a resumed submit re-claims its own lines; a duplicate id sees the first owner
    assert ledger.claim_ids(batch, [("a", 1), ("b", 9)]) == [1, 2]


def test_a_deleted_batch_frees_its_keys_and_a_late_redelivery_records_nothing(redis_client: redis.Redis) -> None:
    # Given a batch with one answered job, deleted after collection
    ledger, batch = Ledger(redis_client), uuid.uuid4().hex
    ledger.open_batch(batch)
    ledger.record_ok(batch, "a", ok_line("a", 0.5), frontier_cost=2.0)
    ledger.delete(batch)
    assert redis_client.keys(f"turnout:batch:{batch}:*") == [f"turnout:batch:{batch}:deleted".encode()]
    assert batch not in ledger.batches() and ledger.status(batch) is None

    # When a late re-delivery of its jobs arrives, answered or not
    skipped = ledger.answered(batch, ["a", "b"])
    recorded = ledger.record_ok(batch, "b", ok_line("b", 0.5), frontier_cost=2.0)
    errored = ledger.record_error(batch, "c", error_line(batch, "c", "boom", "it failed"))

    # Then it is skipped, and nothing brings the batch back
    assert skipped == [True, True] and (recorded, errored) == (False, False)
    assert redis_client.keys(f"turnout:batch:{batch}:*") == [f"turnout:batch:{batch}:deleted".encode()]
    assert 0 < redis_client.ttl(f"turnout:batch:{batch}:deleted") <= 7 * 86_400

    # And a batch opened again under the same id starts afresh
    ledger.open_batch(batch)
    assert ledger.answered(batch, ["a"]) == [False]
    assert ledger.record_ok(batch, "a", ok_line("a", 0.5), frontier_cost=2.0)


def test_a_batch_remembers_the_config_it_was_first_run_with(redis_client: redis.Redis) -> None:
    ledger, batch = Ledger(redis_client), uuid.uuid4().hex
    assert ledger.first_config(batch, "aaaa") == "aaaa"  # a new batch takes this run's config
    assert ledger.first_config(batch, "aaaa") == "aaaa"  # a rerun under it: the same
    assert ledger.first_config(batch, "bbbb") == "aaaa"  # a rerun under another: the first is kept, to warn by


def test_a_batch_spreads_its_ids_over_small_hashes_sized_by_its_expected_lines(redis_client: redis.Redis) -> None:
    # Given a batch expected to hold 2,000 lines
    ledger, batch = Ledger(redis_client), uuid.uuid4().hex
    ledger.open_batch(batch, expected_lines=2000)

    # When its 2,000 ids are claimed
    assert ledger.claim_ids(batch, [(f"request-{i}", i) for i in range(1, 2001)]) == list(range(1, 2001))

    # Then they sit in 32 hashes of about 64, each kept compact (a listpack; a ziplist before
    # Redis 7), and none in one big hash
    keys = ledger.id_keys(batch)
    sizes = [redis_client.hlen(key) for key in keys]
    assert len(keys) == 32 and sum(sizes) == 2000 and max(sizes) <= 128
    assert {redis_client.object("encoding", key) for key in keys} <= {b"listpack", b"ziplist"}
    assert not redis_client.exists(BatchKeys(batch).ids)
    # And a duplicate id is still found by its first line
    assert ledger.claim_ids(batch, [("request-7", 2001)]) == [7]
    # And deleting the batch takes every bucket with it
    ledger.delete(batch)
    assert redis_client.keys(f"turnout:batch:{batch}:*") == [f"turnout:batch:{batch}:deleted".encode()]


def test_a_batch_begun_with_one_ids_hash_keeps_it_when_resumed(redis_client: redis.Redis) -> None:
    # Given a batch an older version began: ids a and b claimed in its one ids hash, line 2
    # enqueued, no bucket count in its meta
    ledger, batch = Ledger(redis_client), uuid.uuid4().hex
    keys = BatchKeys(batch)
    redis_client.hset(keys.meta, mapping={"started_at": 1.0, "submitted": 2, "enqueued_line": 2, "sealed": 0})
    redis_client.hset(keys.ids, mapping={"a": "1", "b": "2"})

    # When this version resumes it
    ledger.open_batch(batch, expected_lines=10)
    owners = ledger.claim_ids(batch, [("a", 1), ("c", 3), ("b", 4)])

    # Then the old claims hold (b on line 4 is a duplicate) and the new one joins the same hash
    assert owners == [1, 3, 2]
    assert ledger.id_keys(batch) == [keys.ids]
    assert redis_client.hgetall(keys.ids) == {b"a": b"1", b"b": b"2", b"c": b"3"}
    # And a spilled answer's mark there still keeps a re-delivered job from running again
    redis_client.hset(keys.ids, "a", "1!")
    assert ledger.answered(batch, ["a", "c"]) == [True, False]
    assert ledger.record_ok(batch, "a", ok_line("a", 0.5), frontier_cost=1.0) is False


def test_a_batch_an_older_version_claimed_ids_for_keeps_its_one_hash_before_any_progress_mark(redis_client: redis.Redis) -> None:
    # Given a batch an older version began and died in before its first progress mark: ids
    # claimed in its one hash, a's answer already spilled ("!"), nothing marked enqueued
    ledger, batch = Ledger(redis_client), uuid.uuid4().hex
    keys = BatchKeys(batch)
    redis_client.hset(keys.meta, mapping={"started_at": 1.0, "sealed": 0})
    redis_client.hset(keys.ids, mapping={"a": "1!", "b": "2"})

    # When this version resumes it
    ledger.open_batch(batch, expected_lines=2)

    # Then it keeps that hash: a's answer stays done, b stays claimed by its line
    assert ledger.id_keys(batch) == [keys.ids]
    assert ledger.answered(batch, ["a"]) == [True]
    assert ledger.record_ok(batch, "a", ok_line("a", 0.5), frontier_cost=1.0) is False
    assert ledger.claim_ids(batch, [("b", 2), ("c", 3)]) == [2, 3]


def test_a_reopened_error_line_counts_as_not_done_until_its_job_records_again(redis_client: redis.Redis) -> None:
    # Given a sealed batch of two lines: one answered, one dead-lettered as an error
    ledger, batch = Ledger(redis_client), uuid.uuid4().hex
    ledger.open_batch(batch)
    ledger.record_ok(batch, "a", ok_line("a", 0.5), frontier_cost=1.0)
    ledger.record_error(batch, "b", error_line(batch, "b", "boom", "it failed", TurnoutInfo(tier="cheap")))
    ledger.seal(batch, 2)
    assert ledger.status(batch).complete  # type: ignore[union-attr]

    # When b's job is sent again (a replay) and its error line taken back
    assert ledger.reopen(batch, "b", "cheap") is True
    assert ledger.reopen(batch, "b", "cheap") is False  # twice changes nothing more

    # Then the batch waits for it
    status = ledger.status(batch)
    assert status is not None and not status.complete and (status.done, status.failed) == (1, 0)
    assert status.tiers["cheap"].failed == 0
    # And a new error completes it with the line counted once, as an answer would
    ledger.record_error(batch, "b", error_line(batch, "b", "boom", "failed again", TurnoutInfo(tier="cheap")))
    status = ledger.status(batch)
    assert status is not None and status.complete and (status.done, status.failed) == (2, 1)
    assert ledger.reopen(batch, "a", "cheap") is False  # an answered line is never taken back
