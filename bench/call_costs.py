"""Where a tier worker's CPU goes, piece by piece, in one process (no Celery).

    python bench/call_costs.py [--calls 2000] [--inflight 128] [--latency-ms 0] [--rounds 3] [--json]

Against a fake provider subprocess, with one persistent event loop like a tier worker:

- ``bare``            litellm.acompletion, prices passed per call (what bench/throughput.py's bare loop does)
- ``bare_registered`` litellm.acompletion after litellm.register_model (no per-call prices)
- ``router_1``        a LiteLLM Router with one deployment, no fallbacks
- ``tier_provider``   workers.provider.TierProvider.complete (turnout's Router: 2 deployments, fallbacks)
- ``complete_batch``  workers.tasks.complete_batch on micro-batches (provider + ledger + pydantic), no Celery

and, per job, without any model call: Job.model_validate of a classified job, the ledger's
record_answers for one job (pydantic ResultLine + one Lua EVALSHA round trip), and the same records sent
in one pipeline. CPU is this process's user+sys (all threads: LiteLLM runs part of each call
on a thread pool) divided by the calls; rounds alternate the variants and report medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from throughput import FAKE_KEY, INPUT_COST_PER_M, MODEL, OUTPUT_COST_PER_M, prompt, start_fake_provider  # noqa: E402


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--inflight", type=int, default=128)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()

    import litellm
    from litellm import Router

    from schemas.config import Config
    from schemas.job import Decision, Job
    from workers.app import Runtime
    from workers.broker import EmbeddedRedis
    from workers.provider import Answer, TierProvider, litellm_params
    from workers.tasks import complete_batch, dump, record_answers

    litellm.suppress_debug_info = True
    tmp = Path(tempfile.mkdtemp(prefix="turnout-costs-"))
    fake, url = start_fake_provider(tmp, args.latency_ms)
    embedded = EmbeddedRedis(tmp / "state")
    redis_url = embedded.start()
    try:
        os.environ["TURNOUT_FAKE_URL"] = url
        config = Config.model_validate({
            "fake_provider": {"port": 0},
            # hand_off_after null: every call of complete_batch is timed inside it (and FakeTask has no app to send a guard)
            "tiers": [{"name": "cheap", "batch_size": args.inflight, "hand_off_after": None, "deployments": [
                {"model": MODEL, "name": "cheap-primary", "api_base": "fake",
                 "input_cost_per_million": INPUT_COST_PER_M, "output_cost_per_million": OUTPUT_COST_PER_M},
                {"model": "openai/fake-cheap-backup", "name": "cheap-backup", "api_base": "fake",
                 "input_cost_per_million": 0.2, "output_cost_per_million": 0.8}]}],
        })
        tier = config.tiers[0]
        runtime = Runtime(config, redis_url)
        from workers.gate import Gate

        provider = TierProvider(tier, url, Gate(redis_url))
        router_1 = Router(model_list=[{"model_name": "one", "litellm_params": litellm_params(tier.deployments[0], url)}],
                          num_retries=0)
        litellm.register_model({"openai/fake-registered": {
            "input_cost_per_token": INPUT_COST_PER_M / 1e6, "output_cost_per_token": OUTPUT_COST_PER_M / 1e6,
            "litellm_provider": "openai", "mode": "chat", "max_tokens": 4096}})
        from workers.tasks import run_on_loop  # complete_batch runs on this process loop too

        def messages(i: int) -> list[dict[str, str]]:
            return [{"role": "user", "content": prompt(i)}]

        def job(i: int, batch: str = "costs") -> Job:
            return Job(batch_id=batch, custom_id=f"c{i:07d}", line=i + 1, messages=messages(i),
                       decision=Decision(tier="cheap", score=0.2, reasons=["short"]))

        async def gathered(make: Any, calls: int = args.calls) -> None:
            sem = asyncio.Semaphore(args.inflight)

            async def one(i: int) -> None:
                async with sem:
                    await make(i)

            await asyncio.gather(*(one(i) for i in range(calls)))

        variants: dict[str, Any] = {
            "bare": lambda i: litellm.acompletion(model=MODEL, messages=messages(i), api_base=url, api_key=FAKE_KEY,
                                                  timeout=60, max_retries=0,
                                                  input_cost_per_token=INPUT_COST_PER_M / 1e6,
                                                  output_cost_per_token=OUTPUT_COST_PER_M / 1e6),
            "bare_registered": lambda i: litellm.acompletion(model="openai/fake-registered", messages=messages(i),
                                                             api_base=url, api_key=FAKE_KEY, timeout=60,
                                                             max_retries=0),
            "router_1": lambda i: router_1.acompletion(model="one", messages=messages(i)),
            "tier_provider": lambda i: provider.complete(job(i)),
        }
        only = set(filter(None, args.only.split(",")))
        for name, make in variants.items():  # warm each path
            if not only or name in only:
                run_on_loop(gathered(make, 50))

        class FakeTask:
            class request:
                id = "bench"
                retries = 0
            app = None

        counter = [0]

        def run_complete_batch() -> None:
            counter[0] += 1
            batch_id = f"costs-{counter[0]}"
            raw = dump([job(i, batch_id) for i in range(args.calls)])
            for start in range(0, len(raw), args.inflight):
                FakeTask.request.id = f"{batch_id}-{start}"  # a fresh delivery count per task
                complete_batch(FakeTask, runtime, tier, batch_id, raw[start : start + args.inflight])

        results: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for name, make in variants.items():
                if only and name not in only:
                    continue
                c0, t0 = cpu(), time.perf_counter()
                run_on_loop(gathered(make))
                results.setdefault(name, []).append(1000 * (cpu() - c0) / args.calls)
                results.setdefault(name + " jobs/s", []).append(args.calls / (time.perf_counter() - t0))
            if not only or "complete_batch" in only:
                c0, t0 = cpu(), time.perf_counter()
                run_complete_batch()
                results.setdefault("complete_batch", []).append(1000 * (cpu() - c0) / args.calls)
                results.setdefault("complete_batch jobs/s", []).append(args.calls / (time.perf_counter() - t0))

        # per-job pieces without model calls
        answer = Answer(body={"id": "x", "choices": [{"message": {"role": "assistant", "content": "ok " * 30}}],
                              "usage": {"prompt_tokens": 30, "completion_tokens": 30}},
                        deployment="cheap-primary", model=MODEL, fallbacks=[], latency_s=0.01, cost_usd=1e-5,
                        prompt_tokens=30, completion_tokens=30, request_id="x")
        n = args.calls
        raw_jobs = dump([job(i) for i in range(n)])
        c0 = cpu()
        for raw in raw_jobs:
            Job.model_validate(raw)
        results["Job.model_validate"] = [1000 * (cpu() - c0) / n]
        c0 = cpu()
        dump([job(i) for i in range(n)])
        results["Job() + dump"] = [1000 * (cpu() - c0) / n]
        jobs = [job(i, "costs-rec") for i in range(n)]
        for j in jobs:
            j.attempts = 1
        c0 = cpu()
        for j in jobs:
            record_answers(runtime, tier, [(j, answer)])
        results["record_answers, one job a call (Lua per job)"] = [1000 * (cpu() - c0) / n]
        # the same scripts, one pipeline per 128 jobs
        from workers.ledger import BatchKeys
        from workers.tasks import frontier_cost
        ledger = runtime.ledger
        jobs = [job(i, "costs-pipe") for i in range(n)]
        c0 = cpu()
        for start in range(0, n, args.inflight):
            pipe = ledger.redis.pipeline(transaction=False)
            for j in jobs[start : start + args.inflight]:
                from schemas.result import ResultLine, Response, TurnoutInfo, request_id
                line = ResultLine(id=request_id(j.batch_id, j.custom_id), custom_id=j.custom_id,
                                  response=Response(status_code=200, request_id=answer.request_id, body=answer.body),
                                  turnout=TurnoutInfo(line=j.line, tier="cheap", model=answer.model,
                                                      deployment=answer.deployment, attempts=1,
                                                      latency_s=answer.latency_s, cost_usd=answer.cost_usd))
                keys = BatchKeys(j.batch_id)
                ledger._ok(keys=keys.recording,
                           args=[j.custom_id, line.model_dump_json(), repr(answer.cost_usd), "cheap",
                                 repr(frontier_cost(config, answer)), time.time()], client=pipe)
            pipe.execute()
        results["record (Lua, pipelined per batch)"] = [1000 * (cpu() - c0) / n]
        out = {k: statistics.median(v) for k, v in results.items()}
        if args.json:
            print(json.dumps(out))
            return
        for k, v in out.items():
            if v is not None:
                unit = "jobs/s" if k.endswith("jobs/s") else "ms CPU/job"
                print(f"{k:40s} {v:9.3f} {unit}")
    finally:
        embedded.stop()
        fake.terminate()
        fake.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
