"""Typed errors. Each carries a protocol error code so any layer can raise and the
socket layer can answer without guessing."""

from __future__ import annotations

from typing import Any

from syncd.core.models import ErrorCode


class SyncdError(Exception):
    """An error an operator or client should see: a code, a message for people, details."""

    def __init__(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out


class StoreError(SyncdError):
    """The database could not do what was asked (full disk, locked, I/O error)."""


class StoreUnusable(Exception):
    """The database file cannot be used at all (corrupt, unreadable, not writable).

    `syncd` turns this into one line naming the file and exit code 78."""

    def __init__(self, path: str, problem: str, hint: str = ""):
        super().__init__(f"{path}: {problem}" + (f" ({hint})" if hint else ""))
        self.path = path
        self.problem = problem
        self.hint = hint
