"""Strict typed readers for parsed TOML values. Each records a problem that names the key path
and echoes the bad value, and returns None, so the loader can go on and report them all."""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Collection
from enum import Enum
from pathlib import Path
from typing import Any

from syncd.cron import CronError, CronExpr

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PARAM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
OCTAL_MODE_RE = re.compile(r"0?[0-7]{3}")
BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
TYPE_NAMES = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
              dict: "table"}  # fmt: skip


def join(path: str, key: str) -> str:
    """`path.key`, quoting a key TOML would quote (`sources."a b"`)."""
    shown = key if BARE_KEY_RE.fullmatch(key) else json.dumps(key)
    return f"{path}.{shown}" if path else shown


def label(index: int, item: Any) -> str:
    """`schedules[3] (name)`: the array index (0-based) plus the name when there is one."""
    name = item.get("name") if isinstance(item, dict) else None
    return f"schedules[{index}]" + (f" ({name})" if isinstance(name, str) and name else "")


INT64_MAX = 2**63 - 1
# Ten years in each unit a duration key ends in (`kill_grace_seconds`, `stale_minutes`, ...).
DURATION_MAX = {"seconds": 315_360_000.0, "minutes": 5_256_000.0, "days": 3_650.0}


class Checker:
    """Collects (key path, message) errors and warnings; relative paths join `base_dir`."""

    def __init__(self, base_dir: Path, home: str | None = None) -> None:
        self.base_dir = base_dir
        self.home = home
        self.errors: list[tuple[str, str]] = []
        self.warnings: list[tuple[str, str]] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append((path, message))

    @staticmethod
    def show(value: Any) -> str:
        """The bad value as the operator wrote it, plus its TOML type."""
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = f"{value}"
        else:
            text = repr(value)
        if len(text) > 60:
            text = text[:57] + "..."
        kind = TYPE_NAMES.get(type(value), type(value).__name__)
        return f"{text} ({kind})"

    def keys(self, path: str, table: dict[str, Any], allowed: Collection[str]) -> None:
        """Unknown keys are errors at every level: a typo must not be silently ignored."""
        for key in table:
            if key in allowed:
                continue
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.error(join(path, key), f"unknown key{hint}")

    def table(self, path: str, value: Any) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.error(path, f"expected a table, got {self.show(value)}")
        return None

    def integer(self, path: str, value: Any, lo: int | None, hi: int | None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"expected an integer, got {self.show(value)}")
            return None
        if hi is None and value > INT64_MAX:  # SQLite's integers: a bigger one cannot be stored
            self.error(path, f"{value} is out of range (at most {INT64_MAX})")
            return None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"{lo}..{hi}" if hi is not None else f"{lo}.. (at least {lo})"
            self.error(path, f"{value} is out of range {span}")
            return None
        return value

    def number(self, path: str, value: Any, *, minimum: float) -> float | None:
        """Durations: int or float, finite, >= minimum."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(path, f"expected a number, got {self.show(value)}")
            return None
        if not math.isfinite(value) or value < minimum:
            self.error(path, f"{value} is out of range (must be >= {minimum:g})")
            return None
        return self._within_ten_years(path, float(value))

    def positive(self, path: str, value: Any) -> float | None:
        """Durations that must be above 0, at most ten years in the key's unit."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(path, f"expected a number, got {self.show(value)}")
            return None
        if not math.isfinite(value) or value <= 0:
            self.error(path, f"{value} is not a positive number")
            return None
        return self._within_ten_years(path, float(value))

    def _within_ten_years(self, path: str, value: float) -> float | None:
        """A duration past ten years is a typo, and past about 2.7 million years every
        timedelta built from it overflows at run time (a task's end, a prune, a reload)."""
        unit = path.rsplit("_", 1)[-1].lower()  # also an env variable: WORKER_POOL_STALE_MINUTES
        cap = DURATION_MAX.get(unit)
        assert cap is not None, f"{path}: a duration key names its unit"
        if value > cap:
            self.error(path, f"{value:g} is out of range (at most {cap:g} {unit}: ten years)")
            return None
        return value

    def string(self, path: str, value: Any) -> str | None:
        if not isinstance(value, str):
            self.error(path, f"expected a string, got {self.show(value)}")
            return None
        if not value.strip():
            self.error(path, "must not be empty")
            return None
        return value

    def boolean(self, path: str, value: Any) -> bool | None:
        if not isinstance(value, bool):
            self.error(path, f"expected true or false, got {self.show(value)}")
            return None
        return value

    def enum(self, path: str, value: Any, kind: type[Enum]) -> Any:
        choices = [str(m.value) for m in kind]
        if not isinstance(value, str) or value not in choices:
            self.error(path, f"expected one of {', '.join(choices)}, got {self.show(value)}")
            return None
        return kind(value)

    def string_list(
        self, path: str, value: Any, *, nonempty: bool = False
    ) -> tuple[str, ...] | None:
        if not isinstance(value, list):
            self.error(path, f"expected an array of strings, got {self.show(value)}")
            return None
        if nonempty and not value:
            self.error(path, "must not be empty")
            return None
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item or "\0" in item:
                self.error(f"{path}[{i}]", f"expected a non-empty string, got {self.show(item)}")
                ok = False
        return tuple(value) if ok else None

    def env_table(self, path: str, value: Any) -> dict[str, str] | None:
        table = self.table(path, value)
        if table is None:
            return None
        out: dict[str, str] = {}
        for key, item in table.items():
            kpath = join(path, key)
            if not ENV_NAME_RE.fullmatch(key):
                self.error(kpath, f"{key!r} is not a valid environment variable name")
            elif not isinstance(item, str) or "\0" in item:
                self.error(kpath, f"expected a string, got {self.show(item)}")
            else:
                out[key] = item
        return out if len(out) == len(table) else None

    def param_names(self, path: str, value: Any) -> tuple[str, ...] | None:
        names = self.string_list(path, value)
        if names is None:
            return None
        bad = [n for n in names if not PARAM_NAME_RE.fullmatch(n)]
        for name in bad:
            self.error(path, f"{name!r} is not a valid parameter name ([A-Za-z0-9][A-Za-z0-9_.-]*)")
        return None if bad else names

    def command_word(self, path: str, value: Any) -> str | None:
        """A string route is one argv word: spaces would become part of the program's name."""
        text = self.string(path, value)
        if text is None:
            return None
        if any(ch.isspace() or ord(ch) < 32 for ch in text):
            self.error(path, f"command {text!r} must be one word; use argv = [...] for arguments")
            return None
        return text

    def argv_word(self, path: str, value: Any) -> str | None:
        """A string that becomes (part of) one argv element: no control characters."""
        text = self.string(path, value)
        if text is None:
            return None
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
            self.error(path, f"{text!r} must not contain control characters")
            return None
        return text

    def octal_mode(self, path: str, value: Any) -> int | None:
        if not isinstance(value, str) or not OCTAL_MODE_RE.fullmatch(value):
            self.error(path, f'expected an octal string like "0660", got {self.show(value)}')
            return None
        return int(value, 8)

    def parse_env_number(self, var: str, text: str, *, integer: bool) -> int | float | None:
        """An environment override as the number it spells; the range is checked later."""
        try:
            return int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            self.error(f"env {var}", f"{text!r} is not {kind}")
            return None

    def path(self, path: str, value: Any) -> Path | None:
        """A path in the file: `~` is the home dir, relative means relative to the file's folder."""
        text = self.string(path, value)
        if text is None:
            return None
        if text == "~" or text.startswith("~/"):
            home = Path(self.home) if self.home else Path.home()
            return home / text[2:]
        return self.base_dir / text  # an absolute `text` replaces base_dir

    def cron(self, path: str, value: Any) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        try:
            CronExpr.parse(text)
        except CronError as exc:
            self.error(path, str(exc))
            return None
        return text
