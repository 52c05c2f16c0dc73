"""Broker URLs: one spelling for the user, the right one for each library, no password shown."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from workers.broker import BrokerError, EmbeddedRedis, check, kombu_url, redacted


def test_a_unix_socket_url_becomes_kombus_spelling_with_its_database() -> None:
    assert kombu_url("unix:///tmp/r.sock") == "redis+socket:///tmp/r.sock"
    assert kombu_url("unix:///tmp/r.sock?db=3") == "redis+socket:///tmp/r.sock?virtual_host=3"
    assert kombu_url("redis://h:6379/2") == "redis://h:6379/2"


def test_a_tls_url_makes_kombu_check_the_certificate_as_redis_py_does() -> None:
    # kombu would skip the check on a bare rediss:// URL; redis-py requires it
    assert kombu_url("rediss://:pw@h:6380/0") == "rediss://:pw@h:6380/0?ssl_cert_reqs=required"
    assert kombu_url("rediss://h/0?ssl_ca_certs=/ca.pem") == "rediss://h/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required"
    # an explicit choice is the user's
    assert kombu_url("rediss://h/0?ssl_cert_reqs=none") == "rediss://h/0?ssl_cert_reqs=none"


def test_passwords_are_redacted_from_urls() -> None:
    assert redacted("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redacted("rediss://user:s3cret@h:6380/1") == "rediss://user:***@h:6380/1"
    assert redacted("redis://h:6379/0") == "redis://h:6379/0"
    assert redacted("redis://h:6379/0?password=s3cret&db=2") == "redis://h:6379/0?password=***&db=2"
    # a password urlsplit cannot parse must not be printed either
    assert redacted("redis://:ab/cd+ef@h:6379/0") == "redis://:***@h:6379/0"
    assert redacted("redis://:a#b?c@h/0") == "redis://:***@h/0"


def test_a_password_in_the_query_reaches_kombu_as_userinfo() -> None:
    from kombu.utils.url import parse_url

    url = kombu_url("redis://h:6379/2?password=s%2F3cret&health_check_interval=5")
    assert parse_url(url)["password"] == "s/3cret" and parse_url(url)["hostname"] == "h"
    assert "password=" not in url and "health_check_interval=5" in url


def test_a_url_redis_cannot_parse_is_one_sentence_without_the_password() -> None:
    for url in ("localhost:6379?password=s3cret", "redis://:ab/s3cret@h:6379/0"):
        with pytest.raises(BrokerError, match="is not valid") as caught:
            check(url)
        assert "s3cret" not in str(caught.value)


def test_a_service_waits_for_a_redis_that_comes_up_after_it(tmp_path: Path) -> None:
    # Given a service checking for a Redis that starts 1.5 s later (honcho starts them together)
    redis_server = EmbeddedRedis(tmp_path / "late")
    outcome: list[object] = []
    started = time.monotonic()

    def service() -> None:
        try:
            check(redis_server.url, wait_s=20)
            outcome.append(time.monotonic() - started)
        except BrokerError as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=service)
    waiting.start()
    time.sleep(1.5)
    redis_server.start()  # on this thread: the server dies with the thread that started it
    try:
        waiting.join(timeout=30)
        # Then the check waited for it, and passed
        assert len(outcome) == 1 and isinstance(outcome[0], float) and outcome[0] >= 1.4, outcome
    finally:
        redis_server.stop()


def test_a_redis_that_never_comes_is_one_sentence_once_the_wait_is_over(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerError, match="cannot reach Redis"):
        check(f"unix://{tmp_path / 'nobody.sock'}", wait_s=1.0)
    assert 1.0 <= time.monotonic() - started < 10


def test_a_state_directory_is_held_by_one_command_at_a_time(tmp_path: Path) -> None:
    from schemas.errors import TurnoutError
    from workers.broker import lock_state_dir

    # Given a command holding the state directory
    held = lock_state_dir(tmp_path, wait_s=0)

    # Then another waits for it, then names it and says what to do
    with pytest.raises(TurnoutError, match=r"turnout .*\(pid \d+\) is using .*; try again when it has finished"):
        lock_state_dir(tmp_path, wait_s=0.3, advice="try again when it has finished")
    # And once it lets go, the next takes it
    held.close()
    lock_state_dir(tmp_path, wait_s=0).close()
