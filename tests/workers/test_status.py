"""`turnout status` reads what workers hold from kombu's own records (real Redis, real kombu)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from schemas.config import Config
from schemas.job import Job
from tests.conftest import other_db
from workers.app import create_app
from workers.status import in_flight, quantile
from workers.stragglers import mark_key
from workers.tasks import send_tier

CONFIG = {
    "tiers": [
        {"name": "cheap", "deployments": [{"model": "openai/x"}]},
        {"name": "frontier", "min_score": 0.5, "deployments": [{"model": "openai/y"}]},
    ]
}


@pytest.fixture
def broker(redis_url: str) -> Iterator[str]:
    url = other_db(redis_url, 9)
    redis.Redis.from_url(url).flushdb()
    yield url
    redis.Redis.from_url(url).flushdb()


def jobs(n: int) -> list[Job]:
    return [Job(batch_id="b", custom_id=f"j{i}", line=i + 1, messages=[{"role": "user", "content": "hi"}]) for i in range(n)]


def test_in_flight_counts_jobs_running_and_jobs_waiting_for_a_retry_per_tier(broker: str) -> None:
    # Given a cheap task of 5 jobs and a retry of 3 jobs due in a minute, both taken by a worker
    config = Config.model_validate(CONFIG)
    app = create_app(config, broker)
    cheap = config.tier("cheap")
    send_tier(app, cheap, "b", jobs(5))
    send_tier(app, cheap, "b", jobs(3), countdown=60)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        taken = [channel.basic_get(cheap.queue, no_ack=False) for _ in range(2)]
        assert all(message is not None for message in taken)

        # Then status sees 5 jobs running and 3 waiting on the cheap tier, none on the frontier
        held = in_flight(config, redis.Redis.from_url(broker))
        assert held == {"cheap": {"running": 5, "waiting_retry": 3}, "frontier": {"running": 0, "waiting_retry": 0}}


def test_a_guards_jobs_count_as_in_flight_while_their_calls_are_out(broker: str) -> None:
    # Given two guards on the cheap tier's guard queue, of 2 and 3 jobs handed off and due in
    # 18 s; all but one of the second guard's calls still out; a worker has taken the first
    config = Config.model_validate(CONFIG)
    app = create_app(config, broker)
    cheap = config.tier("cheap")
    client = redis.Redis.from_url(broker)
    first, second = jobs(2), [Job(batch_id="b", custom_id=f"k{i}", line=i + 1, messages=[{"role": "user", "content": "hi"}]) for i in range(3)]
    for job in first:
        client.set(mark_key("b", job.custom_id), "0123456789abcdef")
    for job in second[:2]:  # the third was settled: its mark is gone
        client.set(mark_key("b", job.custom_id), "fedcba9876543210")
    send_tier(app, cheap, "b", first, countdown=18, guard="0123456789abcdef")
    send_tier(app, cheap, "b", second, countdown=18, guard="fedcba9876543210")
    assert client.llen(cheap.queue) == 0, "a guard does not wait behind the tier's backlog"
    with app.connection_for_write() as connection:
        assert connection.default_channel.basic_get(cheap.guard_queue, no_ack=False) is not None

        # Then status counts the four calls still out as running, none as waiting for a retry
        held = in_flight(config, client)
        assert held["cheap"] == {"running": 4, "waiting_retry": 0}

        # And once they are settled, none (a batch done with guards still due shows nothing in flight)
        client.delete(*[mark_key("b", job.custom_id) for job in first + second])
        assert in_flight(config, client)["cheap"] == {"running": 0, "waiting_retry": 0}


def test_latency_quantiles_are_interpolated_within_their_bucket() -> None:
    # Given 100 calls: 50 in (0.1, 0.25], 40 in (0.25, 0.5], 10 past the last bound
    counts = {"0.25": 50.0, "0.5": 40.0, "+Inf": 10.0}
    # Then the median is the top of the first of those buckets, p80 three quarters into the next
    assert quantile(counts, 0.5) == pytest.approx(0.25)
    assert quantile(counts, 0.8) == pytest.approx(0.25 + 0.25 * 30 / 40)
    assert quantile(counts, 0.2) == pytest.approx(0.1 + 0.15 * 20 / 50)
    # And a rank in the open-ended bucket reads as the last finite bound
    assert quantile(counts, 0.95) == 60.0


def test_replayed_dead_letters_go_back_in_the_tiers_micro_batches_and_status_counts_them_right(broker: str) -> None:
    # Given 20 dead letters of one batch on the cheap tier (micro-batches of 8), nothing consuming
    from workers.dlq import DeadLetters, replay
    from workers.scaling import snapshot

    config = Config.model_validate({"tiers": [
        {"name": "cheap", "batch_size": 8, "deployments": [{"model": "openai/x"}]},
        {"name": "frontier", "min_score": 0.5, "deployments": [{"model": "openai/y"}]},
    ]})  # fmt: skip
    app = create_app(config, broker)
    client = redis.Redis.from_url(broker)
    letters = DeadLetters(client)
    for job in jobs(20):
        letters.add("cheap", job, "service_unavailable_error", "down")

    # When they are replayed
    assert replay(app, config, letters, ["cheap", "frontier"], "b", None) == 20

    # Then they wait as 3 messages (8, 8, 4), not 20, and status and scale count 20 jobs queued, not 160
    cheap = config.tier("cheap")
    assert cheap.batch_size == 8 and client.llen(cheap.queue) == 3
    assert snapshot(config, client).queued == {"cheap": 20, "frontier": 0}  # the jobs the messages carry
    assert list(letters.entries(["cheap"], "b")) == []


def test_a_replayed_job_that_fails_again_at_once_keeps_its_new_dead_letter(broker: str) -> None:
    # Given a dead letter, read for a replay
    from workers.dlq import DeadLetters

    letters = DeadLetters(redis.Redis.from_url(broker))
    job = jobs(1)[0]
    letters.add("cheap", job, "bad_request", "first failure")
    [read] = list(letters.entries(["cheap"], "b"))

    # When the job fails again before the replay removes the letter it read
    time.sleep(0.01)
    letters.add("cheap", job, "bad_request", "second failure")

    # Then the new letter stays, and the one read is gone only when nothing replaced it
    assert letters.remove_unchanged(read) is False
    [left] = list(letters.entries(["cheap"], "b"))
    assert left.reason == "second failure"
    assert letters.remove_unchanged(left) is True and list(letters.entries(["cheap"], "b")) == []


def test_status_lists_every_unfinished_batch_and_the_newest_complete_ones(broker: str) -> None:
    # Given an unfinished batch begun first, then 12 complete ones, and a classify task waiting
    from workers.client import Client
    from workers.ledger import Ledger
    from workers.status import SHOWN_BATCHES, view
    from workers.tasks import send_classify

    config = Config.model_validate(CONFIG)
    app = create_app(config, broker)
    client = Client(config, broker, app)
    ledger = Ledger(redis.Redis.from_url(broker))
    ledger.open_batch("old-unfinished")
    ledger.seal("old-unfinished", 5)
    for n in range(12):
        time.sleep(0.002)  # each its own start time
        ledger.open_batch(f"done-{n}")
        ledger.seal(f"done-{n}", 0)
    send_classify(app, "old-unfinished", jobs(3))

    # When status is read
    data = view(client, None, interval=0)

    # Then the unfinished batch is there, with the 10 newest complete ones; 2 are said to be left out
    shown = [b["batch_id"] for b in data["batches"]]
    assert "old-unfinished" in shown and len(shown) == SHOWN_BATCHES + 1 and data["batches_not_shown"] == 2
    assert "done-0" not in shown and "done-11" in shown
    # And the jobs waiting to be classified are counted (as full chunks: an estimate)
    assert data["classify_queued_jobs"] == config.chunk_size


def test_status_and_scale_read_latency_and_arrivals_of_the_last_minutes_not_all_time(broker: str) -> None:
    from workers.metrics import STATS, Stats
    from workers.scaling import snapshot
    from workers.status import _percentiles

    client = redis.Redis.from_url(broker)
    config = Config.model_validate(CONFIG)
    # Given a long history of fast calls (in the all-time counters only, as an hour ago)
    for key, value in {"calls|cheap/0": 1000, "latency_sum|cheap/0": 100.0, "tier_latency_bucket|cheap|0.1": 1000}.items():
        client.hincrbyfloat(STATS, key, value)
    # And now slow ones, and jobs routed to the tier
    stats = Stats(client)
    for _ in range(10):
        stats.observe_latency("cheap", "cheap/0", 20.0)
        stats.add("calls", "cheap/0")
    stats.add("routed", "cheap", by=120)
    stats.flush()

    # Then the latency status and scale use is this minute's, and so are the arrivals
    now = snapshot(config, client)
    assert now.latency["cheap"] == 20.0 and now.latency["frontier"] == 1.0  # none lately: the default
    assert _percentiles(client)["cheap"]["p50"] > 10
    assert now.recent_arrivals["cheap"] > 0 and now.recent_arrivals["frontier"] == 0


def test_recent_rates_span_only_the_minutes_that_have_counts(broker: str) -> None:
    from workers.metrics import Stats, recent_stats

    client = redis.Redis.from_url(broker)
    if time.time() % 60 > 55:  # all in this minute: do not start at its end
        time.sleep(60.1 - time.time() % 60)
    stats = Stats(client)
    stats.add("routed", "cheap", by=30)
    stats.flush()
    counts, span = recent_stats(client)
    # only this minute has counts: the span is the seconds into it, not 2 minutes more
    assert counts["routed|cheap"] == 30 and 0 < span <= 60


def test_a_batchs_rate_is_its_lines_lately_and_its_eta_the_rest_at_that_rate(broker: str) -> None:
    from schemas.result import error_line
    from workers.client import Client
    from workers.ledger import Ledger
    from workers.status import eta_text, view

    config = Config.model_validate(CONFIG)
    client = Client(config, broker, create_app(config, broker))
    ledger = Ledger(redis.Redis.from_url(broker))
    # Given a batch of 100 lines, all read, 30 of them recorded a moment ago; a batch still
    # being read; and a complete one
    for batch, sealed in (("running", 100), ("reading", None), ("finished", 1)):
        ledger.open_batch(batch)
        if sealed is not None:
            ledger.seal(batch, sealed)
    for n in range(30):
        ledger.record_error("running", f"j{n}", error_line("running", f"j{n}", "boom", "failed"))
        ledger.record_error("reading", f"j{n}", error_line("reading", f"j{n}", "boom", "failed"))
    ledger.record_error("finished", "j0", error_line("finished", "j0", "boom", "failed"))

    # When status is read (in one shot: no interval to measure over)
    rows = {b["batch_id"]: b for b in view(client, None, interval=0)["batches"]}

    # Then the running batch's rate is its 30 lines over the time since it began (at least a
    # second), and its ETA the 70 left at that rate
    running = rows["running"]
    assert 5 <= running["throughput_per_s"] <= 30
    assert running["eta_s"] == pytest.approx(70 / running["throughput_per_s"], abs=1)
    # And a batch whose input is not all read has a rate but no ETA; a complete one neither
    assert rows["reading"]["throughput_per_s"] > 0 and rows["reading"]["eta_s"] is None
    assert rows["finished"]["throughput_per_s"] == 0 and rows["finished"]["eta_s"] is None
    assert [eta_text(s) for s in (None, 45, 760, 11_100)] == ["-", "45s", "12m 40s", "3h 05m"]


def test_a_busy_batchs_rate_is_taken_over_its_last_lines(broker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.ledger as ledger_module
    from schemas.result import error_line
    from workers.ledger import Ledger

    ledger = Ledger(redis.Redis.from_url(broker))
    ledger.open_batch("busy")
    started = time.time() - 30  # began half a minute ago
    # Given 20 lines recorded over about two seconds, and a sample of the last 10 lines
    for n in range(20):
        ledger.record_error("busy", f"j{n}", error_line("busy", f"j{n}", "boom", "failed"))
        time.sleep(0.1)
    monkeypatch.setattr(ledger_module, "RATE_SAMPLE", 10)
    # Then the rate is the last 10 lines over their own span (about 1 s: at least 1 s is
    # taken), not 20 lines over the 30 s since the batch began
    assert 5 <= ledger.recent_rate("busy", started) <= 10.5
    # And without the sample cap, it is the lines over the time since the batch began
    monkeypatch.setattr(ledger_module, "RATE_SAMPLE", 5000)
    assert ledger.recent_rate("busy", started) == pytest.approx(20 / 30, rel=0.2)


def test_a_run_is_told_when_every_deployment_of_a_tier_fails_and_when_one_answers_again(broker: str) -> None:
    import asyncio

    from workers.gate import FailedForGood, Gate
    from workers.metrics import STATS
    from workers.status import DownWatch

    config = Config.model_validate(CONFIG)
    cheap, frontier = config.tier("cheap").deployment_name(0), config.tier("frontier").deployment_name(0)
    client = redis.Redis.from_url(broker)
    said: list[str] = []

    async def fail(name: str, times: int, for_good: FailedForGood | None = None) -> None:
        gate = Gate(broker)
        what = f"{for_good.code}: {for_good.message}" if for_good else "connection_error: Connection refused"
        for _ in range(times):
            await gate.admit(name, None, None, 10, probe_s=5)
            await gate.failed(name, None, 30.0, what=what, for_good=for_good)
        await gate.redis.aclose()

    # Given the frontier deployment failed before the run began (an earlier run's failures)
    asyncio.run(fail(frontier, 4))
    watch = DownWatch(config, client, said.append, every_s=0)
    watch.check()
    watch.check()
    # Then that is no news
    assert said == []
    # When the cheap tier's one deployment fails until it cools down
    asyncio.run(fail(cheap, 4))
    watch.check()
    watch.check()
    # Then the run is told once, with the deployment's state and last failure
    assert len(said) == 1 and said[0].startswith("tier cheap: every deployment is failing (")
    assert "cooling down" in said[0] and "connection_error: Connection refused" in said[0]
    # And a cooldown that merely lapses (no call answered) is not a recovery
    client.delete(f"turnout:gate:{cheap}:cooldown", f"turnout:gate:{cheap}:probation")
    watch.check()
    assert len(said) == 1
    # But an answered call is, and the run is told
    client.hincrby(STATS, f"calls|{cheap}", 1)
    watch.check()
    assert len(said) == 2 and said[1] == "tier cheap: answering again"
    # And a deployment failing for good says its lines end as errors, not that they wait
    asyncio.run(fail(cheap, 4, FailedForGood("authentication_error", "bad key", 401)))
    watch.check()
    assert len(said) == 3 and "failing for good" in said[2] and "dlq replay" in said[2] and "wait" not in said[2]

def test_queued_jobs_count_partial_micro_batches_as_what_they_carry(broker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.scaling as scaling
    from workers.scaling import snapshot

    config = Config.model_validate(CONFIG)
    app = create_app(config, broker)
    cheap = config.tier("cheap")
    # Given the cheap queue holds a full micro-batch and three partial ones (a classify chunk's
    # share of a tier is often less than batch_size)
    send_tier(app, cheap, "b", jobs(cheap.batch_size))
    for n in (5, 3, 1):
        send_tier(app, cheap, "b", jobs(n))
    client = redis.Redis.from_url(broker)
    # Then the queued jobs are the jobs those messages carry, not messages × batch_size
    assert snapshot(config, client).queued["cheap"] == cheap.batch_size + 9
    # And past the sample read (the newest messages), the rest count at the sample's mean
    monkeypatch.setattr(scaling, "QUEUE_SAMPLE", 2)
    newest_two = 1 + 3
    assert snapshot(config, client).queued["cheap"] == newest_two + round(2 * newest_two / 2)


def test_a_capped_batch_shows_its_cap_beside_its_cost_and_a_cap_is_checked(broker: str) -> None:
    from rich.console import Console

    from schemas.errors import TurnoutError
    from workers.client import Client
    from workers.status import render, view

    # Given a batch with a spending cap and one without
    config = Config.model_validate(CONFIG)
    client = Client(config, broker, create_app(config, broker))
    for batch in ("capped", "free"):
        client.ledger.open_batch(batch)
        client.ledger.seal(batch, 3)
    client.ledger.set_max_cost("capped", 2.5)

    # When status is read
    data = view(client, None, interval=0)

    # Then the capped one carries its cap, in the JSON and in the table, the other none
    caps = {b["batch_id"]: b["max_cost_usd"] for b in data["batches"]}
    assert caps == {"capped": 2.5, "free": None}
    console = Console(width=200, record=True)
    console.print(render(data))
    rows = {line.split()[0]: line for line in console.export_text().splitlines() if line.strip().startswith(("capped", "free"))}
    assert "$0.0000 of $2.5000" in rows["capped"] and " of $" not in rows["free"]
    # And a cap that caps nothing is refused, leaving the cap as it was
    with pytest.raises(TurnoutError, match="max_cost -1: give the most the batch may spend"):
        client.ledger.set_max_cost("capped", -1)
    assert client.ledger.spending("capped") == (0.0, 2.5)


def test_a_cap_the_batch_has_already_spent_is_set_with_a_warning_saying_what_to_give(broker: str) -> None:
    from workers.ledger import BatchKeys, Ledger

    ledger = Ledger(redis.Redis.from_url(broker))
    ledger.open_batch("spent")
    ledger.redis.hset(BatchKeys("spent").meta, "cost", "1.5")  # as recorded answers leave it
    assert ledger.set_max_cost("spent", 2.0) is None
    warning = ledger.set_max_cost("spent", 1.0)
    assert warning is not None and "has spent $1.5000" in warning and "give a --max-cost above $1.5000" in warning
    assert ledger.spending("spent") == (1.5, 1.0)
