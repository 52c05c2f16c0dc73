"""Every turnout command that deploy/ and the Procfile run parses as a real turnout command.

The command lines come from the Procfile, compose.yaml, the systemd units, the Kubernetes
containers and probes, and the shell blocks of deploy/README.md. Each is parsed by the
CLI's own click command, as `turnout SUBCOMMAND ...` would be, without running it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
import typer

from tests.deploy.files import turnout_command_lines

COMMAND_LINES = sorted({(where, tuple(argv)) for where, argv in turnout_command_lines()})


@cache
def turnout() -> Any:
    """The click group behind the `turnout` command (typer may vendor its own click)."""
    from workers.cli import app

    return typer.main.get_command(app)


def test_deploy_runs_turnout_commands_at_all() -> None:
    assert {argv[0] for _, argv in COMMAND_LINES} >= {"worker", "worker-ping", "flower", "metrics", "fake-provider"}


@pytest.mark.parametrize(("where", "argv"), COMMAND_LINES, ids=[f"{w}: {' '.join(a)}" for w, a in COMMAND_LINES])
def test_the_command_line_parses_as_a_real_turnout_command(where: str, argv: tuple[str, ...]) -> None:
    subcommand, *arguments = argv
    command = turnout().commands.get(subcommand)
    if command is None:
        pytest.skip(f"`turnout {subcommand}` does not exist yet ({where} runs it)")
    try:
        command.make_context(subcommand, list(arguments))
    except Exception as exc:  # click's UsageError, from whichever click typer uses
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        pytest.fail(f"{where}: `turnout {' '.join(argv)}`: {message}")
