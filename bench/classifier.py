"""How fast the trained router scores prompts: batches of 64, and one prompt at a time.

Three sets: the shared labeled data (multiple choice and word problems: the trained
sub-models), the open-ended prompts of examples/batch.jsonl (chat, writing, code: the
heuristic's kind), and those same prompts repeated to 4,000 characters (pasted documents).

    python bench/classifier.py [--model router/models/default.json] [--data FILE ...] [--json]

Reads the shared labeled data at run time (never copied into the repository).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.classifier import DEFAULT_MODEL_PATH  # noqa: E402
from router.trained import TrainedClassifier  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BATCH = 64


def prompts_from(paths: list[Path]) -> list[str]:
    return [json.loads(line)["prompt"] for path in paths for line in path.read_text().splitlines() if line.strip()]


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "batch.jsonl"


def open_ended_prompts() -> list[str]:
    """The last user message of each line of examples/batch.jsonl."""
    prompts = []
    for line in EXAMPLES.read_text().splitlines():
        job = json.loads(line)
        prompts.append(job["prompt"] if "prompt" in job else job["body"]["messages"][-1]["content"])
    return prompts


def batch_rate(model: TrainedClassifier, prompts: list[str], passes: int = 3) -> float:
    """Prompts per second scoring batches of 64: the median of ``passes`` passes over all prompts."""
    rates = []
    for _ in range(passes):
        started = time.perf_counter()
        for i in range(0, len(prompts), BATCH):
            model.score_batch(prompts[i : i + BATCH])
        rates.append(len(prompts) / (time.perf_counter() - started))
    return statistics.median(rates)


def single_latencies_ms(model: TrainedClassifier, prompts: list[str]) -> list[float]:
    latencies = []
    for prompt in prompts:
        started = time.perf_counter()
        model.score(prompt)
        latencies.append((time.perf_counter() - started) * 1000)
    return sorted(latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--data", type=Path, nargs="*", default=sorted(SHARED_DATA.glob("*.jsonl")))
    parser.add_argument("--single", type=int, default=2000, help="prompts timed one at a time")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the lines")
    args = parser.parse_args()
    if not args.data:
        parser.error(f"no labeled data in {SHARED_DATA}: pass --data FILE ... (e.g. the shared data's *.train.jsonl)")

    model = TrainedClassifier.load(args.model)
    open_ended = open_ended_prompts() * 50
    sets = {
        "shared data": prompts_from(args.data),
        "open-ended": open_ended,
        "open-ended, 4,000 chars": [(p + " ") * (4000 // (len(p) + 1) + 1) for p in open_ended[:400]],
    }
    figures: dict[str, object] = {"model": str(args.model), "batch_size": BATCH}
    for name, prompts in sets.items():
        prompts = [p[:4000] if name.endswith("chars") else p for p in prompts]
        model.score_batch(prompts[:BATCH])  # warm-up: first-call costs are not the steady state
        rate = batch_rate(model, prompts)
        latencies = single_latencies_ms(model, prompts[: args.single])
        figures[name] = {
            "prompts": len(prompts),
            "prompts_per_second": round(rate, 1),
            "single_p50_ms": round(statistics.median(latencies), 3),
            "single_p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 3),
            "single_max_ms": round(latencies[-1], 3),
        }
        if not args.json:
            print(
                f"{name}: {len(prompts):,} prompts, batches of {BATCH}: {rate:,.0f} prompts/s; one at a time: "
                f"p50 {statistics.median(latencies):.3f} ms, p99 {latencies[int(0.99 * (len(latencies) - 1))]:.3f} ms"
            )
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
