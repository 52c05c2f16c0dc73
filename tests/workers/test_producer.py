"""The producer against a real Redis with no workers: backpressure and resumable submits."""

from __future__ import annotations

from pathlib import Path

import base64
import os
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from schemas.config import Config
from schemas.result import ResultLine, TurnoutInfo
from tests.conftest import other_db
from workers.app import create_app
from workers.ledger import Ledger
from schemas.errors import TurnoutError
from workers.client import Client, estimate_lines
from workers.producer import Producer

CONFIG = {
    "chunk_size": 10,
    "high_water": 50,
    "tiers": [{"name": "cheap", "deployments": [{"model": "openai/x"}]}],
}


@pytest.fixture
def producer(redis_url: str) -> Iterator[Producer]:
    url = other_db(redis_url, 13)
    client = redis.Redis.from_url(url)
    client.flushdb()
    config = Config.model_validate(CONFIG)
    app = create_app(config, url)
    yield Producer(app, config, Ledger(client))
    client.flushdb()


def lines(n: int, start: int = 0) -> Iterator[bytes]:
    for i in range(start, start + n):
        yield json.dumps({"custom_id": f"j{i}", "prompt": f"prompt {i}"}).encode()


def test_the_producer_waits_above_the_high_water_mark_and_goes_on_as_queues_drain(producer: Producer) -> None:
    # Given nothing consumes the queues and the high-water mark is 50 jobs
    done = threading.Event()
    thread = threading.Thread(target=lambda: (producer.submit(lines(300), "bp"), done.set()))

    # When 300 jobs are submitted
    thread.start()
    time.sleep(2.0)

    # Then the producer stops near the mark instead of flooding the broker
    assert not done.is_set()
    assert producer.queued_jobs() <= producer.config.high_water + producer.config.chunk_size * 8
    # And when the queue drains, it goes on to the end
    while not done.is_set():
        producer.ledger.redis.delete("turnout.classify")
        time.sleep(0.1)
    thread.join()
    status = producer.ledger.status("bp")
    assert status is not None and status.sealed and status.submitted == 300


def test_a_chunk_of_long_prompts_is_sent_once_it_reaches_the_byte_cap(producer: Producer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given chunks of 10 jobs but a 2,000-byte cap, and lines of ~530 bytes
    monkeypatch.setattr("workers.producer.CHUNK_BYTES", 2000)
    long_lines = [json.dumps({"custom_id": f"L{i}", "prompt": "x" * 500}).encode() for i in range(10)]

    # When they are submitted
    producer.submit(iter(long_lines), "long")

    # Then each classify task carries the 3 lines that fit under the cap (and the rest), not 10
    sizes = [len(json.loads(base64.b64decode(json.loads(m)["body"]))[0][1])
             for m in producer.ledger.redis.lrange("turnout.classify", 0, -1)]
    assert sorted(sizes) == [1, 3, 3, 3]


def test_a_restarted_submit_enqueues_only_what_is_missing(producer: Producer) -> None:
    # Given a submit that dies after 45 of 100 lines
    def dying() -> Iterator[bytes]:
        yield from lines(45)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        producer.submit(dying(), "resume")
    first = producer.ledger.enqueued_line("resume")
    queued_first = producer.ledger.redis.llen("turnout.classify")

    # When the same file is submitted again under the same batch id
    report = producer.submit(lines(100), "resume")

    # Then it goes on after the last line it knows was enqueued, and nothing is sent twice
    assert 0 < first <= 45 and report.resumed_after == first
    assert report.enqueued == 100 - first
    messages = producer.ledger.redis.lrange("turnout.classify", 0, -1)
    sent = [job["custom_id"] for m in messages for job in task_args(m)[1]]
    assert sorted(sent) == sorted(f"j{i}" for i in range(100))
    assert len(messages) > queued_first


def task_args(message: bytes) -> list[Any]:
    """The positional arguments of a Celery task message as kombu stores it in a Redis list."""
    envelope = json.loads(message)
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return json.loads(body)[0]  # type: ignore[no-any-return]


def test_lines_lost_with_a_killed_worker_are_sent_again(producer: Producer, tmp_path: Path) -> None:
    from workers.collector import spill

    # Given a sealed batch of 30 jobs, of which 10 were answered (5 of them already spilled to
    # a file) and the rest vanished from the queues (a worker killed between Redis's BRPOP and
    # kombu's unacked record)
    producer.submit(lines(30), "lost")
    for i in range(10):
        line = ResultLine(id="x", custom_id=f"j{i}", turnout=TurnoutInfo(tier="cheap"))
        producer.ledger.record_ok("lost", f"j{i}", line, 0.0)
        if i == 4:
            assert spill(producer.ledger, "lost", tmp_path / "spill.jsonl") == 5
    producer.ledger.redis.delete("turnout.classify")

    # When the missing lines are resent from the input
    resent = producer.resend_missing(lines(30), "lost")

    # Then exactly the 20 unanswered jobs are on the queue again
    messages = producer.ledger.redis.lrange("turnout.classify", 0, -1)
    sent = sorted(job["custom_id"] for m in messages for job in task_args(m)[1])
    assert resent == 20 and sent == sorted(f"j{i}" for i in range(10, 30))


def test_line_numbers_count_blank_lines_as_an_editor_does_and_the_batch_counts_records(producer: Producer) -> None:
    # Given a file whose lines 2 and 5 are blank and whose line 4 is not JSON
    good = [json.dumps({"custom_id": f"j{i}", "prompt": f"prompt {i}"}).encode() for i in range(3)]
    file = [good[0], b"\n", good[1], b"{not json\n", b"   \n", good[2]]  # as a file yields them

    report = producer.submit(iter(file), "blanks")

    # Then the bad line's error cites line 4, the jobs carry their own line numbers ...
    errors = [json.loads(line) for line in producer.ledger.error_lines("blanks")]
    assert [(e["turnout"]["line"], e["error"]["message"].split(":")[0]) for e in errors] == [(4, "line 4")]
    messages = producer.ledger.redis.lrange("turnout.classify", 0, -1)
    assert {job["custom_id"]: job["line"] for m in messages for job in task_args(m)[1]} == {"j0": 1, "j1": 3, "j2": 6}
    # ... and the batch holds 4 records: it completes when 4 lines have a result, blank lines none
    status = producer.ledger.status("blanks")
    assert status is not None and status.sealed and status.submitted == 4 and report.lines == 4
    assert producer.ledger.enqueued_line("blanks") == 6


def _file_with_blanks(n: int) -> list[bytes]:
    """n jobs, a blank line after every third one, as a file yields them."""
    out: list[bytes] = []
    for i in range(n):
        out.append(json.dumps({"custom_id": f"j{i}", "prompt": f"prompt {i}"}).encode() + b"\n")
        if i % 3 == 2:
            out.append(b"\n")
    return out


def _sent(producer: Producer) -> dict[str, int]:
    messages = producer.ledger.redis.lrange("turnout.classify", 0, -1)
    sent: dict[str, int] = {}
    for m in messages:
        for job in task_args(m)[1]:
            assert job["custom_id"] not in sent, f"{job['custom_id']} sent twice"
            sent[job["custom_id"]] = job["line"]
    return sent


def test_a_resumed_submit_over_blank_lines_sends_each_job_once_with_its_own_line(producer: Producer) -> None:
    file = _file_with_blanks(40)
    expected = {json.loads(raw)["custom_id"]: n for n, raw in enumerate(file, 1) if raw.strip()}

    def dying() -> Iterator[bytes]:
        yield from file[:25]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        producer.submit(dying(), "resume-blanks")
    report = producer.submit(iter(file), "resume-blanks")
    assert report.resumed_after > 0
    assert _sent(producer) == expected
    assert not list(producer.ledger.error_lines("resume-blanks"))
    status = producer.ledger.status("resume-blanks")
    assert status is not None and status.submitted == 40


def test_resending_lost_lines_over_blank_lines_finds_them_by_their_own_line(producer: Producer) -> None:
    file = _file_with_blanks(30)
    producer.submit(iter(file), "lost-blanks")
    producer.ledger.redis.delete("turnout.classify")
    assert producer.resend_missing(iter(file), "lost-blanks") == 30
    assert sorted(_sent(producer)) == sorted(f"j{i}" for i in range(30))


def test_a_batch_begun_counting_non_blank_lines_only_is_resumed_the_same_way(producer: Producer) -> None:
    # Given a batch an earlier version began over a file with blank lines: it claimed j0..j5 as
    # lines 1..6 (non-blank lines only), marked 6 as enqueued, and left no numbering in its meta
    file = _file_with_blanks(12)
    producer.ledger.open_batch("old")
    producer.ledger.claim_ids("old", [(f"j{i}", i + 1) for i in range(6)])
    producer.ledger.progress("old", submitted=6, enqueued_line=6)

    # When this version resumes it
    producer.submit(iter(file), "old")

    # Then it goes on after the 6th job, in the old numbering, and no job is taken for a duplicate
    assert _sent(producer) == {f"j{i}": i + 1 for i in range(6, 12)}
    assert not list(producer.ledger.error_lines("old"))
    status = producer.ledger.status("old")
    assert status is not None and status.sealed and status.submitted == 12


def test_a_files_lines_are_estimated_from_its_first_part(tmp_path: Path) -> None:
    # Given a file of 5,000 lines of 20 to 200 bytes
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"".join(b"x" * (20 + i % 181) + b"\n" for i in range(5000)))

    # Then the estimate from its whole is exact, and from three windows of 20 KB within 10%
    assert estimate_lines(path) == 5000
    assert abs((estimate_lines(path, sample_bytes=20_000) or 0) - 5000) < 500
    # And a huge first line does not hide the short ones after it
    path.write_bytes(b"x" * 200_000 + b"\n" + b"".join(b"y" * 20 + b"\n" for _ in range(10_000)))
    assert (estimate_lines(path, sample_bytes=20_000) or 0) >= 9_000
    # And an empty file holds none, a file without a last newline counts its last line
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "two.jsonl").write_bytes(b"a\r\nb")
    assert (estimate_lines(tmp_path / "empty.jsonl"), estimate_lines(tmp_path / "two.jsonl")) == (0, 2)


def test_a_fifo_is_not_read_ahead_to_estimate_its_lines(tmp_path: Path) -> None:
    # Given a named pipe: what an estimate read from it would be gone for the producer
    fifo = tmp_path / "jobs.fifo"
    os.mkfifo(fifo)
    # Then no estimate is made (it would block here, or eat the lines, if it read)
    assert estimate_lines(fifo) is None


def test_a_second_producer_of_a_batch_is_refused_while_the_first_submits(producer: Producer) -> None:
    # Given a producer held at the high-water mark in the middle of batch "one"
    first = threading.Thread(target=lambda: producer.submit(lines(300), "one"), daemon=True)
    first.start()
    time.sleep(1.0)

    # When another producer submits the same batch
    other = Producer(producer.app, producer.config, producer.ledger)
    with pytest.raises(TurnoutError, match="being submitted by another producer"):
        other.submit(lines(300), "one")

    # Then the first goes on alone (its queue drained here) and seals the batch at its size
    deadline = time.monotonic() + 30
    while first.is_alive() and time.monotonic() < deadline:
        producer.ledger.redis.delete("turnout.classify")
        time.sleep(0.1)
    status = producer.ledger.status("one")
    assert not first.is_alive() and status is not None and status.sealed and status.submitted == 300


def test_a_batch_id_in_use_for_another_file_is_refused(producer: Producer, redis_url: str, tmp_path: Path) -> None:
    # Given batch "b" submitted from one file
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    one.write_bytes(b"\n".join(lines(5)) + b"\n")
    two.write_bytes(b"\n".join(lines(9, start=100)) + b"\n")
    client = Client(producer.config, other_db(redis_url, 13), producer.app)
    client.submit_report(one, "b")

    # When another file is submitted under the same id
    with pytest.raises(TurnoutError, match=r"was submitted from .*one\.jsonl .* another file"):
        client.submit_report(two, "b")

    # Then the batch is untouched, and the same file again resumes it as before
    status = client.status("b")
    assert (status.submitted, status.sealed) == (5, True)
    assert client.submit_report(one, "b").enqueued == 0


def test_a_batch_is_pending_only_while_its_own_tasks_are_queued_or_held(producer: Producer) -> None:
    # Given a task of batch "busy" queued, none of batch "stalled"
    from schemas.job import Job
    from workers.tasks import send_classify

    send_classify(producer.app, "busy", [Job(batch_id="busy", custom_id="a", line=1, messages=[{"role": "user", "content": "hi"}])])

    # Then "busy" is pending and "stalled" is not: another batch's work does not hold its repair back
    assert producer.batch_pending("busy") and not producer.batch_pending("stalled")

    # And a task a worker holds unacknowledged still counts
    with producer.app.connection_for_write() as connection:
        assert connection.default_channel.basic_get("turnout.classify", no_ack=False) is not None
        assert producer.ledger.redis.llen("turnout.classify") == 0 and producer.batch_pending("busy")


def test_a_task_held_past_the_visibility_timeout_by_a_worker_that_is_gone_is_put_back(producer: Producer) -> None:
    # Given a task delivered and never acknowledged (its worker was killed), and no worker running to restore it
    from schemas.job import Job
    from workers.tasks import send_classify

    send_classify(producer.app, "lost", [Job(batch_id="lost", custom_id="a", line=1, messages=[{"role": "user", "content": "hi"}])])
    redis_client = producer.ledger.redis
    with producer.app.connection_for_write() as connection:  # a worker's connection, never closed cleanly
        assert connection.default_channel.basic_get("turnout.classify", no_ack=False) is not None
        assert redis_client.llen("turnout.classify") == 0 and redis_client.hlen("unacked") == 1

        # When it is not yet past the visibility timeout, nothing moves
        assert producer.restore_lost_deliveries() == 0 and redis_client.hlen("unacked") == 1

        # When it is (its delivery time pushed back past the timeout)
        (tag,) = redis_client.zrange("unacked_index", 0, -1)
        redis_client.zadd("unacked_index", {tag: time.time() - 10 * 3600})
        assert producer.restore_lost_deliveries() == 1

        # Then it is back on its queue, for a pool that scales on the queue's length to wake and run
        assert redis_client.llen("turnout.classify") == 1 and redis_client.hlen("unacked") == 0


def test_a_run_hands_back_tasks_held_by_pools_that_died_with_its_redis_without_waiting(
    producer: Producer, redis_url: str, tmp_path: Path
) -> None:
    # Given a task held (delivered, unacknowledged) moments ago, by an earlier run's pool that is
    # still finishing it (a process group recorded beside its log, alive for 2 more seconds)
    import io
    import subprocess

    from rich.console import Console

    from schemas.job import Job
    from workers.client import Client
    from workers.run import _hand_back_held_tasks
    from workers.tasks import send_classify

    send_classify(producer.app, "cut", [Job(batch_id="cut", custom_id="a", line=1, messages=[{"role": "user", "content": "hi"}])])
    redis_client = producer.ledger.redis
    (tmp_path / "logs").mkdir()
    # the group's leader exits at once and its sleeper is orphaned, as a dead run's pool is (init reaps it)
    leader = subprocess.run(["sh", "-c", "sleep 2 >/dev/null 2>&1 & echo $$"], start_new_session=True, capture_output=True, text=True)
    group = int(leader.stdout)
    (tmp_path / "logs" / "pool-cheap.pgid").write_text(str(group))
    with producer.app.connection_for_write() as connection:
        assert connection.default_channel.basic_get("turnout.classify", no_ack=False) is not None
        client = Client(producer.config, other_db(redis_url, 13), producer.app)  # the producer fixture's database
        console = Console(file=io.StringIO(), width=200)

        # When `turnout run` starts on that Redis
        started = time.monotonic()
        _hand_back_held_tasks(client, tmp_path, console)

        # Then it waits for that pool to end, not the visibility timeout (6 minutes here), then puts the task
        # back on its queue, and says so
        said = console.file.getvalue()  # type: ignore[attr-defined]
        assert 1 < time.monotonic() - started < 60
        assert "waiting for the previous run's pools" in said and "1 tasks that an earlier run's pools held" in said
        assert redis_client.llen("turnout.classify") == 1 and redis_client.hlen("unacked") == 0
