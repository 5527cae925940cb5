"""Wall-clock jumps (RELIABILITY T1, T2, P11) where the daemon decides on time.

A real process's clock cannot be moved without a VM, so the time logic is driven here with a
FakeClock whose wall and monotonic halves move apart. The scheduler's side of T1/T2 (no slot
fires twice, catch-up once) is in tests/test_schedules.py; this file pins the monitor's side:
timeouts and staleness follow the monotonic clock only."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from syncd.config.model import DaemonSettings, Route
from syncd.core.clock import FakeClock
from syncd.core.models import Status, Task
from syncd.pool.monitor import Monitor
from syncd.pool.procs import TreeSample
from syncd.pool.running import RunningTask
from syncd.pool.supervise import KILL_STALE, KILL_TIMEOUT

START = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@dataclass
class FakeLog:
    bytes_written: int = 0
    progress: str | None = None


@dataclass
class FakeChild:
    """A process that is silent (or busy, if cpu grows) as the test says."""

    log: FakeLog = field(default_factory=FakeLog)
    cpu: float = 0.0

    def sample(self) -> TreeSample:
        return TreeSample(cpu_seconds=self.cpu, io_bytes=0, rss_bytes=0, cpu_percent=0.0,
                          processes=1)  # fmt: skip


@dataclass
class FakeStore:
    beats: list[list[tuple[int, str, str | None]]] = field(default_factory=list)

    def heartbeat(self, beats: list[tuple[int, str, str | None]]) -> None:
        self.beats.append(beats)


@dataclass
class FakeDispatcher:
    """The part of Dispatcher the monitor uses: running tasks, settings, store, kill."""

    settings: DaemonSettings
    store: FakeStore = field(default_factory=FakeStore)
    cond: threading.Condition = field(default_factory=threading.Condition)
    running: dict[int, RunningTask] = field(default_factory=dict)
    kills: list[tuple[int, str, str | None]] = field(default_factory=list)

    def kill(self, task_id: int, reason: str, detail: str | None = None) -> bool:
        self.kills.append((task_id, reason, detail))
        return True

    def apply_throttle(self, rt: RunningTask) -> None:
        """These jobs print no `::throttle` line."""


def make_task(task_id: int) -> Task:
    fields: dict[str, Any] = dict.fromkeys(Task.__dataclass_fields__)
    fields.update(
        id=task_id, source="alpha", sync_type="a1", route="a1", argv=["job"], params={},
        priority=5, status=Status.RUNNING, trigger="manual", attempt=1, internal={},
    )  # fmt: skip
    return Task(**fields)


def make_route(timeout_minutes: float) -> Route:
    return Route(
        source="alpha", sync_type="a1", argv=("job",), cwd=None, env={}, env_file=None,
        timeout_minutes=timeout_minutes, retries=0, retry_backoff_seconds=60,
        allowed_params=(), priority=5, key_path="sources.alpha.routes.a1",
    )  # fmt: skip


def setup(
    clock: FakeClock, *, stale_minutes: float = 10, timeout_minutes: float = 30
) -> tuple[Monitor, FakeDispatcher, FakeChild]:
    settings = DaemonSettings(state_dir=Path("/nonexistent"), stale_minutes=stale_minutes)
    d = FakeDispatcher(settings)
    child = FakeChild()
    mono = clock.monotonic()
    rt = RunningTask(
        task=make_task(1), route=make_route(timeout_minutes), started_mono=mono,
        last_progress_mono=mono, child=child,  # type: ignore[arg-type]
    )  # fmt: skip
    d.running[1] = rt
    return Monitor(d, clock), d, child  # type: ignore[arg-type]


@pytest.mark.parametrize("jump", [timedelta(hours=3), timedelta(hours=-1), timedelta(days=400)])
def test_wall_jumps_neither_time_out_nor_stale_a_task(jump: timedelta) -> None:
    clock = FakeClock(START)
    monitor, d, child = setup(clock, stale_minutes=10, timeout_minutes=30)
    clock.advance(60)
    child.log.bytes_written += 10
    monitor.tick()
    clock.set_wall(clock.now() + jump)  # T1/T2: the wall clock jumps, monotonic does not
    monitor.tick()
    clock.advance(5)
    monitor.tick()
    assert d.kills == []
    assert len(d.store.beats) == 3  # supervision goes on: one heartbeat batch per tick


def test_timeout_counts_monotonic_seconds_only() -> None:
    clock = FakeClock(START)
    monitor, d, child = setup(clock, stale_minutes=1000, timeout_minutes=2)
    clock.set_wall(START + timedelta(hours=5))
    clock.advance(119)
    child.cpu += 1  # busy, so not stale
    monitor.tick()
    assert d.kills == []
    clock.advance(2)
    child.cpu += 1
    monitor.tick()
    assert d.kills == [(1, KILL_TIMEOUT, "timeout after 2 min")]


def test_stale_counts_monotonic_seconds_and_busy_silent_is_not_stale() -> None:
    clock = FakeClock(START)
    monitor, d, child = setup(clock, stale_minutes=1, timeout_minutes=1000)
    for _ in range(10):  # P10: silent but burning CPU for 10 min: never stale
        clock.advance(60)
        child.cpu += 5
        monitor.tick()
    assert d.kills == []
    clock.set_wall(START - timedelta(hours=1))  # backwards jump, then real silence
    clock.advance(59)
    monitor.tick()
    assert d.kills == []
    clock.advance(2)
    monitor.tick()
    assert d.kills == [(1, KILL_STALE, "stale: no progress for 1 min")]
