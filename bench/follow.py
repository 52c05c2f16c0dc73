"""Reading a finished batch back: `collect --follow` / `Client.results()` and `collect`'s
error lines, in lines per second.

    .venv/bin/python bench/follow.py [--lines 50000] [--errors 5000] [--redis-url URL] [--json]

Records ``--lines`` answers (and ``--errors`` error lines) straight into the ledger of a
private embedded Redis (or ``--redis-url``, whose database it uses and then cleans up after
itself), then times ``workers.collector.follow`` and ``Ledger.error_lines`` over them. Over
a network each round trip costs more than here, so per-line round trips show there most.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.result import ResultLine, TurnoutInfo, error_line  # noqa: E402
from workers.broker import EmbeddedRedis, connect  # noqa: E402
from workers.collector import follow  # noqa: E402
from workers.ledger import Ledger  # noqa: E402


def fill(ledger: Ledger, batch_id: str, lines: int, errors: int) -> None:
    ledger.open_batch(batch_id, lines + errors)
    ledger.claim_ids(batch_id, [(f"c{i}", i + 1) for i in range(lines + errors)])
    for start in range(0, lines, 1000):
        ledger.record_ok_many(batch_id, [
            (f"c{i}", ResultLine(id=f"r{i}", custom_id=f"c{i}", turnout=TurnoutInfo(tier="cheap", cost_usd=0.001)), 0.0)
            for i in range(start, min(start + 1000, lines))
        ])  # fmt: skip
    for i in range(lines, lines + errors):
        ledger.record_error(batch_id, f"c{i}", error_line(batch_id, f"c{i}", "provider_error", "it failed"))
    ledger.seal(batch_id, lines + errors)


def timed(count: object, runs: int) -> float:
    """Median seconds of ``runs`` calls of ``count``."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        count()  # type: ignore[operator]
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--errors", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--redis-url", help="a Redis to use instead of a private embedded one")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    embedded = None
    if args.redis_url:
        url = args.redis_url
    else:
        embedded = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="turnout-follow-")) / "state")
        url = embedded.start()
    ledger, batch_id = Ledger(connect(url)), "bench-follow"
    try:
        fill(ledger, batch_id, args.lines, args.errors)
        total = args.lines + args.errors
        follow_s = timed(lambda: sum(1 for _ in follow(ledger, batch_id)), args.runs)
        errors_s = timed(lambda: sum(1 for _ in ledger.error_lines(batch_id)), args.runs)
    finally:
        ledger.delete(batch_id)
        if embedded is not None:
            embedded.stop()
    result = {"lines": total, "follow_lines_per_s": total / follow_s, "error_lines_per_s": args.errors / errors_s, "runs": args.runs}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"follow: {total:,} lines in {follow_s:.2f} s, {result['follow_lines_per_s']:,.0f} lines/s; "
              f"error lines: {args.errors:,} in {errors_s:.2f} s, {result['error_lines_per_s']:,.0f} lines/s (medians of {args.runs})")


if __name__ == "__main__":
    main()
