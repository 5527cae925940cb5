"""`syncd check`: validate a config offline and report every problem, as text or JSON."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from syncd.config.load import load_config
from syncd.config.model import Config, ConfigError, Problem, Route
from syncd.core.clock import iso
from syncd.cron import CronError, CronExpr
from syncd.pool.probe import (
    PROBE_TIMEOUT_SECONDS,
    Listing,
    ProbeKey,
    executable_problem,
    list_commands,
)


@dataclass(frozen=True)
class PrefixProbe:
    """One `<prefix> help --commands` asked, and the routes its answer was checked for."""

    key: ProbeKey
    routes: tuple[Route, ...]
    listing: Listing

    @property
    def where(self) -> str:
        return f"'{shlex.join(self.key.prefix)}' in {self.key.cwd or Path.cwd()}"


@dataclass(frozen=True)
class ProbeReport:
    prefixes: tuple[PrefixProbe, ...] = ()
    executables_checked: int = 0
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class CheckResult:
    path: Path
    config: Config | None  # None when there are errors
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    strict: bool = False
    probe_asked: bool = False
    probe: ProbeReport | None = field(default=None)  # None unless asked and the config loads

    @property
    def valid(self) -> bool:
        """With --strict a warning fails the check too."""
        return not self.errors and not (self.strict and self.warnings)


def run_check(
    path: Path,
    env: Mapping[str, str] | None = None,
    *,
    strict: bool = False,
    probe: bool = False,
    probe_timeout: float = PROBE_TIMEOUT_SECONDS,
) -> CheckResult:
    try:
        cfg = load_config(path, env)
    except ConfigError as exc:
        errors = tuple(p for p in exc.problems if p.severity != "warning")
        warnings = tuple(p for p in exc.problems if p.severity == "warning")
        return CheckResult(path, None, errors, warnings, strict, probe)
    if not probe:
        return CheckResult(path, cfg, (), cfg.warnings, strict)
    report = run_probe(cfg, os.environ if env is None else env, probe_timeout)
    return CheckResult(path, cfg, report.problems, cfg.warnings, strict, True, report)


def run_probe(
    cfg: Config, env: Mapping[str, str], timeout: float = PROBE_TIMEOUT_SECONDS
) -> ProbeReport:
    """Ask each distinct manage.py prefix for its commands once and report every route whose
    command is not among them; check every other route's executable as a spawn would."""
    groups: dict[ProbeKey, list[tuple[Route, str]]] = {}
    problems: list[Problem] = []
    others = 0
    for source in cfg.sources.values():
        for route in source.routes.values():
            found = ProbeKey.of(route)
            if found is None:
                others += 1
                why = executable_problem(route, env)
                if why is not None:
                    problems.append(Problem(route.key_path, why))
            else:
                groups.setdefault(found[0], []).append((route, found[1]))
    prefixes = []
    for key, members in groups.items():
        done = PrefixProbe(key, tuple(r for r, _ in members), list_commands(key, env, timeout))
        prefixes.append(done)
        problems += _prefix_problems(done, members)
    order = {r.key_path: i for i, r in enumerate(_routes(cfg))}
    problems.sort(key=lambda p: order.get(p.path, len(order)))
    return ProbeReport(tuple(prefixes), others, tuple(problems))


def _prefix_problems(done: PrefixProbe, members: list[tuple[Route, str]]) -> list[Problem]:
    listing = done.listing
    if listing.error is not None:
        more = len(members) - 1
        also = f" (and {more} more route(s) with this prefix)" if more else ""
        return [
            Problem(
                members[0][0].key_path,
                f"cannot ask {done.where} for its commands{also}: {listing.error}",
            )
        ]
    missing = [(r, c) for r, c in members if c not in listing.commands]
    if missing and listing.core_only:
        return [
            Problem(
                missing[0][0].key_path,
                f"{done.where} lists only Django's own commands: the project's settings did "
                "not load (check DJANGO_SETTINGS_MODULE, cwd, env and env_file)",
            )
        ]
    return [
        Problem(r.key_path, f"command {c!r} is not a command of {done.where}") for r, c in missing
    ]


def _routes(cfg: Config) -> list[Route]:
    return [r for s in cfg.sources.values() for r in s.routes.values()]


def probe_lines(report: ProbeReport) -> list[str]:
    """What the probe asked and what it found, one line per prefix."""
    lines = []
    for p in report.prefixes:
        n = len(p.routes)
        if p.listing.error is None:
            got = f"{len(p.listing.commands)} commands listed, {n} route(s) checked"
        else:
            got = f"no answer, {n} route(s) not checked"
        lines.append(f"probe: {p.where} help --commands: {got}")
    if report.executables_checked:
        lines.append(f"probe: {report.executables_checked} other route(s): executable checked")
    return lines


def render_text(result: CheckResult) -> list[str]:
    """One problem per line (key path first), the probe's summary, then a one-line verdict."""
    lines = [str(p) for p in result.errors] + [str(p) for p in result.warnings]
    if result.probe is not None:
        lines += probe_lines(result.probe)
    elif result.probe_asked:
        lines.append("probe: not run (fix the errors above first)")
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
    if result.probe_asked:
        out["probe"] = None if result.probe is None else _probe_json(result.probe)
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


def _probe_json(report: ProbeReport) -> dict[str, Any]:
    return {
        "prefixes": [
            {
                "argv": p.key.argv,
                "cwd": str(p.key.cwd or Path.cwd()),
                "routes": [r.key_path for r in p.routes],
                "commands": None if p.listing.error else sorted(p.listing.commands),
                "error": p.listing.error,
            }
            for p in report.prefixes
        ],
        "executables_checked": report.executables_checked,
    }
