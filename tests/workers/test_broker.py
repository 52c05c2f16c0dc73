"""Broker URLs: one spelling for the user, the right one for each library, no password shown."""

from __future__ import annotations

from workers.broker import kombu_url, redacted


def test_a_unix_socket_url_becomes_kombus_spelling_with_its_database() -> None:
    assert kombu_url("unix:///tmp/r.sock") == "redis+socket:///tmp/r.sock"
    assert kombu_url("unix:///tmp/r.sock?db=3") == "redis+socket:///tmp/r.sock?virtual_host=3"
    assert kombu_url("redis://h:6379/2") == "redis://h:6379/2"


def test_passwords_are_redacted_from_urls() -> None:
    assert redacted("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redacted("rediss://user:s3cret@h:6380/1") == "rediss://user:***@h:6380/1"
    assert redacted("redis://h:6379/0") == "redis://h:6379/0"
