"""Paths the user names, checked before any work starts, so a typo costs one sentence."""

from __future__ import annotations

from pathlib import Path

from schemas.errors import TurnoutError


def input_file(path: str | Path, what: str = "input file", hint: str = "") -> Path:
    """``path`` when it names a file; else one sentence saying it is missing or a folder."""
    path = Path(path)
    if path.is_file():
        return path
    problem = "is a folder" if path.is_dir() else "not found"
    raise TurnoutError(f"{what} {path} {problem}" + (f"; {hint}" if hint else ""))
