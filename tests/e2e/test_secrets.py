"""API keys never enter task messages, results, dead letters, Redis or logs."""

from __future__ import annotations

import redis

from tests.e2e.conftest import PLANTED_KEY, Cluster


def test_a_planted_key_is_nowhere_in_redis_or_the_logs(fresh_fake: Cluster) -> None:
    # Given the cheap tier's primary deployment reads its key from the environment
    # When a batch runs with jobs waiting in queues, answers recorded, and failures dead-lettered
    fresh_fake.fake(fail_models={"fake-cheap": 401, "fake-cheap-backup": 400})
    fresh_fake.run([{"custom_id": f"s{i}", "prompt": "Hi", "model": "tier:cheap"} for i in range(4)], "secrets-failing")
    fresh_fake.fake(fail_models={})
    fresh_fake.run([{"custom_id": f"t{i}", "prompt": "Hi", "model": "tier:cheap"} for i in range(4)], "secrets-ok")

    # Then no key or value anywhere in Redis holds the key
    client = redis.Redis.from_url(fresh_fake.redis_url)
    assert client.dbsize() > 0
    for key in client.scan_iter(count=1000):
        assert PLANTED_KEY.encode() not in key
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = list(client.hgetall(key).values())
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"zset":
            values = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            values = [b"".join(f.values()) for _, f in client.xrange(key)]
        else:
            values = []
        for value in values:
            assert PLANTED_KEY.encode() not in value, f"the key leaked into {key!r}"
    # And no worker log mentions it
    for child in fresh_fake.supervisor.children:
        assert PLANTED_KEY not in child.log_path.read_text(errors="replace"), f"the key leaked into {child.log_path}"
