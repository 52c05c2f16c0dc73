"""`turnout run`'s supervisor: a pool that died is restarted, one that stopped on a user's
mistake (exit status 2) is not, and its reason is passed on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from schemas.config import Config
from schemas.errors import TurnoutError
from workers.supervisor import Child, Supervisor


def _supervisor(tmp_path: Path, script: str) -> Supervisor:
    config = Config.model_validate({"tiers": [{"name": "cheap", "deployments": [{"model": "openai/gpt-4o-mini"}]}]})
    supervisor = Supervisor(config, tmp_path / "turnout.yaml", {}, tmp_path)
    child = Child("pool-x", [sys.executable, "-c", script], tmp_path / "pool-x.log")
    supervisor._start(child)
    assert child.process is not None
    child.process.wait(timeout=30)
    return supervisor


def test_a_pool_that_stopped_on_a_users_mistake_is_not_restarted_and_says_why(tmp_path: Path) -> None:
    script = "import sys; print('starting'); print('turnout: error: the model file m.json is corrupt'); sys.exit(2)"
    supervisor = _supervisor(tmp_path, script)
    with pytest.raises(TurnoutError, match=r"pool-x stopped: the model file m.json is corrupt \(log: .*pool-x.log\)"):
        supervisor.check()
    assert supervisor.children[0].restarts == 0


def test_a_pool_that_died_otherwise_is_restarted(tmp_path: Path) -> None:
    supervisor = _supervisor(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert supervisor.check() == ["pool-x"]
    assert supervisor.children[0].restarts == 1
    supervisor.stop()
