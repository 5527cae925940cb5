"""Sources and routes from TOML: `[defaults]` → `[sources.X]` → route inheritance, and the
load-time checks that make a route to a missing executable an error now, not at 3 a.m."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from syncd.config.model import (
    RATE_UNITS,
    WATERMARKS,
    Breaker,
    DaemonSettings,
    Rate,
    Route,
    Source,
)
from syncd.config.toml import Checker, join

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")  # source names and sync types, after lower()
INHERITED = (
    "command_prefix", "cwd", "env", "env_file", "timeout_minutes", "retries",
    "retry_backoff_seconds", "allowed_params", "priority", "freshness_minutes",
    "watermark_default", "max_deferrals",
)  # fmt: skip
SOURCE_ONLY = ("max_concurrent", "fallback", "routes", "rate", "breaker")
DEFAULT_MAX_DEFERRALS = 5
RATE_RE = re.compile(r"\s*([0-9]+)\s*/\s*([a-z]+)\s*")
DEFAULT_TIMEOUT_MINUTES = 120.0
DEFAULT_BACKOFF_SECONDS = 60.0

# A layer of inherited settings: key -> (value, key path where it was set).
Layer = dict[str, tuple[Any, str]]


class RouteBuilder:
    def __init__(self, c: Checker, env: Mapping[str, str], daemon: DaemonSettings):
        self.c = c
        self.env = env
        self.daemon = daemon
        self.seen_paths: set[str] = set()  # each inherited value is checked once, where set

    def layer(self, path: str, raw: Mapping[str, Any]) -> Layer:
        """The inheritable keys set in one table, validated, each with its key path."""
        c = self.c
        out: Layer = {}
        for key in INHERITED:
            if key not in raw:
                continue
            kpath, v = f"{path}.{key}", raw[key]
            value: Any
            if key == "command_prefix":
                value = c.string_list(kpath, v)
            elif key in ("cwd", "env_file"):
                value = c.path(kpath, v)
            elif key == "env":
                value = c.env_table(kpath, v)
            elif key == "timeout_minutes":
                value = c.positive(kpath, v)
            elif key == "retries":
                value = c.integer(kpath, v, 0, None)
            elif key == "retry_backoff_seconds":
                value = c.number(kpath, v, minimum=0.0)  # 0 = retry at once
            elif key == "allowed_params":
                value = c.param_names(kpath, v)
            elif key == "freshness_minutes":
                value = c.positive(kpath, v)
            elif key == "watermark_default":
                value = c.argv_word(kpath, v)
            elif key == "max_deferrals":
                value = c.integer(kpath, v, 0, None)
            else:
                value = c.integer(kpath, v, 0, 9)
            if value is not None:
                out[key] = (value, kpath)
        return out

    def source(self, name: str, path: str, raw: Any, defaults: Layer) -> Source | None:
        c = self.c
        table = c.table(path, raw)
        if table is None:
            return None
        c.keys(path, table, INHERITED + SOURCE_ONLY)
        layer = merge(defaults, self.layer(path, table))
        max_concurrent = None
        if "max_concurrent" in table:
            max_concurrent = c.integer(f"{path}.max_concurrent", table["max_concurrent"], 1, None)
        if "routes" not in table:
            c.error(path, "missing key 'routes'")
            return None
        routes_path = f"{path}.routes"
        routes_raw = c.table(routes_path, table["routes"])
        if routes_raw is None:
            return None
        if not routes_raw:
            c.error(routes_path, "a source needs at least one route")
        routes: dict[str, Route] = {}
        for key, value in routes_raw.items():
            rpath = join(routes_path, key)
            stype = key.strip().lower()
            if not NAME_RE.fullmatch(stype):
                c.error(rpath, f"sync type {key!r} must match [a-z0-9][a-z0-9_.-]*")
            elif stype in routes:
                c.error(rpath, f"duplicate sync type {stype!r} (names are case-insensitive)")
            else:
                route = self.route(name, stype, rpath, value, layer)
                if route is not None:
                    routes[stype] = route
        fallback = None
        if "fallback" in table:
            text = c.string(f"{path}.fallback", table["fallback"])
            if text is not None:
                fallback = text.strip().lower()
                declared = {k.strip().lower() for k in routes_raw}
                if fallback not in declared:
                    known = ", ".join(sorted(declared)) or "none"
                    c.error(
                        f"{path}.fallback",
                        f"{text!r} is not a route of source {name!r} (routes: {known})",
                    )
        rate = self.rate(f"{path}.rate", table["rate"]) if "rate" in table else None
        breaker = self.breaker(f"{path}.breaker", table["breaker"]) if "breaker" in table else None
        return Source(name, max_concurrent, fallback, MappingProxyType(routes), rate, breaker)

    def rate(self, path: str, raw: Any) -> Rate | None:
        """`"N/unit"`: at most N starts in any window of one unit."""
        units = "|".join(RATE_UNITS)
        match = RATE_RE.fullmatch(raw) if isinstance(raw, str) else None
        if match is None or match.group(2) not in RATE_UNITS:
            self.c.error(path, f'expected "N/{units}", got {self.c.show(raw)}')
            return None
        count = int(match.group(1))
        if count < 1:
            self.c.error(path, f"{raw!r}: N must be at least 1")
            return None
        return Rate(count, match.group(2))

    def breaker(self, path: str, raw: Any) -> Breaker | None:
        """`{ failures = N, cooldown_minutes = M }`, both required."""
        c = self.c
        table = c.table(path, raw)
        if table is None:
            return None
        c.keys(path, table, ("failures", "cooldown_minutes"))
        for key in ("failures", "cooldown_minutes"):
            if key not in table:
                c.error(path, f"missing key {key!r}")
        failures = cooldown = None
        if "failures" in table:
            failures = c.integer(f"{path}.failures", table["failures"], 1, None)
        if "cooldown_minutes" in table:
            cooldown = c.positive(f"{path}.cooldown_minutes", table["cooldown_minutes"])
        if failures is None or cooldown is None:
            return None
        return Breaker(failures, cooldown)

    def route(self, source: str, stype: str, path: str, raw: Any, inherited: Layer) -> Route | None:
        c = self.c
        if isinstance(raw, str):
            raw, own, cmd_path = {"command": raw}, {}, path
        elif isinstance(raw, dict):
            c.keys(path, raw, ("command", "argv", *INHERITED))
            own, cmd_path = self.layer(path, raw), f"{path}.command"
        else:
            c.error(path, f"expected a command string or a table, got {c.show(raw)}")
            return None
        merged = merge(inherited, own)
        argv: tuple[str, ...] | None = None
        if "command" in raw and "argv" in raw:
            c.error(path, "give either command or argv, not both")
        elif "argv" in raw:
            argv = c.string_list(f"{path}.argv", raw["argv"], nonempty=True)
            if "command_prefix" in own:
                c.error(f"{path}.command_prefix", "has no effect on an argv route; remove it")
        elif "command" in raw:
            command = c.command_word(cmd_path, raw["command"])
            if command is not None:
                argv = (*value(merged, "command_prefix", ()), command)
        else:
            c.error(path, "needs a command or an argv")
        if argv is None:
            return None
        cwd: Path | None = value(merged, "cwd", None)
        env: dict[str, str] = value(merged, "env", {})
        self.check_executable(path, argv[0], cwd, env.get("PATH", self.env.get("PATH", "")))
        self.check_paths(merged)
        self.check_timeout(merged)
        self.check_watermark(path, argv, merged)
        return Route(
            source=source,
            sync_type=stype,
            argv=argv,
            cwd=cwd,
            env=MappingProxyType(dict(env)),
            env_file=value(merged, "env_file", None),
            timeout_minutes=value(merged, "timeout_minutes", DEFAULT_TIMEOUT_MINUTES),
            retries=value(merged, "retries", 0),
            retry_backoff_seconds=value(merged, "retry_backoff_seconds", DEFAULT_BACKOFF_SECONDS),
            allowed_params=value(merged, "allowed_params", ()),
            priority=value(merged, "priority", self.daemon.default_priority),
            key_path=path,
            freshness_minutes=value(merged, "freshness_minutes", None),
            watermark_default=value(merged, "watermark_default", None),
            max_deferrals=value(merged, "max_deferrals", DEFAULT_MAX_DEFERRALS),
        )

    def check_executable(self, path: str, argv0: str, cwd: Path | None, search: str) -> None:
        """argv[0] as the runner will exec it: a path (relative to cwd) or a PATH lookup."""
        if "/" in argv0:
            exe = Path(argv0)
            base = cwd or Path.cwd()
            where = "" if exe.is_absolute() else f" (relative to {base})"
            exe = exe if exe.is_absolute() else base / exe
            if not exe.is_file():
                self.c.error(path, f"executable {argv0!r} not found{where}")
            elif not os.access(exe, os.X_OK):
                self.c.error(path, f"executable {argv0!r} is not executable{where}")
        elif shutil.which(argv0, path=search or os.defpath) is None:
            self.c.error(path, f"executable {argv0!r} not found")

    def check_paths(self, merged: Layer) -> None:
        """A missing cwd/env_file is a warning (the catalog must check on any machine),
        reported once, at the key where it is set."""
        for key, kind in (("cwd", "directory"), ("env_file", "file")):
            if key not in merged or merged[key][1] in self.seen_paths:
                continue
            where, kpath = merged[key]
            self.seen_paths.add(kpath)
            exists = where.is_dir() if key == "cwd" else where.is_file()
            if not exists:
                self.c.warn(kpath, f"{kind} '{where}' does not exist")

    def check_watermark(self, path: str, argv: tuple[str, ...], merged: Layer) -> None:
        """A route whose argv takes the last success's time must say what the first run
        (before any success) gets: guessing one could skip or re-read years of data."""
        used = [p for p in WATERMARKS if any(p in word for word in argv)]
        if used and "watermark_default" not in merged:
            self.c.error(
                f"{path}.watermark_default",
                f"required: the argv uses {used[0]}; set the value the first run gets "
                'before any run completed (e.g. "1970-01-01T00:00:00Z")',
            )

    def check_timeout(self, merged: Layer) -> None:
        """A timeout shorter than the kill grace could never let SIGTERM take effect."""
        if "timeout_minutes" not in merged or merged["timeout_minutes"][1] in self.seen_paths:
            return
        minutes, kpath = merged["timeout_minutes"]
        self.seen_paths.add(kpath)
        grace = self.daemon.kill_grace_seconds
        if minutes * 60 < grace:
            self.c.error(
                kpath, f"{minutes:g} min is shorter than daemon.kill_grace_seconds ({grace:g} s)"
            )


def merge(base: Layer, over: Layer) -> Layer:
    """Later layers win key by key; `env` tables merge variable by variable."""
    out = dict(base)
    for key, (val, path) in over.items():
        if key == "env" and "env" in base:
            out[key] = ({**base["env"][0], **val}, path)
        else:
            out[key] = (val, path)
    return out


def value(layer: Layer, key: str, default: Any) -> Any:
    return layer[key][0] if key in layer else default
