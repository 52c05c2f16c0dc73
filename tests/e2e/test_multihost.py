"""Several machines for real: Redis, the provider, the classifier pool and two tier pools each
run on a host of their own (a network namespace with its own address on a private LAN).

A tier host that dies mid-batch (its cable pulled, its processes killed -9, as when a machine
loses power) never comes back; a spare host with a new address takes its place, as an
autoscaler or an operator would bring one. Redis hands the dead host's tasks to the spare
after the visibility timeout, and the ledger ends whole.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from schemas.config import load_config
from tests.e2e import netns
from tests.e2e.netns import Host, Lan, private_lan
from tests.e2e.test_crash import assert_ledger_whole
from workers.app import RESTORE_SWEEP_S
from workers.broker import redis_server_binary
from workers.client import Client
from workers.supervisor import cli_command

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

#: Seconds before Redis hands a dead worker's task to another: short, so the test is too.
VISIBILITY_TIMEOUT_S = 20
REDIS_PORT = 6379
FAKE_PORT = 8900
LINES = 200
#: Cheap jobs answered before the cheap host dies: it is busy, and most of its work is ahead.
CHEAP_JOBS_BEFORE_CUT = 20
#: A task delivered less than this long ago is mid-call (the provider takes 200 ms), far from its ack.
FRESH_TASK_S = 0.1
#: Late beyond the visibility timeout a re-delivery may be: one restore sweep, and a loaded machine.
REDELIVERY_SLACK_S = RESTORE_SWEEP_S + 10

# batch_size 2 at 200 ms a call: the cheap host answers ~10 jobs/s, so its 100 jobs take ~10 s
CONFIG = f"""
chunk_size: 16
high_water: 10000
visibility_timeout_s: {VISIBILITY_TIMEOUT_S}
classifier: {{kind: heuristic}}
fake_provider: {{port: {FAKE_PORT}}}
tiers:
  - name: cheap
    min_score: 0.0
    batch_size: 2
    max_attempts: 3
    cooldown_s: 1
    deployments:
      - {{model: openai/fake-cheap, name: cheap-primary, api_base: fake, timeout_s: 5,
         input_cost_per_million: 0.15, output_cost_per_million: 0.60}}
      - {{model: openai/fake-cheap-backup, name: cheap-backup, api_base: fake, timeout_s: 5,
         input_cost_per_million: 0.20, output_cost_per_million: 0.80}}
  - name: frontier
    min_score: 0.5
    batch_size: 4
    max_attempts: 3
    cooldown_s: 1
    deployments:
      - {{model: openai/fake-frontier, name: frontier-primary, api_base: fake, timeout_s: 5,
         input_cost_per_million: 2.5, output_cost_per_million: 10.0}}
      - {{model: openai/fake-frontier-backup, name: frontier-backup, api_base: fake, timeout_s: 5,
         input_cost_per_million: 3.0, output_cost_per_million: 15.0}}
"""


@dataclass
class Site:
    """The LAN, Redis and the provider on hosts of their own, and a client in the root namespace."""

    lan: Lan
    client: Client
    config_path: Path
    env: dict[str, str]

    def worker_host(self, name: str, pool: str) -> Host:
        """A new host running one worker for ``pool``, named ``<pool>@<host>`` like on a real machine."""
        host = self.lan.add_host(name)
        argv = cli_command("worker", "--pool", pool, "--config", str(self.config_path), "--name", f"{pool}@{name}")
        host.start(f"worker-{pool}", argv, self.env)
        return host

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.lan.check()
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {timeout:.0f}s; the hosts' logs are in {self.lan.log_dir}")
            time.sleep(0.05)

    def tier_jobs(self, batch: str, tier: str) -> int:
        status = self.client.ledger.status(batch)
        report = status.tiers.get(tier) if status else None
        return report.jobs if report else 0

    def held_tasks(self, queue: str) -> dict[str, float]:
        """Tasks of ``queue`` delivered to a worker and not yet acknowledged: tag -> delivered at."""
        broker = self.client.ledger.redis
        tags = [tag for tag, raw in broker.hgetall("unacked").items() if json.loads(raw)[2] == queue]
        return {tag.decode(): broker.zscore("unacked_index", tag) or 0.0 for tag in tags}

    def busy(self, queue: str) -> bool:
        """A worker holds a task of ``queue`` delivered just now, so it is in the middle of its calls."""
        return any(time.time() - delivered < FRESH_TASK_S for delivered in self.held_tasks(queue).values())

    def redelivered(self, held: dict[str, float]) -> bool:
        """Every task in ``held`` has left the dead worker: gone from the unacknowledged set, or
        held again (the same tag) since a later delivery."""
        broker = self.client.ledger.redis
        return all(broker.zscore("unacked_index", tag) != delivered for tag, delivered in held.items())


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    reason = netns.unavailable()
    if reason:
        pytest.skip(f"cannot make network namespaces for the multi-host test: {reason}")
    with private_lan(f"turnout-{os.getpid()}", tmp_path / "logs") as lan:
        redis_host, api = lan.add_host("redis"), lan.add_host("api")
        redis_url = start_redis(lan, redis_host, tmp_path)
        fake_url = start_fake_provider(api, tmp_path)
        config_path = tmp_path / "turnout.yaml"
        config_path.write_text(CONFIG)
        env = dict(os.environ, TURNOUT_REDIS_URL=redis_url, TURNOUT_FAKE_URL=fake_url, TURNOUT_CONFIG=str(config_path))
        client = Client(load_config(config_path), redis_url)
        try:
            yield Site(lan, client, config_path, env)
        finally:
            client.app.close()
            client.ledger.redis.close()


def start_redis(lan: Lan, host: Host, data: Path) -> str:
    server = shutil.which("redis-server") or redis_server_binary()
    argv = [server, "--bind", host.address, "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--dir", str(data)]  # fmt: skip
    host.start("redis-server", argv, dict(os.environ))
    url = f"redis://{host.address}:{REDIS_PORT}/0"
    deadline = time.monotonic() + 10
    while not _answers(url):  # from the root namespace: through the LAN, as every host reaches it
        host.check()
        if time.monotonic() > deadline:
            raise AssertionError(f"redis-server on {host.address} does not answer; see {lan.log_dir}")
        time.sleep(0.05)
    return url


def start_fake_provider(host: Host, data: Path) -> str:
    ready = data / "fake.port"
    argv = cli_command("fake-provider", "--host", host.address, "--port", str(FAKE_PORT),
                       "--latency-ms", "200", "--ready-file", str(ready))  # fmt: skip
    host.start("fake-provider", argv, dict(os.environ))
    deadline = time.monotonic() + 20
    while not ready.exists():
        host.check()
        if time.monotonic() > deadline:
            raise AssertionError(f"the fake provider on {host.address} did not start")
        time.sleep(0.05)
    return f"http://{host.address}:{FAKE_PORT}/v1"


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def held_jobs(site: Site, tags: dict[str, float]) -> list[str]:
    """The custom_ids inside the tasks ``tags`` name (a tier task's args: batch id, jobs)."""
    ids = []
    for tag in tags:
        raw = site.client.ledger.redis.hget("unacked", tag)
        if raw is not None:
            args = json.loads(base64.b64decode(json.loads(raw)[0]["body"]))[0]
            ids += [job["custom_id"] for job in args[1]]
    return ids


def test_a_tier_host_that_dies_mid_batch_loses_and_doubles_nothing(site: Site) -> None:
    # Given the classifier pool and each tier pool on hosts of their own, and a slow provider
    site.worker_host("classify", "classify")
    cheap = site.worker_host("cheap", "cheap")
    site.worker_host("frontier", "frontier")
    ids = [f"m{n}" for n in range(LINES)]
    tiers = ["tier:frontier", "tier:cheap"]
    lines: list[dict[str, Any]] = [
        {"custom_id": i, "prompt": f"What is {n} + {n}?", "model": tiers[n % 2]} for n, i in enumerate(ids)
    ]
    batch = site.client.submit(lines, "multihost")

    # When the cheap host loses power mid-batch, in the middle of a task, and a spare host takes its place
    site.wait_until(lambda: site.tier_jobs(batch, "cheap") >= CHEAP_JOBS_BEFORE_CUT, "cheap answers", timeout=60)
    # not between two tasks: a message Redis pops for a worker that dies before it records the
    # delivery is lost with it, the gap the README leaves to `turnout submit --repair`
    site.wait_until(lambda: site.busy("turnout.tier.cheap"), "cheap task in flight", timeout=10)
    cheap.unplug()
    cheap.power_off()
    cut_at = time.time()
    held = site.held_tasks("turnout.tier.cheap")
    jobs_of_dead_host = held_jobs(site, held)
    cheap_jobs_at_cut = site.tier_jobs(batch, "cheap")
    site.worker_host("cheap2", "cheap")

    # Then the task it held goes to the spare after the visibility timeout ...
    assert held, "the cheap host held no task when it died"
    assert cheap_jobs_at_cut < LINES // 2, "the cheap host died mid-batch"
    redelivery_timeout = VISIBILITY_TIMEOUT_S + REDELIVERY_SLACK_S + 10
    site.wait_until(lambda: site.redelivered(held), "re-delivery", timeout=redelivery_timeout)
    redelivered_at = time.time()
    delivered_at = max(held.values())
    assert VISIBILITY_TIMEOUT_S <= redelivered_at - delivered_at <= VISIBILITY_TIMEOUT_S + REDELIVERY_SLACK_S
    print(
        f"cheap host cut after {cheap_jobs_at_cut} cheap jobs holding {len(held)} task(s) "
        f"({', '.join(jobs_of_dead_host)}); re-delivered {redelivered_at - cut_at:.1f}s after the cut, "
        f"{redelivered_at - delivered_at:.1f}s after its delivery"
    )

    # ... and the batch completes with every job once and its cost counted once
    site.wait_until(lambda: site.client.status(batch).complete, "complete batch", timeout=40)
    result = {
        "out": [json.loads(line) for line in site.client.ledger.lines(batch, "out")],
        "err": [json.loads(line) for line in site.client.ledger.error_lines(batch)],
    }
    assert_ledger_whole(site, result, ids, batch)  # type: ignore[arg-type]  # it reads only .client
    assert site.tier_jobs(batch, "cheap") == LINES // 2
