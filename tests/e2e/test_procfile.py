"""The one-machine setup as deploy/README.md tells a newcomer to run it: `honcho start` on the
Procfile, a batch through `turnout submit` and `turnout collect`, Flower and the metrics open.

The Procfile's ports are moved off their defaults (the machine may run its own Redis on 6379),
through the variables the Procfile reads for that; everything else is the file as shipped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

REPO = Path(__file__).resolve().parents[2]
LOCAL_CONFIG = "deploy/turnout.local.yaml"
BATCH = REPO / "examples" / "batch.jsonl"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, redis.RedisError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


@pytest.fixture
def honcho(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`honcho start -c cheap=2` from the repository root, stopped (and checked) at the end."""
    ports = {name: free_port() for name in ("redis", "fake", "flower", "metrics")}
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        TURNOUT_REDIS_PORT=str(ports["redis"]),
        TURNOUT_REDIS_DIR=str(tmp_path / "redis"),
        TURNOUT_REDIS_URL=f"redis://127.0.0.1:{ports['redis']}/0",
        TURNOUT_FAKE_PORT=str(ports["fake"]),
        TURNOUT_FAKE_URL=f"http://127.0.0.1:{ports['fake']}/v1",
        FLOWER_PORT=str(ports["flower"]),
        METRICS_PORT=str(ports["metrics"]),
    )
    env.pop("TURNOUT_CONFIG", None)
    log = open(tmp_path / "honcho.log", "wb")  # noqa: SIM115  # closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-c", "cheap=2"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield {"env": env, "ports": ports, "log": tmp_path / "honcho.log", "process": process, "tmp": tmp_path}
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # honcho passes it on; workers shut down warm
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def turnout(site: dict[str, Any], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "workers.cli", *args, "-c", LOCAL_CONFIG]
    return subprocess.run(argv, cwd=REPO, env=site["env"], capture_output=True, text=True, timeout=timeout)


def test_the_procfile_runs_a_batch_with_flower_and_metrics_and_a_tier_scaled_to_two(honcho: dict[str, Any]) -> None:
    ports, log = honcho["ports"], honcho["log"]
    client = redis.Redis(port=ports["redis"])
    wait_for(client.ping, f"the Procfile's Redis (see {log})", 30)

    # When a newcomer submits the sample batch and collects it, as deploy/README.md says
    submitted = turnout(honcho, "submit", str(BATCH))
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    assert batch_id and "\n" not in batch_id, submitted.stdout + submitted.stderr
    out = honcho["tmp"] / "out"
    collected = turnout(honcho, "collect", batch_id, "--wait", "-o", str(out), timeout=180)
    assert collected.returncode == 0, collected.stderr + log.read_text(errors="replace")[-3000:]

    # Then every input line ends as exactly one output or error line
    inputs = [line for line in BATCH.read_text().splitlines() if line.strip()]
    outputs = (out / "output.jsonl").read_text().splitlines()
    errors = (out / "errors.jsonl").read_text().splitlines()
    assert len(outputs) + len(errors) == len(inputs) and outputs
    # And Flower, at the Procfile's flower process, lists every pool, the cheap tier twice
    def workers() -> list[str]:
        names = list(json.loads(get(f"http://127.0.0.1:{ports['flower']}/api/workers?refresh=1")))
        return names if sum(n.startswith("cheap.") for n in names) == 2 else []

    names = wait_for(workers, "Flower listing both cheap workers", 60)
    assert {n.split(".")[0] for n in names} == {"classify", "cheap", "frontier"}
    # And the metrics process serves the batch's figures
    metrics = wait_for(lambda: get(f"http://127.0.0.1:{ports['metrics']}/metrics"), "metrics", 30)
    assert 'turnout_queue_jobs{queue="turnout.tier.cheap",tier="cheap"}' in metrics
    assert f'turnout_batch_lines{{batch="{batch_id}",state="done"}} {float(len(inputs))}' in metrics
