"""Machines for tests: Linux network namespaces on one private LAN, each with its own address.

Every host is a network namespace with a veth cable into a bridge. The bridge lives in a
namespace of its own, so the machine's firewall (Docker's FORWARD DROP, br_netfilter) never
sees the traffic between hosts; the test process reaches the LAN through one more veth from
the root namespace. Pulling a host's cable is ``ip link set <port> down`` on its switch port.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workers.broker import die_with_parent

#: Third octets the LAN's 10.213.<x>.0/24 may take; the search starts at one the pid picks.
SUBNET_OCTETS = range(20, 250)
#: The test process's own address on the LAN.
ROOT_HOST = 254
#: How much of a dead process's log an error message shows.
LOG_TAIL_CHARS = 3000


class NetnsError(RuntimeError):
    """Raised when an `ip` command fails while the LAN is built or torn down."""


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit status {done.returncode}'}")
    return done.stdout


def unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no `ip`, `ip netns add` refused), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the tests as root)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"turnout-{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
    except NetnsError as exc:
        return f"`ip netns add` failed: {exc}"
    ip("netns", "del", probe)
    return None


def log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Host:
    """One machine: a network namespace with one address and the processes it runs."""

    name: str
    netns: str
    address: str
    switch_port: str
    lan: Lan
    processes: list[Process] = field(default_factory=list)
    dead: bool = False

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Process:
        """Run ``argv`` inside this host, its output in ``<log_dir>/<host>-<name>.log``."""
        log_path = self.lan.log_dir / f"{self.name}-{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *argv],  # `ip netns exec` execs: the pid is argv's
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # one process group per process: Celery's pool children die with it
                preexec_fn=die_with_parent,
            )  # fmt: skip
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    def check(self) -> None:
        """Raise with the log's tail if a process of this (living) host has exited."""
        if self.dead:
            return
        for process in self.processes:
            if process.popen.poll() is not None:
                raise AssertionError(
                    f"{process.name} on {self.name} exited with status {process.popen.returncode}:\n"
                    f"{log_tail(process.log_path)}"
                )

    def unplug(self) -> None:
        """Pull the cable: nothing goes in or out, not even the FIN of a closing socket."""
        ip("-n", self.lan.netns, "link", "set", self.switch_port, "down")

    def power_off(self) -> None:
        """Kill -9 everything the host runs, as a machine that loses power."""
        self.dead = True
        for process in self.processes:
            if process.popen.poll() is None:
                os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait()


@dataclass
class Lan:
    """Hosts on 10.213.<x>.0/24 behind one bridge; ``close`` removes every trace."""

    prefix: str
    subnet: str
    log_dir: Path
    hosts: list[Host] = field(default_factory=list)

    @property
    def netns(self) -> str:
        return f"{self.prefix}-lan"

    @property
    def root_link(self) -> str:
        return f"tn{os.getpid()}"  # an interface name is at most 15 characters

    @property
    def root_address(self) -> str:
        return f"{self.subnet}.{ROOT_HOST}"

    def add_host(self, name: str) -> Host:
        netns = f"{self.prefix}-{name}"
        host = Host(name, netns, f"{self.subnet}.{10 + len(self.hosts)}", f"p-{name}", self)
        ip("netns", "add", netns)
        self.hosts.append(host)
        ip("link", "add", "eth0", "netns", netns, "type", "veth", "peer", "name", host.switch_port, "netns", self.netns)
        ip("-n", self.netns, "link", "set", host.switch_port, "master", "br0", "up")
        ip("-n", netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        ip("-n", netns, "link", "set", "lo", "up")
        return host

    def check(self) -> None:
        for host in self.hosts:
            host.check()

    def close(self) -> None:
        """Kill every process in every namespace of the LAN, then delete the links and namespaces."""
        for host in reversed(self.hosts):  # clients before the servers they use
            host.power_off()
        for netns in [host.netns for host in self.hosts] + [self.netns]:
            for pid in _pids_in(netns):  # strays: a Celery pool child that left its group
                _kill(pid)
        _quietly("link", "del", self.root_link)
        for netns in [host.netns for host in self.hosts] + [self.netns]:
            _quietly("netns", "del", netns)


@contextmanager
def private_lan(prefix: str, log_dir: Path) -> Iterator[Lan]:
    """A bridge in its own namespace, joined to the root namespace; torn down on exit, also on failure."""
    log_dir.mkdir(parents=True, exist_ok=True)
    lan = Lan(prefix, _free_subnet(), log_dir)
    try:
        ip("netns", "add", lan.netns)
        ip("-n", lan.netns, "link", "add", "br0", "type", "bridge")
        ip("-n", lan.netns, "link", "set", "br0", "up")
        ip("link", "add", lan.root_link, "type", "veth", "peer", "name", "p-root", "netns", lan.netns)
        ip("-n", lan.netns, "link", "set", "p-root", "master", "br0", "up")
        ip("addr", "add", f"{lan.root_address}/24", "dev", lan.root_link)
        ip("link", "set", lan.root_link, "up")
        yield lan
    finally:
        lan.close()


def _free_subnet() -> str:
    used = ip("-4", "-o", "addr", "show") + ip("-4", "route", "show")
    start = os.getpid() % len(SUBNET_OCTETS)
    for step in range(len(SUBNET_OCTETS)):
        subnet = f"10.213.{SUBNET_OCTETS[(start + step) % len(SUBNET_OCTETS)]}"
        if f"{subnet}." not in used:
            return subnet
    raise NetnsError("every 10.213.<x>.0/24 candidate is in use on this machine")


def _pids_in(netns: str) -> list[int]:
    try:
        return [int(pid) for pid in ip("netns", "pids", netns).split()]
    except NetnsError:
        return []  # never created, or already gone


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _quietly(*args: str) -> None:
    try:
        ip(*args)
    except NetnsError:
        pass  # never created: the build failed before it
