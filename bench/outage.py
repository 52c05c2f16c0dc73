"""A provider outage in the middle of a batch: how many lines end in the dead-letter queue,
how many calls the outage costs, and how soon the batch finishes once the provider is back.

    python bench/outage.py [--jobs 3000] [--outage-at 0.3] [--outage-s 60] [--status 503]
                           [--latency-ms 100] [--cooldown-s 10] [--max-attempts 4] [--json]

One run starts, in a temp dir, the fake provider, a private Redis and turnout's pools
(helpers of bench/reliability.py: two tiers, each a primary and a backup deployment). After
a warm-up, ``--jobs`` jobs are submitted; when ``--outage-at`` of them are done, every
deployment of both tiers answers ``--status`` for ``--outage-s`` seconds (both providers
down), then answers again. A user running a batch overnight wants such an outage to cost a
wait, not lines in the DLQ.

Figures:
    dead letters        lines that ended as errors (all of them for the outage: the fake
                        provider fails nothing else here)
    calls in outage     provider requests answered with ``--status``
    finish after        seconds from the outage's end until the batch completed
    lost / duplicates   per input custom_id over output + error lines (both must be 0)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.reliability import count_lines, job_lines, local_turnout  # noqa: E402  (sets LITELLM_LOCAL_MODEL_COST_MAP)
from bench.throughput import log  # noqa: E402

MODELS = ("fake-cheap", "fake-cheap-backup", "fake-frontier", "fake-frontier-backup")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from workers.collector import collect
    from workers.fake_provider import configure, fetch_stats, reset

    batch_id = "outage"
    with local_turnout(args, "outage") as local:
        tmp, fake_url, client, supervisor = local.tmp, local.fake_url, local.client, local.supervisor
        reset(fake_url)

        producer = threading.Thread(target=client.submit_report, args=(job_lines("o-", args.jobs), batch_id), daemon=True)
        started = time.monotonic()
        producer.start()
        down_at = up_at = None
        outage_calls = 0
        deadline = started + args.timeout
        status = None
        while time.monotonic() < deadline:
            status = client.ledger.status(batch_id)
            done = status.done if status else 0
            if status is not None and status.complete and not producer.is_alive():
                break
            now = time.monotonic()
            if down_at is None and done >= args.outage_at * args.jobs:
                configure(fake_url, fail_models={m: args.status for m in MODELS})
                down_at = now
                log(f"outage: every deployment answers {args.status} for {args.outage_s:.0f}s ({done} done)")
            elif down_at is not None and up_at is None and now - down_at >= args.outage_s:
                outage_calls = int(fetch_stats(fake_url)["by_status"].get(str(args.status), 0))
                configure(fake_url, fail_models={})
                up_at = now
                log(f"provider back ({done} done, {status.failed if status else 0} failed)")
            supervisor.check()
            time.sleep(0.2)
        finished = time.monotonic()
        stats = fetch_stats(fake_url)
        collect(client.ledger, batch_id, tmp / "out")
        out, errors = tmp / "out" / "output.jsonl", tmp / "out" / "errors.jsonl"
        counts, _ = count_lines(out)
        error_counts, error_lines = count_lines(errors)
        counts.update(error_counts)
        expected = {f"o-{i:07d}" for i in range(args.jobs)}
        codes: dict[str, int] = {}
        for line in error_lines:
            code = (line.get("error") or {}).get("code", "?")
            codes[code] = codes.get(code, 0) + 1
        return {
            "jobs": args.jobs,
            "outage_s": args.outage_s,
            "status": args.status,
            "complete": bool(status and status.complete),
            "dead_letters": len(error_lines),
            "error_codes": codes,
            "calls_in_outage": outage_calls,
            "provider_calls": stats["requests"],
            "finish_after_s": round(finished - up_at, 1) if up_at is not None else None,
            "wall_s": round(finished - started, 1),
            "lost": len(expected - set(counts)),
            "duplicates": sum(1 for n in counts.values() if n > 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--outage-at", type=float, default=0.3, help="progress fraction at which the outage starts")
    parser.add_argument("--outage-s", type=float, default=60.0, help="how long every deployment fails")
    parser.add_argument("--status", type=int, default=503, help="what the provider answers during the outage")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="fake provider latency per call")
    parser.add_argument("--cooldown-s", type=float, default=10.0, help="per tier cooldown after repeated failures")
    parser.add_argument("--max-attempts", type=int, default=4, help="per tier")
    parser.add_argument("--call-timeout-s", type=float, default=10.0, help="each deployment's timeout_s")
    parser.add_argument("--processes", type=int, default=2, help="processes of the cheap tier pool")
    parser.add_argument("--batch-size", type=int, default=32, help="jobs per tier task")
    parser.add_argument("--chunk-size", type=int, default=64, help="jobs per classify task")
    parser.add_argument("--frontier-min-score", type=float, default=0.2, help="heuristic score routed to frontier")
    parser.add_argument("--visibility-timeout", type=int, default=600, help="visibility_timeout_s in the config")
    parser.add_argument("--timeout", type=float, default=1200.0, help="give up on the batch after this long")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (pool logs, Redis data, output files)")
    args = parser.parse_args()
    result = bench(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}  {value}")
    if not (result["complete"] and result["lost"] == 0 and result["duplicates"] == 0):
        sys.exit(1)


if __name__ == "__main__":
    main()
