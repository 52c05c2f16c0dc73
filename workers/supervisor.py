"""What `turnout run` starts and looks after: the fake provider and one worker pool per
stage and tier, as child processes, restarted when they die, stopped when the run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from schemas.config import CLASSIFY_POOL, FAKE_API_BASE, Config
from schemas.errors import TurnoutError
from workers.broker import die_with_parent

#: The exit status of a turnout command stopped by a user's mistake (``workers.cli.main``).
USER_ERROR = 2
#: How long a child gets to stop after SIGTERM before it is killed; a pool gets longer, up
#: to its tiers' longest run (``Supervisor.stop``).
STOP_GRACE_S = 10.0
#: How long a stop waits before it says what it is waiting for.
STOP_QUIET_S = 2.0
#: How long a worker told to stop at once (a second Ctrl-C) gets to hand its tasks back.
COLD_STOP_S = 5.0
#: The fake provider's child: stopped after the pools, which may still be calling it.
FAKE_PROVIDER = "fake-provider"
#: How long `turnout run` waits for the fake provider to listen.
FAKE_START_TIMEOUT_S = 20.0
#: A pool's child is named for its pool: pool-classify, pool-cheap, ...
POOL_PREFIX = "pool-"
#: Beside each child's log, a file holding its process group while it runs.
GROUP_SUFFIX = ".pgid"


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "workers.cli", *args]


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0  # epoch seconds: what this incarnation holds was delivered since

    def start(self, env: dict[str, str]) -> None:
        self.started_at = time.time()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # Ctrl-C reaches `turnout run` only, which stops pools in order
                preexec_fn=die_with_parent,
            )
        # its process group (the pool's processes), for a later run to see whether it outlived
        # this one (`live_groups`); removed once it has stopped
        self.log_path.with_suffix(GROUP_SUFFIX).write_text(str(self.process.pid))

    def last_words(self) -> str:
        """The last line of the child's log, where a turnout command says why it stopped."""
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        return lines[-1].strip().removeprefix("turnout: error: ") if lines else "no output"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        self.terminate()
        self.wait(time.monotonic() + STOP_GRACE_S)

    def terminate(self) -> None:
        """SIGTERM to the child itself: for a Celery worker a warm shutdown, its pool processes
        finishing their tasks and the calls they handed off. (SIGTERM to the whole group would
        reach those processes too, and billiard stops a pool process mid-task on it: its calls
        would be made and paid for again.) ``wait`` kills the group if it outlasts the grace."""
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        """Wait for the child to exit until ``deadline`` (monotonic), then kill its group."""
        if self.process is None:
            return
        self.exited(deadline)
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log_path.with_suffix(GROUP_SUFFIX).unlink(missing_ok=True)

    def cold_stop(self) -> None:
        """SIGQUIT, a Celery worker's cold shutdown: its running tasks are cut but handed back
        to their queues (kombu restores what it holds), so the next run has them at once
        rather than after the visibility timeout."""
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGQUIT)

    def exited(self, deadline: float, hurry: threading.Event | None = None) -> bool:
        """Whether the child exits by ``deadline`` (monotonic), waiting no longer once ``hurry`` is set."""
        while self.alive and time.monotonic() < deadline and not (hurry is not None and hurry.is_set()):
            time.sleep(0.05)
        return not self.alive


def live_groups(log_dir: Path) -> list[int]:
    """The process groups of children an earlier run started here that are still alive: a
    run killed outright (kill -9, the OOM killer) leaves its pools in a warm shutdown, still
    running their tasks, which a new run must not hand out again meanwhile."""
    alive = []
    for marker in log_dir.glob(f"*{GROUP_SUFFIX}"):
        try:
            group = int(marker.read_text())
            os.killpg(group, 0)
        except (ValueError, OSError):  # unreadable, or no such group: it has ended
            marker.unlink(missing_ok=True)
            continue
        alive.append(group)
    return alive


@dataclass(frozen=True)
class DeadPool:
    """A pool's worker that died during the run: the tasks it held wait in Redis, unacknowledged,
    until its process group has ended (Celery's pool processes die with their worker; anything
    else left in the group is killed after the grace) and they are put back on the pool's
    queues (``Supervisor.ended``)."""

    pool: str
    group: int
    started_at: float  # epoch seconds: what this worker held was delivered between these two
    died_at: float
    deadline: float  # monotonic: its processes are killed if they outlast it


@dataclass
class Supervisor:
    """Starts the children, restarts any that die (``check``), and stops them all."""

    config: Config
    config_path: Path
    env: dict[str, str]
    log_dir: Path
    children: list[Child] = field(default_factory=list)
    dead: list[DeadPool] = field(default_factory=list)

    def start_fake_provider(self) -> str | None:
        """Start the fake provider when a deployment uses ``api_base: fake``; returns its URL."""
        fake = self.config.fake_provider
        uses_fake = any(d.api_base == FAKE_API_BASE for t in self.config.tiers for d in t.deployments)
        if fake is None or not uses_fake:
            return None
        ready = self.log_dir / "fake-provider.port"
        ready.unlink(missing_ok=True)
        argv = cli_command("fake-provider", "--port", str(fake.port), "--ready-file", str(ready))
        argv += ["--latency-ms", str(fake.latency_ms), "--error-rate", str(fake.error_rate)]
        if fake.context_limit:
            argv += ["--context-limit", str(fake.context_limit)]
        self._start(Child(FAKE_PROVIDER, argv, self.log_dir / "fake-provider.log"))
        port = self._wait_for_port(ready)
        url = f"http://127.0.0.1:{port}/v1"
        self.env["TURNOUT_FAKE_URL"] = url
        return url

    def start_pools(self) -> None:
        pools = [CLASSIFY_POOL] + [tier.name for tier in self.config.tiers]
        for pool in pools:
            argv = cli_command("worker", "--pool", pool, "--config", str(self.config_path))
            self._start(Child(f"{POOL_PREFIX}{pool}", argv, self.log_dir / f"{POOL_PREFIX}{pool}.log"))

    def check(self) -> list[str]:
        """Restart every child that died; returns their names. Raises TurnoutError for a child
        that exited with status 2, turnout's status for a user's mistake (a config or file
        it cannot use): restarted, it would only fail the same way again."""
        restarted = []
        for child in self.children:
            if not child.alive:
                if child.process is not None and child.process.returncode == USER_ERROR:
                    raise TurnoutError(f"{child.name} stopped: {child.last_words()} (log: {child.log_path})")
                if child.process is not None and child.name.startswith(POOL_PREFIX):
                    self.dead.append(DeadPool(child.name.removeprefix(POOL_PREFIX), child.process.pid, child.started_at,
                                              time.time(), time.monotonic() + self.stop_grace_s))
                child.restarts += 1
                child.start(self.env)
                restarted.append(child.name)
        return restarted

    def ended(self) -> list[DeadPool]:
        """The dead pools whose processes have all ended since the last call (those that outlast
        ``stop_grace_s`` are killed): the tasks they held can go back on their queues."""
        ended, waiting = [], []
        for dead in self.dead:
            try:
                if time.monotonic() > dead.deadline:
                    os.killpg(dead.group, signal.SIGKILL)
                    ended.append(dead)  # killed: what it held can go back (zombies, e.g. under PID 1, would keep the group)
                    continue
                os.killpg(dead.group, 0)
                waiting.append(dead)
            except OSError:  # no such group any more (or, reused, not ours)
                ended.append(dead)
        self.dead = waiting
        return ended

    @property
    def stop_grace_s(self) -> float:
        """How long the pools get to stop: their calls out, running tasks' and handed-off ones,
        may last a tier's longest run; cut, they are made and paid for again on resume."""
        return max(t.longest_run_s for t in self.config.tiers) + STOP_GRACE_S

    def stop(self, hurry: threading.Event | None = None, say: Callable[[str], None] | None = None,
             held: Callable[[], bool] | None = None) -> None:
        """The pools all at once, each finishing its tasks and handed-off calls within
        ``stop_grace_s`` (or until ``hurry`` is set: a second Ctrl-C), then the fake provider
        they may still be calling. After ``STOP_QUIET_S`` ``say`` hears what the stop waits for:
        calls out, or, when ``held`` says the workers hold no task, only their shutting down."""
        pools = [c for c in self.children if c.name != FAKE_PROVIDER]
        for dead in self.dead:  # what is left of pools that died in the run
            try:
                os.killpg(dead.group, signal.SIGKILL)
            except OSError:
                pass
        for child in pools:
            child.terminate()
        started = time.monotonic()
        deadline = started + self.stop_grace_s
        for child in pools:
            child.exited(started + STOP_QUIET_S, hurry)  # the usual stop: nothing out, or short calls
        waiting = [c for c in pools if c.alive]
        if waiting and say is not None and not (hurry and hurry.is_set()):
            names = ", ".join(c.name for c in waiting)
            if held is not None and not _held(held):
                say(f"stopping {names}: no task is running, they are only shutting down")
            else:
                say(f"waiting up to {deadline - time.monotonic():.0f} s for {names} to finish the calls "
                    "they have out (paid for either way); Ctrl-C again to stop now, and they are made again on resume")
        for child in pools:
            child.exited(deadline, hurry)
        if hurry is not None and hurry.is_set():  # every pool at once, on one deadline
            for child in pools:
                child.cold_stop()
            deadline = time.monotonic() + COLD_STOP_S
        for child in pools:
            child.wait(deadline)
        for child in self.children:
            if child.name == FAKE_PROVIDER:
                child.stop()

    def _start(self, child: Child) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child.start(self.env)
        self.children.append(child)

    def _wait_for_port(self, ready: Path) -> int:
        deadline = time.monotonic() + FAKE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if ready.exists() and ready.read_text().strip():
                return int(ready.read_text().strip())
            if not self.children[-1].alive:
                break
            time.sleep(0.05)
        raise TurnoutError(f"the fake provider did not start; see {self.log_dir / 'fake-provider.log'}")


def _held(held: Callable[[], bool]) -> bool:
    """Whether the workers hold a task; when that cannot be read, assume they do."""
    try:
        return held()
    except Exception:  # Redis gone first: say the longer thing, which is never wrong
        return True
