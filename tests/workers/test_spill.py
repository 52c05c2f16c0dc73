"""Spilling a running batch's output lines to a file: Redis keeps a marker, nothing is lost
or written twice, and the collector reads the lines back (real Redis)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import redis

from schemas.errors import TurnoutError
from schemas.result import ResultLine, TurnoutInfo, error_line
from workers import collector
from workers.collector import collect, follow, output_lines, spill
from workers.ledger import BatchKeys, Ledger


def ok_line(custom_id: str, text: str = "an answer") -> ResultLine:
    body = {"choices": [{"message": {"content": text}}]}
    return ResultLine.model_validate(
        {"id": "x", "custom_id": custom_id, "response": {"status_code": 200, "request_id": "r", "body": body},
         "turnout": TurnoutInfo(tier="cheap", cost_usd=0.001).model_dump()}
    )  # fmt: skip


@pytest.fixture
def batch(redis_client: redis.Redis) -> tuple[Ledger, str]:
    ledger, batch_id = Ledger(redis_client), uuid.uuid4().hex
    ledger.open_batch(batch_id)
    return ledger, batch_id


def record(ledger: Ledger, batch_id: str, ids: list[str], text: str = "an answer", claim: bool = True) -> None:
    """Answers for ``ids``, claimed first by made-up input lines as a submit claims them
    (``claim=False``: recorded without a claim, as a line with no id entry would be)."""
    if claim:
        taken = sum(map(ledger.redis.hlen, ledger.id_keys(batch_id)))
        ledger.claim_ids(batch_id, [(custom_id, taken + n) for n, custom_id in enumerate(ids, start=1)])
    ledger.record_ok_many(batch_id, [(i, ok_line(i, text), 0.01) for i in ids])


def ids_in(path: Path) -> list[str]:
    return [json.loads(line)["custom_id"] for line in path.read_bytes().splitlines()]


def test_spilled_lines_leave_redis_for_the_file_and_stay_answered(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    # Given five answers and one error recorded
    ledger, batch_id = batch
    record(ledger, batch_id, [f"a{i}" for i in range(5)])
    ledger.record_error(batch_id, "bad", error_line(batch_id, "bad", "boom", "it failed"))

    # When they are spilled
    path = tmp_path / "spill.jsonl"
    assert spill(ledger, batch_id, path) == 5

    # Then the file holds the five answers, Redis only a done mark on their ids, and the error stays
    assert ids_in(path) == [f"a{i}" for i in range(5)]
    assert ledger.redis.hlen(BatchKeys(batch_id).out) == 0
    assert all(v is not None and v.endswith(b"!") for v in ledger.owners(batch_id, [f"a{i}" for i in range(5)]))
    assert [json.loads(v)["custom_id"] for v in ledger.error_lines(batch_id)] == ["bad"]
    # And a re-delivered job is still skipped, and records nothing
    assert ledger.answered(batch_id, ["a0", "a9"]) == [True, False]
    assert ledger.record_ok(batch_id, "a0", ok_line("a0"), 0.01) is False
    # And a second spill finds nothing new
    assert spill(ledger, batch_id, path) == 0 and len(ids_in(path)) == 5


def test_a_crash_between_writing_and_committing_writes_no_line_twice(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    # Given a spill of two lines, then a spiller that died after appending but before committing
    ledger, batch_id = batch
    path = tmp_path / "spill.jsonl"
    record(ledger, batch_id, ["a", "b"])
    spill(ledger, batch_id, path)
    record(ledger, batch_id, ["c"])
    with open(path, "ab") as handle:
        handle.write(ledger.redis.hget(BatchKeys(batch_id).out, "c") + b"\n" + b'{"custom_id": "half')

    # When the next spill runs
    record(ledger, batch_id, ["d"])
    assert spill(ledger, batch_id, path) == 2

    # Then the file holds each line once, the torn tail cut off
    assert ids_in(path) == ["a", "b", "c", "d"]


def test_answers_behind_many_errors_are_still_spilled(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    ledger, batch_id = batch
    for i in range(7):
        ledger.record_error(batch_id, f"e{i}", error_line(batch_id, f"e{i}", "boom", "it failed"))
    record(ledger, batch_id, ["late"])
    assert spill(ledger, batch_id, tmp_path / "spill.jsonl", per_round=3) == 1
    assert ids_in(tmp_path / "spill.jsonl") == ["late"]


def test_collect_reads_spilled_and_unspilled_lines_alike(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    # Given a batch whose first answers were spilled and the rest not yet
    ledger, batch_id = batch
    record(ledger, batch_id, ["a", "b"])
    spill(ledger, batch_id, tmp_path / "spill.jsonl")
    record(ledger, batch_id, ["c"])
    ledger.seal(batch_id, 3)

    # Then the collected output holds all three, once each
    report = collect(ledger, batch_id, tmp_path / "out")
    assert report.output_lines == 3
    assert sorted(ids_in(tmp_path / "out" / "output.jsonl")) == ["a", "b", "c"]


def test_a_spill_file_missing_here_is_a_clear_error(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    ledger, batch_id = batch
    record(ledger, batch_id, ["a"])
    spill(ledger, batch_id, tmp_path / "spill.jsonl")
    (tmp_path / "spill.jsonl").unlink()
    with pytest.raises(TurnoutError, match="cannot be read here"):
        list(output_lines(ledger, batch_id))
    with pytest.raises(TurnoutError, match="cannot be read here"):
        collect(ledger, batch_id, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # no half-written output.jsonl.tmp left behind
    # And a spill here (a collector on another machine) says where the file is, and makes none
    record(ledger, batch_id, ["b"])
    with pytest.raises(TurnoutError, match="which is not on this machine"):
        spill(ledger, batch_id, tmp_path / "elsewhere.jsonl")
    assert not (tmp_path / "spill.jsonl").exists() and not (tmp_path / "elsewhere.jsonl").exists()


def test_spilling_frees_most_of_redis_memory_for_finished_lines(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    # Given 2,000 answers of about 1 KB
    ledger, batch_id = batch
    ids = [f"job-{i:06d}" for i in range(2000)]
    for start in range(0, len(ids), 200):
        record(ledger, batch_id, ids[start : start + 200], text="x" * 900)
    before = ledger.redis.memory_usage(BatchKeys(batch_id).out, samples=0)

    # When they are spilled, then Redis holds under a tenth of what it did for them
    spill(ledger, batch_id, tmp_path / "spill.jsonl")
    after = ledger.redis.memory_usage(BatchKeys(batch_id).out, samples=0) or 0  # None: nothing left
    print(f"out hash: {before / len(ids):.0f} B per line before the spill, {after / len(ids):.0f} B after")
    assert before > 2_000_000 and after < before / 10


def test_a_spill_file_cut_short_stops_the_next_spill_instead_of_padding_it(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    ledger, batch_id = batch
    path = tmp_path / "spill.jsonl"
    record(ledger, batch_id, ["a", "b"])
    spill(ledger, batch_id, path)
    path.write_bytes(b"")  # someone emptied it
    record(ledger, batch_id, ["c"])
    with pytest.raises(TurnoutError, match="were spilled to it"):
        spill(ledger, batch_id, path)
    assert path.read_bytes() == b""


def test_a_spiller_that_lost_its_lease_commits_nothing_and_writes_no_line_twice(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    # Given a spiller whose lease another spiller took while it stalled, after writing its lines
    ledger, batch_id = batch
    path = tmp_path / "spill.jsonl"
    record(ledger, batch_id, ["a0", "a1", "a2"])
    _, size, cursor = ledger.spill_state(batch_id)
    last, lines = ledger.unspilled(batch_id, cursor, 100)
    assert ledger.spill_lock(batch_id, "stalled")
    ledger.redis.delete(BatchKeys(batch_id).key("spill-lock"))  # its lease ran out
    assert spill(ledger, batch_id, path) == 3  # the other spiller did the work

    # When the stalled one wakes up and commits what it read
    committed = ledger.commit_spill(batch_id, "stalled", size, last or "", 999, str(path), [k for k, _ in lines])

    # Then its commit is refused, and the file holds each line once
    assert committed == -1
    assert ids_in(path) == ["a0", "a1", "a2"]
    assert [json.loads(line)["custom_id"] for line in output_lines(ledger, batch_id)] == ["a0", "a1", "a2"]


def test_a_spill_file_cut_mid_line_is_an_error_not_half_a_line(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    ledger, batch_id = batch
    path = tmp_path / "spill.jsonl"
    record(ledger, batch_id, ["a", "b"])
    spill(ledger, batch_id, path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(TurnoutError, match="holds less than"):
        list(output_lines(ledger, batch_id))


def test_reading_the_output_waits_for_a_spill_round_in_progress(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    # Given another process in the middle of a spill round (holding the lease)
    ledger, batch_id = batch
    record(ledger, batch_id, ["a"])
    assert ledger.spill_lock(batch_id, "busy", ttl_ms=300)

    # Then reading the output waits for it rather than reading Redis and the file out of step
    started = time.monotonic()
    assert len(list(output_lines(ledger, batch_id))) == 1
    assert time.monotonic() - started >= 0.2


def test_following_a_batch_reads_spilled_lines_back_in_order_while_spills_go_on(
    batch: tuple[Ledger, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch whose first answers are spilled before anyone follows it, with an error
    # between them and a torn tail past the file's committed size (a spiller that died)
    ledger, batch_id = batch
    path = tmp_path / "spill.jsonl"
    record(ledger, batch_id, ["a0", "a1"])
    ledger.record_error(batch_id, "bad", error_line(batch_id, "bad", "boom", "it failed"))
    record(ledger, batch_id, ["a2"])
    spill(ledger, batch_id, path)
    with open(path, "ab") as handle:
        handle.write(b'{"custom_id": "torn')
    record(ledger, batch_id, ["a3", "a4"])
    ledger.seal(batch_id, 8)

    # When it is followed, with a spill between every two lines it reads
    from_file: list[int] = []
    read_line = collector._SpillReader.line
    monkeypatch.setattr(collector._SpillReader, "line", lambda self, n: from_file.append(n) or read_line(self, n))
    lines = follow(ledger, batch_id)
    seen = [json.loads(next(lines))["custom_id"] for _ in range(4)]
    spill(ledger, batch_id, path)  # a3, a4 move to the file after they were recorded
    record(ledger, batch_id, ["a5", "a6"])
    seen.append(json.loads(next(lines))["custom_id"])
    spill(ledger, batch_id, path)
    seen += [json.loads(line)["custom_id"] for line in lines]

    # Then every line comes once, in the order it was recorded, none from the torn tail
    assert seen == ["a0", "a1", "bad", "a2", "a3", "a4", "a5", "a6"]
    # And the answers spilled before they were read came from the file, by their number among
    # answers: a0-a2, and a5, a6; a3 and a4 were read from Redis with the first events, before
    # their spill
    assert from_file == [0, 1, 2, 5, 6]


def test_following_a_deleted_batch_stops_with_an_error(batch: tuple[Ledger, str]) -> None:
    ledger, batch_id = batch
    record(ledger, batch_id, ["a0"])
    lines = follow(ledger, batch_id)
    assert json.loads(next(lines))["custom_id"] == "a0"
    ledger.delete(batch_id)
    with pytest.raises(TurnoutError, match="deleted .*or Redis restarted without persistence"):
        next(lines)



def test_following_stops_with_an_error_when_the_batch_is_deleted_and_submitted_again(batch: tuple[Ledger, str]) -> None:
    ledger, batch_id = batch
    record(ledger, batch_id, ["old0", "old1"])
    lines = follow(ledger, batch_id)
    assert json.loads(next(lines))["custom_id"] == "old0"
    ledger.delete(batch_id)
    time.sleep(0.01)  # a new started_at
    ledger.open_batch(batch_id)
    record(ledger, batch_id, ["new0"])
    rest: list[str] = []
    with pytest.raises(TurnoutError, match="deleted"):
        for line in lines:
            rest.append(json.loads(line)["custom_id"])
    assert rest == ["old1"]  # read with old0's events, before the delete; the new batch's new0 never comes


def test_a_spiller_stalled_in_the_file_keeps_any_other_from_committing(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    # Given a spilled line, and a spiller that still holds the file (it stalled past its lease)
    import fcntl

    ledger, batch_id = batch
    path = tmp_path / "spill.jsonl"
    record(ledger, batch_id, ["a0"])
    spill(ledger, batch_id, path)
    record(ledger, batch_id, ["a1"])
    with open(path, "ab") as stalled:
        fcntl.flock(stalled.fileno(), fcntl.LOCK_EX)
        # When another spill runs, it moves nothing and leaves the committed bytes alone
        assert spill(ledger, batch_id, path) == 0
        assert ledger.spill_state(batch_id)[1] == path.stat().st_size
    # Then once the stalled one lets go, the next spill goes on where the file was committed
    assert spill(ledger, batch_id, path) == 1
    assert ids_in(path) == ["a0", "a1"]


def test_a_batch_submitted_again_after_delete_spills_beside_the_file_delete_kept(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    ledger, batch_id = batch
    path = tmp_path / "spill.jsonl"
    record(ledger, batch_id, ["old"])
    spill(ledger, batch_id, path)
    ledger.delete(batch_id)
    ledger.open_batch(batch_id)
    record(ledger, batch_id, ["new"])
    assert spill(ledger, batch_id, path) == 1
    assert ids_in(path) == ["old"]  # the deleted batch's answers, kept
    assert ids_in(tmp_path / "spill.jsonl.2") == ["new"]
    assert [json.loads(line)["custom_id"] for line in output_lines(ledger, batch_id)] == ["new"]


def test_a_spilled_answer_leaves_only_a_mark_on_its_id_and_its_job_stays_done(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    # Given three jobs claimed by their input lines, answered, and spilled
    ledger, batch_id = batch
    ids = ["a", "b", "c"]
    ledger.claim_ids(batch_id, [(custom_id, line) for line, custom_id in enumerate(ids, start=1)])
    record(ledger, batch_id, ids, claim=False)
    ledger.seal(batch_id, 3)
    assert spill(ledger, batch_id, tmp_path / "spill.jsonl") == 3

    # Then Redis keeps no answer and no marker for them, only a "!" on each id's line
    keys = BatchKeys(batch_id)
    assert ledger.redis.hlen(keys.out) == 0
    assert ledger.owners(batch_id, ids) == [b"1!", b"2!", b"3!"]
    # And the jobs stay done: a re-delivery is skipped and records nothing, not even an error
    assert ledger.answered(batch_id, ["a", "z"]) == [True, False]
    assert ledger.record_ok(batch_id, "a", ok_line("a"), 0.01) is False
    assert ledger.record_error(batch_id, "b", error_line(batch_id, "b", "boom", "late failure")) is False
    assert list(ledger.error_lines(batch_id)) == []
    # And submitting the same file again claims the same lines without a conflict
    assert ledger.claim_ids(batch_id, [("a", 1), ("b", 2), ("c", 9)]) == [1, 2, 3]
    # And the output and a follower read every answer back from the file, once
    assert sorted(json.loads(line)["custom_id"] for line in output_lines(ledger, batch_id)) == ids
    assert [json.loads(line)["custom_id"] for line in follow(ledger, batch_id)] == ids
    status = ledger.status(batch_id)
    assert status is not None and status.done == 3 and status.failed == 0


def test_an_answer_recorded_without_an_id_claim_keeps_an_empty_marker_when_spilled(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    ledger, batch_id = batch
    record(ledger, batch_id, ["x"], claim=False)
    assert spill(ledger, batch_id, tmp_path / "spill.jsonl") == 1
    assert ledger.redis.hget(BatchKeys(batch_id).out, "x") == b""
    assert ledger.answered(batch_id, ["x"]) == [True] and ledger.record_ok(batch_id, "x", ok_line("x"), 0.01) is False


def test_a_disk_that_fills_mid_spill_commits_nothing_and_loses_no_line(
    batch: tuple[Ledger, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two lines spilled, then three more, and a disk that takes only 40 more bytes (a short
    # write, as os.pwrite makes on a full disk, then ENOSPC)
    import errno
    import os

    ledger, batch_id = batch
    path = tmp_path / "spill.jsonl"
    record(ledger, batch_id, ["a", "b"])
    spill(ledger, batch_id, path)
    size = path.stat().st_size
    record(ledger, batch_id, ["c", "d", "e"])
    room, grew = [40], []
    real_pwrite = os.pwrite

    def full_disk(fd: int, data: bytes, offset: int) -> int:
        if not room[0]:
            grew.append(os.fstat(fd).st_size)
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = min(room[0], len(data))
        room[0] -= taken
        return real_pwrite(fd, data[:taken], offset)

    monkeypatch.setattr(collector.os, "pwrite", full_disk)

    # When the spill runs, it stops with one sentence saying nothing is lost
    with pytest.raises(TurnoutError, match="No space left on device; nothing is lost"):
        spill(ledger, batch_id, path)

    # Then the file is as before (the 40 bytes of a partial line, written, are cut), the three lines still in Redis
    assert grew == [size + 40]
    assert path.stat().st_size == size and ids_in(path) == ["a", "b"]
    assert ledger.redis.hlen(BatchKeys(batch_id).out) == 3
    # And with room again, the next spill moves them, each once
    monkeypatch.undo()
    assert spill(ledger, batch_id, path) == 3 and ids_in(path) == ["a", "b", "c", "d", "e"]


def test_a_full_output_disk_names_the_file_and_releases_the_spill_lease_at_once(
    batch: tuple[Ledger, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch with answers, collected onto a disk that fills after the first line
    import errno
    import io

    ledger, batch_id = batch
    record(ledger, batch_id, ["a", "b", "c"])

    class FullDisk(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            if self.tell() > 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    monkeypatch.setattr(collector, "open", lambda *args, **kwargs: FullDisk(), raising=False)

    # When the output is written, it stops with one sentence naming the file
    with pytest.raises(TurnoutError, match=r"cannot write .*output.jsonl: No space left on device; the batch's lines are safe"):
        collect(ledger, batch_id, tmp_path)

    # Then the spill lease the reading held is released now, not when the reader is collected
    # later (by then `turnout run` may have stopped its Redis): a spill can run at once
    assert ledger.redis.get(BatchKeys(batch_id).key("spill-lock")) is None
    assert spill(ledger, batch_id, tmp_path / "spill.jsonl") == 3


def test_a_spill_with_nothing_to_move_makes_no_file(batch: tuple[Ledger, str], tmp_path: Path) -> None:
    ledger, batch_id = batch
    path = tmp_path / "spill.jsonl"
    assert spill(ledger, batch_id, path) == 0 and not path.exists()  # an empty file would outlive a short batch
    record(ledger, batch_id, ["a"])
    assert spill(ledger, batch_id, path) == 1 and ids_in(path) == ["a"]
