"""A batch's progress as plain lines where no progress bar is drawn (CI, nohup, journald)."""

from __future__ import annotations

import time

from schemas.result import BatchStatus
from workers.collector import ProgressLog


def test_progress_lines_say_done_failed_rate_and_time_left_once_the_input_is_read() -> None:
    said: list[str] = []
    log = ProgressLog(said.append, every=0.05)

    # Given a batch still being read, then one fully read
    log(BatchStatus(batch_id="b1", submitted=400, done=100))
    log(BatchStatus(batch_id="b1", submitted=500, done=150))  # too soon: nothing said
    time.sleep(0.06)
    log(BatchStatus(batch_id="b1", submitted=600, done=200, failed=3, cost_usd=0.5))
    time.sleep(0.06)
    log(BatchStatus(batch_id="b1", submitted=600, done=300, failed=4, sealed=True))

    # Then a line every interval: lines done of those read, failures, rate, cost, and the time
    # left only once the total is known
    assert len(said) == 2
    assert said[0].startswith("batch b1: 200 of 600 lines done (3 failed), ") and "$0.5000" in said[0]
    assert said[0].endswith("input still being read") and "left" not in said[0]
    assert said[1].startswith("batch b1: 300 of 600 lines done (4 failed), ") and said[1].endswith("s left")


def test_a_capped_batchs_progress_line_gives_its_spend_against_its_cap() -> None:
    said: list[str] = []
    log = ProgressLog(said.append, every=0.0)
    log(BatchStatus(batch_id="b2", submitted=10, done=1))
    log(BatchStatus(batch_id="b2", submitted=10, done=5, cost_usd=1.25, max_cost_usd=2.0))
    assert "$1.2500 of $2.0000" in said[0]
