"""Readers for the files under deploy/ and the Procfile, shared by the deploy tests."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from schemas.config import Config, load_config
from workers.app import CLASSIFY_QUEUE

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
PROCFILE = REPO / "Procfile"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
README = DEPLOY / "README.md"
SYSTEMD = DEPLOY / "systemd"
SAMPLE_CONFIG = REPO / "examples" / "turnout.yaml"
LOCAL_CONFIG = DEPLOY / "turnout.local.yaml"
#: The cluster's turnout.yaml (kustomize's configMapGenerator makes it the ConfigMap turnout-config).
CLUSTER_CONFIG = K8S / "turnout.yaml"


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the file it came from."""

    file: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    def __str__(self) -> str:
        return f"{self.file}:{self.kind}/{self.name}"


@cache
def manifests() -> tuple[Manifest, ...]:
    """Every object in deploy/k8s, the kustomization and the config it generates a ConfigMap
    from (not objects) left out."""
    found: list[Manifest] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path in (K8S / "kustomization.yaml", CLUSTER_CONFIG):
            continue
        found += [Manifest(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return tuple(found)


def of_kind(kind: str) -> dict[str, Manifest]:
    return {m.name: m for m in manifests() if m.kind == kind}


@cache
def sample_config() -> Config:
    return load_config(SAMPLE_CONFIG)


def pools(config: Config) -> dict[str, list[str]]:
    """Pool name -> the queues (and so the Redis lists) it consumes: a tier's own, then its guards'."""
    return {"classify": [CLASSIFY_QUEUE]} | {tier.name: [tier.queue, tier.guard_queue] for tier in config.tiers}


def cluster_config(tmp_path: Path) -> Config:
    """The turnout.yaml that the ConfigMap mounts into every pod."""
    return load_config(CLUSTER_CONFIG)


def longest_task_s(config: Config) -> float:
    """A tier task's worst case: each deployment of the tier timing out in turn."""
    return max(sum(d.timeout_s for d in tier.deployments) for tier in config.tiers)


def containers(deployment: Manifest) -> list[dict[str, Any]]:
    return list(deployment.body["spec"]["template"]["spec"]["containers"])


@cache
def procfile(port: int = 5000) -> dict[str, str]:
    """Process type -> command line as the shell runs it with no overrides set: every
    ``${NAME:-default}`` at its default, ``$PORT`` as honcho sets it (``port`` for all)."""
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line)
        if match:
            command = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", match.group(2))
            entries[match.group(1)] = command.replace("$PORT", str(port))
    return entries


@cache
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


@cache
def dockerfile() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return tuple((line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip())


def unit(path: Path) -> dict[str, dict[str, str]]:
    """A systemd unit's sections and keys (the last value of a repeated key wins)."""
    sections: dict[str, dict[str, str]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif current is not None and "=" in line:
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip()
        else:
            raise ValueError(f"{path.name}: cannot parse line {raw!r}")
    return sections


def readme_secrets() -> dict[str, set[str]]:
    """Secret name -> keys, from the `kubectl create secret generic` commands in the README."""
    text = README.read_text().replace("\\\n", " ")
    secrets = {}
    for match in re.finditer(r"create secret generic (\S+)([^\n]*)", text):
        secrets[match.group(1)] = set(re.findall(r"--from-literal=([A-Za-z0-9_.-]+)=", match.group(2)))
    return secrets


def turnout_command_lines() -> Iterator[tuple[str, list[str]]]:
    """(where, argv after `turnout`) for every turnout command that deploy/ and the Procfile run."""
    for name, line in procfile().items():
        yield from _turnout_argvs(f"Procfile:{name}", shlex.split(line, comments=True))
    for name, service in compose()["services"].items():
        if service.get("image", "").startswith("turnout"):
            yield f"compose.yaml:{name}", [str(arg) for arg in service["command"]]
        test = [str(arg) for arg in service.get("healthcheck", {}).get("test", [])]
        if test[:1] == ["CMD"]:
            yield from _turnout_argvs(f"compose.yaml:{name}:healthcheck", test[1:])
    for path in sorted(SYSTEMD.glob("*.service")):
        yield from _turnout_argvs(path.name, shlex.split(unit(path)["Service"]["ExecStart"]))
    for deployment in of_kind("Deployment").values():
        for container in containers(deployment):
            yield str(deployment), [str(arg) for arg in container["args"]]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                command = container.get(probe, {}).get("exec", {}).get("command", [])
                yield from _turnout_argvs(f"{deployment}:{probe}", command)
    for number, line in enumerate(_readme_shell_lines()):
        yield from _turnout_argvs(f"README.md shell line {number}", shlex.split(line, comments=True))


def _turnout_argvs(where: str, argv: list[str]) -> Iterator[tuple[str, list[str]]]:
    """The turnout invocations in a command line: turnout as the command, also after `&&` or `exec`."""
    for index, word in enumerate(argv):
        is_command = index == 0 or argv[index - 1] in {"&&", "||", ";", "exec"}
        if is_command and (word == "turnout" or word.endswith("/bin/turnout")):
            rest = argv[index + 1 :]
            end = next((i for i, arg in enumerate(rest) if arg in {"&&", "||", ";"}), len(rest))
            yield where, rest[:end]


def _readme_shell_lines() -> Iterator[str]:
    in_block = False
    for line in README.read_text().replace("\\\n", " ").splitlines():
        if line.startswith("```"):
            in_block = line.strip() == "```sh"
        elif in_block:
            yield line
