"""Shared fixtures: a real Redis (REDIS_URL, or an embedded one), flushed around the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from workers.broker import EmbeddedRedis  # noqa: E402


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL when set (CI points it at a database of its own), else a private embedded Redis."""
    url = os.environ.get("REDIS_URL")
    embedded = None
    if not url:
        embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
        url = embedded.start()
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()
    if embedded is not None:
        embedded.stop()


def other_db(url: str, db: int) -> str:
    """The same Redis server, another database: what runs there does not see the others' queues."""
    if url.startswith("unix://"):
        return f"{url.split('?')[0]}?db={db}"
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
