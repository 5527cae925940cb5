"""`syncd check`: validate a config offline and report every problem, as text or JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from syncd.config.load import load_config
from syncd.config.model import Config, ConfigError, Problem
from syncd.core.clock import iso
from syncd.cron import CronError, CronExpr


@dataclass(frozen=True)
class CheckResult:
    path: Path
    config: Config | None  # None when there are errors
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    strict: bool = False

    @property
    def valid(self) -> bool:
        """With --strict a warning fails the check too."""
        return not self.errors and not (self.strict and self.warnings)


def run_check(
    path: Path, env: Mapping[str, str] | None = None, *, strict: bool = False
) -> CheckResult:
    try:
        cfg = load_config(path, env)
    except ConfigError as exc:
        errors = tuple(p for p in exc.problems if p.severity != "warning")
        warnings = tuple(p for p in exc.problems if p.severity == "warning")
        return CheckResult(path, None, errors, warnings, strict)
    return CheckResult(path, cfg, (), cfg.warnings, strict)


def render_text(result: CheckResult) -> list[str]:
    """One problem per line (key path first), then a one-line verdict."""
    lines = [str(p) for p in result.errors] + [str(p) for p in result.warnings]
    cfg = result.config
    if cfg is not None and result.valid:
        routes = sum(len(s.routes) for s in cfg.sources.values())
        lines.append(
            f"{result.path}: OK, {len(cfg.sources)} sources, {routes} routes, "
            f"{len(cfg.schedules)} schedules, {len(result.warnings)} warning(s)"
        )
    else:
        strict = " (--strict: warnings count as errors)" if result.strict else ""
        lines.append(
            f"{result.path}: invalid, {len(result.errors)} error(s), "
            f"{len(result.warnings)} warning(s){strict}"
        )
    return lines


def render_json(result: CheckResult, now: datetime) -> dict[str, Any]:
    """The --json document; `next_fire` is computed from `now`."""
    cfg = result.config
    out: dict[str, Any] = {
        "valid": result.valid,
        "errors": [str(p) for p in result.errors],
        "warnings": [str(p) for p in result.warnings],
        "sources": [],
        "routes": 0,
        "schedules": [],
    }
    if cfg is None:
        return out
    out["sources"] = [
        {
            "name": s.name,
            "routes": len(s.routes),
            "fallback": s.fallback,
            "max_concurrent": s.max_concurrent,
        }
        for s in cfg.sources.values()
    ]
    out["routes"] = sum(len(s.routes) for s in cfg.sources.values())
    out["schedules"] = [
        {
            "name": s.name,
            "cron": s.cron,
            "timezone": s.timezone,
            "source": s.source,
            "sync_type": s.sync_type,
            "enabled": s.enabled,
            "next_fire": _next_fire(s.cron, s.timezone, now) if s.enabled else None,
        }
        for s in cfg.schedules
    ]
    return out


def _next_fire(cron: str, timezone: str, now: datetime) -> str | None:
    try:
        return iso(CronExpr.parse(cron).next_after(now, ZoneInfo(timezone)))
    except CronError:  # validated at load; only a bounded search giving up lands here
        return None
