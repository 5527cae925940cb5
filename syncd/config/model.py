"""TOML → frozen dataclasses. Every problem names its TOML key path and echoes the bad value,
and the loader reports every problem it finds, so one `syncd check` run shows them all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from syncd.core.models import OnShutdown, Overlap


@dataclass(frozen=True)
class Problem:
    """One config problem: `path` is the TOML key path (`sources.crm.routes.contacts`)."""

    path: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{prefix}{self.path}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; `problems` lists every error found (not just the first),
    then the warnings (severity "warning") found along the way."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


@dataclass(frozen=True)
class DaemonSettings:
    max_workers: int = 2
    stale_minutes: float = 30.0
    retention_minutes: float = 60.0
    history_days: float = 30.0
    prune_at: str = "30 3 * * *"
    state_dir: Path = Path()
    socket: Path = Path()
    socket_mode: int = 0o660
    kill_grace_seconds: float = 10.0
    heartbeat_seconds: float = 5.0
    default_priority: int = 5
    log_max_bytes: int = 10 * 1024 * 1024
    on_shutdown: OnShutdown = OnShutdown.REQUEUE
    max_lost_requeues: int = 3
    control_group: str | None = None
    probe_on_start: bool = False  # run `syncd check --probe`'s probe; refuse to start on a miss


# Placeholders a route's argv may hold, replaced at spawn by the time of the last completed
# task of the same route and params (ISO 8601 UTC); every other brace stays literal.
LAST_SUCCESS_STARTED = "{last_success_started_at}"
LAST_SUCCESS_FINISHED = "{last_success_finished_at}"
WATERMARKS = (LAST_SUCCESS_STARTED, LAST_SUCCESS_FINISHED)


@dataclass(frozen=True)
class WebSettings:
    """`[web]`: what `syncd web` serves and to whom (the daemon never reads it)."""

    host: str = "127.0.0.1"
    port: int = 8790
    actions: bool = False
    token_file: Path | None = None
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]")
    base_path: str = "/"
    trust_proxy: bool = False

    @property
    def listen(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Route:
    """What runs for one (source, sync_type): the full argv and its inherited settings."""

    source: str
    sync_type: str
    argv: tuple[str, ...]
    cwd: Path | None
    env: Mapping[str, str]
    env_file: Path | None
    timeout_minutes: float
    retries: int
    retry_backoff_seconds: float
    allowed_params: tuple[str, ...]
    priority: int
    key_path: str  # e.g. "sources.crm.routes.contacts", for messages
    freshness_minutes: float | None = None  # stale when the last success started longer ago
    watermark_default: str | None = None  # what WATERMARKS become before any success
    max_deferrals: int = 5  # deferrals in a row before the task fails


RATE_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Rate:
    """At most `count` starts of a source's tasks in any window of `seconds`."""

    count: int
    unit: str

    @property
    def seconds(self) -> int:
        return RATE_UNITS[self.unit]

    def __str__(self) -> str:
        return f"{self.count}/{self.unit}"


@dataclass(frozen=True)
class Breaker:
    """Open after `failures` failed attempts in a row; try one task after the cooldown."""

    failures: int
    cooldown_minutes: float


@dataclass(frozen=True)
class Source:
    name: str
    max_concurrent: int | None
    fallback: str | None
    routes: Mapping[str, Route]
    rate: Rate | None = None
    breaker: Breaker | None = None


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    source: str
    sync_type: str
    timezone: str = "UTC"
    priority: int | None = None
    overlap: Overlap = Overlap.SKIP
    catch_up: bool = True
    starting_deadline_seconds: float | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    enabled: bool = True


@dataclass(frozen=True)
class Config:
    path: Path | None
    daemon: DaemonSettings
    sources: Mapping[str, Source]
    schedules: tuple[Schedule, ...]
    web: WebSettings = field(default_factory=WebSettings)
    warnings: tuple[Problem, ...] = ()
    # where each [daemon] setting came from: "default" | "file" | "env"
    origins: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
