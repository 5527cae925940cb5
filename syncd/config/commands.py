"""What a route's argv calls: the `manage.py` prefix and the Django command after it, or for
any other route its last word. The probe asks each prefix what it can run; the Celery beat
import matches task names against these command names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

MANAGE_PY = "manage.py"


def manage_py_split(argv: Sequence[str]) -> tuple[tuple[str, ...], str] | None:
    """(the argv through `manage.py`, the command word after it), or None when the route
    does not run a management command (`manage.py` absent, or last with nothing after)."""
    for i, word in enumerate(argv[:-1]):
        if PurePosixPath(word).name == MANAGE_PY:
            return tuple(argv[: i + 1]), argv[i + 1]
    return None


def command_name(argv: Sequence[str]) -> str:
    """The management command of a `manage.py` route, else the route's last argv word."""
    split = manage_py_split(argv)
    return split[1] if split is not None else argv[-1]
