"""Why a queued task is not running, in words and as data (syncctl explain, list reasons).

The reason is the first rule dispatch would trip over, in the dispatcher's own order:
paused, then not_before, then the same route running, the source's max_concurrent, the pool.

`estimated_start` is an estimate from history, never a promise: each route's expected
duration is the median of its last 20 completed runs. For `pool_full` it is the soonest
expected end among running tasks plus the expected durations of the queued tasks ahead
(at most 200 looked at) divided over the slots; for `route_running` and `source_limit` the
soonest expected end of the blocking tasks (a lower bound: tasks of that source queued ahead
are not counted). It is null while the routes it needs have no completed run, and for
`paused` (that waits for a person).

A task queued by a schedule that has since been paused stays queued and runs: pausing a
schedule only stops new fires. The answer says so in `note` (cancel the task to drop it)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from syncd.core.clock import Clock, iso, parse_iso
from syncd.core.models import Status, Task
from syncd.pool.dispatcher import Dispatcher
from syncd.store.facade import Store


class Schedules(Protocol):
    def describe(self) -> list[dict[str, Any]]: ...


class Daemon(Protocol):
    """The parts of the daemon an explanation reads."""

    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def store(self) -> Store: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def scheduler(self) -> Schedules: ...


RECENT_RUNS = 20
LOOK_AHEAD = 200

RouteKey = tuple[str, str]


@dataclass
class Snapshot:
    """The dispatcher's state at one instant: what every reason is decided against."""

    now: datetime
    mono: float
    paused: bool
    max_workers: int
    running: list[Task]
    started_mono: dict[int, float]
    limits: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def take(cls, d: Daemon) -> Snapshot:
        disp = d.dispatcher
        with disp.cond:
            rts = list(disp.running.values())
            paused = disp.paused
        limits: dict[str, int | None] = {}
        for rt in rts:
            src = disp.routes.source(rt.task.source)
            limits[rt.task.source] = src.max_concurrent if src is not None else None
        return cls(
            now=d.clock.now(),
            mono=d.clock.monotonic(),
            paused=paused,
            max_workers=disp.max_workers,
            running=[rt.task for rt in rts],
            started_mono={rt.task.id: rt.started_mono for rt in rts},
            limits=limits,
        )

    def elapsed(self, task: Task) -> float:
        return max(0.0, self.mono - self.started_mono.get(task.id, self.mono))


def _tasks(ids: list[int]) -> str:
    return ("task " if len(ids) == 1 else "tasks ") + ", ".join(map(str, ids))


def reason(snap: Snapshot, task: Task) -> tuple[str, str, list[int]]:
    """(reason, message, blocking ids) for one task, without touching the database."""
    if task.status is not Status.QUEUED:
        return "none", f"task {task.id} is {task.status.value}, not queued", []
    if snap.paused:
        return "paused", "dispatch is paused (syncctl resume to start it again)", []
    nb = parse_iso(task.not_before)
    if nb is not None and nb > snap.now:
        return "not_before", f"waits for its retry backoff until {task.not_before}", []
    same = [t.id for t in snap.running if (t.source, t.route) == (task.source, task.route)]
    if same:
        what = f"{task.source}.{task.route}"
        return "route_running", f"the same sync {what} is running as task {same[0]}", same
    limit = snap.limits.get(task.source)
    mine = sorted(t.id for t in snap.running if t.source == task.source)
    if limit is not None and len(mine) >= limit:
        held = f"source {task.source} is at its limit of {limit} ({_tasks(mine)})"
        return "source_limit", held, mine
    if len(snap.running) >= snap.max_workers:
        ids = sorted(t.id for t in snap.running)
        return "pool_full", f"all {snap.max_workers} slots are taken ({_tasks(ids)})", ids
    return "none", "nothing blocks it; it starts at the next dispatch", []


def route_limits(d: Daemon, tasks: Iterable[Task]) -> dict[str, int | None]:
    """max_concurrent of each task's source (a source no longer configured: no limit)."""
    out: dict[str, int | None] = {}
    for t in tasks:
        if t.source not in out:
            src = d.dispatcher.routes.source(t.source)
            out[t.source] = src.max_concurrent if src is not None else None
    return out


def reasons(d: Daemon, tasks: Sequence[Task]) -> dict[int, str]:
    """The one-word reason of each queued task, from one snapshot (the `list` op)."""
    snap = Snapshot.take(d)
    snap.limits.update(route_limits(d, tasks))
    return {t.id: reason(snap, t)[0] for t in tasks if t.status is Status.QUEUED}


class Durations:
    """Expected run time per route: the median of its last RECENT_RUNS completed runs,
    read once per route per request."""

    def __init__(self, d: Daemon):
        self._d = d
        self._cache: dict[RouteKey, float | None] = {}

    def __call__(self, source: str, route: str) -> float | None:
        key = (source, route)
        if key not in self._cache:
            runs = self._d.store.recent_durations(source, route, RECENT_RUNS)
            self._cache[key] = statistics.median(runs) if runs else None
        return self._cache[key]

    def known(self) -> list[float]:
        return [v for v in self._cache.values() if v is not None]


def remaining(snap: Snapshot, durations: Durations, tasks: Iterable[Task]) -> list[float]:
    """Expected seconds left of each running task whose route has history."""
    out = []
    for t in tasks:
        expected = durations(t.source, t.route)
        if expected is not None:
            out.append(max(0.0, expected - snap.elapsed(t)))
    return out


def estimate(
    d: Daemon, snap: Snapshot, task: Task, why: str, blocking: list[int]
) -> datetime | None:
    durations = Durations(d)
    if why == "none":
        return snap.now
    if why == "not_before":
        return parse_iso(task.not_before)
    if why in ("route_running", "source_limit"):
        left = remaining(snap, durations, [t for t in snap.running if t.id in blocking])
        return snap.now + timedelta(seconds=min(left)) if left else None
    if why != "pool_full":
        return None
    left = remaining(snap, durations, snap.running)
    if not left:
        return None
    ahead = tasks_ahead(d, task)
    expected = [durations(t.source, t.route) for t in ahead]
    fallback = statistics.median(durations.known())  # a route without history: a typical run
    total = sum(fallback if e is None else e for e in expected)
    return snap.now + timedelta(seconds=min(left) + total / max(1, snap.max_workers))


def tasks_ahead(d: Daemon, task: Task) -> list[Task]:
    """Queued tasks before this one in dispatch order (at most LOOK_AHEAD)."""
    ahead: list[Task] = []
    for t in d.store.tasks_with_status(Status.QUEUED, limit=LOOK_AHEAD + 1):
        if t.id == task.id:
            return ahead
        ahead.append(t)
    return ahead[:LOOK_AHEAD]


def schedule_note(d: Daemon, task: Task) -> str | None:
    """A task queued by a schedule that is now paused: it still runs; say so."""
    if not task.trigger.startswith("schedule:") or task.status is not Status.QUEUED:
        return None
    name = task.trigger.split(":", 1)[1]
    rows = [s for s in d.scheduler.describe() if s.get("name") == name]
    if not rows or not rows[0].get("paused"):
        return None
    return (
        f"schedule {name} is paused, but this task was queued before the pause and still runs;"
        f" syncctl cancel {task.id} drops it"
    )


def explain(d: Daemon, task: Task) -> dict[str, Any]:
    snap = Snapshot.take(d)
    snap.limits.update(route_limits(d, [task]))
    why, message, blocking = reason(snap, task)
    start = estimate(d, snap, task, why, blocking) if task.status is Status.QUEUED else None
    return {
        "reason": why,
        "message": message,
        "blocking": blocking,
        "estimated_start": iso(start) if start is not None else None,
        "note": schedule_note(d, task),
    }
