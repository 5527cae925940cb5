"""Crash points for the fault tests: a process started with SYNCD_FAILPOINT=<name> dies on
the spot (exit 99) when it reaches that point, so a test can kill the daemon exactly between
two writes; `error:<name>` makes that step fail instead (see injected_error)."""

from __future__ import annotations

import os

_FAILPOINT = os.environ.get("SYNCD_FAILPOINT")


def failpoint(name: str) -> None:
    """Die on the spot (exit 99) when SYNCD_FAILPOINT names this point: crash tests."""
    if name == _FAILPOINT:
        os._exit(99)


def injected_error(name: str) -> bool:
    """True when SYNCD_FAILPOINT=error:<name>: the caller fails that step as its I/O would."""
    return f"error:{name}" == _FAILPOINT
