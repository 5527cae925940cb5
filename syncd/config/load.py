"""Builds a Config from parsed TOML: `[daemon]` with its env overrides and default paths, the
sources (configroutes) and the schedules, checked against the routes they name."""

from __future__ import annotations

import grp
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from syncd.config.model import Config, ConfigError, DaemonSettings, Problem, Schedule, Source
from syncd.config.routes import INHERITED, NAME_RE, RouteBuilder
from syncd.config.routing import RouteTable
from syncd.config.toml import Checker, join, label
from syncd.config.web import web_settings
from syncd.core import paths
from syncd.core.errors import SyncdError
from syncd.core.models import ErrorCode, OnShutdown, Overlap

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SCHEDULE_NAME_RE = re.compile(r"[a-z0-9_.-]+")
ENV_OVERRIDES = (
    ("MAX_SYNC_WORKERS", "max_workers"),
    ("WORKER_POOL_STALE_MINUTES", "stale_minutes"),
)
SCHEDULE_KEYS = (
    "name", "cron", "source", "sync_type", "timezone", "priority", "overlap", "catch_up",
    "starting_deadline_seconds", "params", "enabled",
)  # fmt: skip
DURATIONS = ("stale_minutes", "retention_minutes", "history_days", "kill_grace_seconds",
             "heartbeat_seconds")  # fmt: skip

# sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


class Loader:
    """One load: reads the parsed TOML, records every problem in a Checker, builds a Config."""

    def __init__(self, env: Mapping[str, str], base_dir: Path):
        self.env = env
        self.c = Checker(base_dir, env.get("HOME") or None)

    def load(self, raw: dict[str, Any]) -> Config | None:
        c = self.c
        c.keys("", raw, ("daemon", "defaults", "sources", "schedules", "web"))
        daemon, origins = self.daemon(c.table("daemon", raw.get("daemon", {})) or {})
        builder = RouteBuilder(c, self.env, daemon)
        defaults_raw = c.table("defaults", raw.get("defaults", {})) or {}
        c.keys("defaults", defaults_raw, INHERITED)
        defaults = builder.layer("defaults", defaults_raw)
        sources: dict[str, Source] = {}
        broken: set[str] = set()  # sources with errors: schedules naming them are not re-judged
        for key, value in (c.table("sources", raw.get("sources", {})) or {}).items():
            path = join("sources", key)
            name = key.strip().lower()
            if not NAME_RE.fullmatch(name):
                c.error(path, f"source name {key!r} must match [a-z0-9][a-z0-9_.-]*")
            elif name in sources or name in broken:
                c.error(path, f"duplicate source {name!r} (names are case-insensitive)")
            else:
                before = len(c.errors)
                src = builder.source(name, path, value, defaults)
                if src is not None:
                    sources[name] = src
                if src is None or len(c.errors) > before:
                    broken.add(name)
        schedules = self.schedules(raw.get("schedules", []), sources, broken)
        web = web_settings(c, c.table("web", raw.get("web", {})) or {})
        if c.errors:
            return None
        return Config(
            path=None,
            daemon=daemon,
            sources=MappingProxyType(sources),
            schedules=tuple(schedules),
            web=web,
            origins=MappingProxyType(origins),
        )

    # -- [daemon] ------------------------------------------------------------------------------
    def daemon(self, raw: dict[str, Any]) -> tuple[DaemonSettings, dict[str, str]]:
        c = self.c
        names = [f.name for f in fields(DaemonSettings)]
        c.keys("daemon", raw, names)
        values: dict[str, Any] = {}
        origins = dict.fromkeys(names, "default")
        for key in names:
            if key in raw:
                value = self.daemon_value(key, f"daemon.{key}", raw[key])
                if value is not None:
                    values[key], origins[key] = value, "file"
        for var, key in ENV_OVERRIDES:
            text = self.env.get(var, "").strip()  # set but empty counts as unset
            if text:
                number = c.parse_env_number(var, text, integer=key == "max_workers")
                value = None if number is None else self.daemon_value(key, f"env {var}", number)
                if value is not None:
                    values[key], origins[key] = value, "env"
        values.setdefault("state_dir", paths.default_state_dir(self.env))
        values.setdefault("socket", paths.default_socket(self.env, values["state_dir"]))
        settings = DaemonSettings(**values)
        if len(os.fsencode(settings.socket)) > MAX_SOCKET_PATH:
            c.error(
                "daemon.socket",
                f"'{settings.socket}' is longer than {MAX_SOCKET_PATH} bytes, "
                "the limit of a Unix socket path",
            )
        if settings.stale_minutes * 60 < 3 * settings.heartbeat_seconds:
            path = "daemon.stale_minutes"
            if origins["stale_minutes"] == "env":
                path = "env WORKER_POOL_STALE_MINUTES"
            floor = 3 * settings.heartbeat_seconds / 60
            c.error(
                path,
                f"{settings.stale_minutes:g} is below 3 x daemon.heartbeat_seconds "
                f"({floor:g} min): a live task would look stale; lower heartbeat_seconds"
                " with it",
            )
        group = settings.control_group
        if group is not None and not _group_exists(group):
            c.warn("daemon.control_group", f"group {group!r} does not exist on this system")
        return settings, origins

    def daemon_value(self, key: str, path: str, v: Any) -> Any:
        c = self.c
        if key == "max_workers":
            return c.integer(path, v, 1, 64)
        if key == "default_priority":
            return c.integer(path, v, 0, 9)
        if key == "max_lost_requeues":
            return c.integer(path, v, 0, None)
        if key == "log_max_bytes":
            return c.integer(path, v, 1024, None)
        if key == "prune_at":
            return c.cron(path, v)
        if key in ("state_dir", "socket"):
            return c.path(path, v)
        if key == "socket_mode":
            return c.octal_mode(path, v)
        if key == "on_shutdown":
            return c.enum(path, v, OnShutdown)
        if key == "control_group":
            return c.string(path, v)
        if key == "probe_on_start":
            return c.boolean(path, v)
        assert key in DURATIONS, key
        return c.positive(path, v)

    # -- [[schedules]] -------------------------------------------------------------------------
    def schedules(self, raw: Any, sources: dict[str, Source], broken: set[str]) -> list[Schedule]:
        if not isinstance(raw, list):
            self.c.error("schedules", f"expected an array of tables, got {self.c.show(raw)}")
            return []
        table = RouteTable(sources)
        names: dict[str, str] = {}
        out = [self.schedule(i, item, table, broken, names) for i, item in enumerate(raw)]
        return [s for s in out if s is not None]

    def schedule(
        self, i: int, item: Any, table: RouteTable, broken: set[str], names: dict[str, str]
    ) -> Schedule | None:
        c = self.c
        base = label(i, item)
        if not isinstance(item, dict):
            c.error(base, f"expected a table, got {c.show(item)}")
            return None
        c.keys(base, item, SCHEDULE_KEYS)
        missing = [k for k in ("name", "cron", "source") if k not in item]
        for key in missing:
            c.error(base, f"missing key {key!r}")
        name = c.string(f"{base}.name", item["name"]) if "name" in item else None
        if name is not None:
            if not SCHEDULE_NAME_RE.fullmatch(name):
                c.error(f"{base}.name", f"{name!r} must match [a-z0-9_.-]+")
            elif name in names:
                c.error(f"{base}.name", f"duplicate schedule name {name!r} (also {names[name]})")
            else:
                names[name] = f"schedules[{i}]"
        cron = c.cron(f"{base}.cron", item["cron"]) if "cron" in item else None
        tz = c.string(f"{base}.timezone", item.get("timezone", "UTC"))
        if tz is not None and not _zone_exists(tz):
            c.error(f"{base}.timezone", f"unknown timezone {tz!r}")
            tz = None
        source = c.string(f"{base}.source", item["source"]) if "source" in item else None
        stype = item.get("sync_type", "all")
        if not isinstance(stype, str):
            c.error(f"{base}.sync_type", f"expected a string, got {c.show(stype)}")
            stype = None
        params = c.table(f"{base}.params", item.get("params", {}))
        priority = None
        if "priority" in item:
            priority = c.integer(f"{base}.priority", item["priority"], 0, 9)
        overlap = c.enum(f"{base}.overlap", item.get("overlap", "skip"), Overlap)
        catch_up = c.boolean(f"{base}.catch_up", item.get("catch_up", True))
        enabled = c.boolean(f"{base}.enabled", item.get("enabled", True))
        deadline = None
        if "starting_deadline_seconds" in item:
            deadline = c.positive(
                f"{base}.starting_deadline_seconds", item["starting_deadline_seconds"]
            )
        if source is None or stype is None or params is None:
            return None
        source, stype = source.strip().lower(), stype.strip().lower() or "all"
        if source not in broken:
            self.check_resolves(base, table, source, stype, params)
        if name is None or cron is None or tz is None or overlap is None:
            return None
        if catch_up is None or enabled is None:
            return None
        return Schedule(
            name=name, cron=cron, source=source, sync_type=stype, timezone=tz, priority=priority,
            overlap=overlap, catch_up=catch_up, starting_deadline_seconds=deadline,
            params=MappingProxyType(dict(params)), enabled=enabled,
        )  # fmt: skip

    def check_resolves(
        self, base: str, table: RouteTable, source: str, stype: str, params: dict[str, Any]
    ) -> None:
        """A schedule must resolve exactly as a manual submit of it would."""
        try:
            table.resolve(source, stype, params)
        except SyncdError as exc:
            key = {ErrorCode.UNKNOWN_SOURCE: "source", ErrorCode.UNKNOWN_ROUTE: "sync_type"}
            self.c.error(f"{base}.{key.get(exc.code, 'params')}", exc.message)


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        return False
    return True


def _zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate a config file; ConfigError lists every problem."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [Problem(str(path), f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        problem = Problem(str(path), f"not UTF-8 text (byte {exc.start})")
        raise ConfigError(str(path), [problem]) from None
    path = path.absolute()
    cfg = loads_config(text, base_dir=path.parent, env=env, source_name=str(path))
    return replace(cfg, path=path)


def loads_config(
    text: str,
    *,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
    source_name: str = "<string>",
) -> Config:
    """Validate TOML text; relative paths in it are relative to `base_dir`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problem = Problem(source_name, f"TOML syntax error: {exc}")
        raise ConfigError(source_name, [problem]) from None
    loader = Loader(os.environ if env is None else env, base_dir)
    cfg = loader.load(raw)
    problems = [Problem(p, m) for p, m in loader.c.errors]
    warnings = [Problem(p, m, "warning") for p, m in loader.c.warnings]
    if problems or cfg is None:
        raise ConfigError(source_name, problems + warnings)
    return replace(cfg, warnings=tuple(warnings))
