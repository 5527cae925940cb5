"""Why a queued task is not running, in words and as data (syncctl explain, list reasons).

Every reason comes from the pool's one eligibility rule (pool.slots), the very rule dispatch
applies, so the two cannot disagree; all reasons holding a task back are listed, the first
(in the rule's order: pool paused, the source's holds, the task's own, the full pool) also
as `reason`/`message`/`blocking`.

`estimated_start` is an estimate from history, never a promise: each route's expected
duration is the median of its last 20 completed runs. For `pool_full` it is the soonest
expected end among running tasks plus the expected durations of the queued tasks ahead
(at most 200 looked at) divided over the slots; for `route_running` and `source_limit` the
soonest expected end of the blocking tasks (a lower bound: tasks of that source queued ahead
are not counted); for a source's pause, throttle, open breaker or rate window, when it
lifts. The task's estimate is the latest of its reasons'; it is null while one of them has
none (a reason waiting on a route without a completed run, or on a person: `paused`).

A task queued by a schedule that has since been paused stays queued and runs: pausing a
schedule only stops new fires. The answer says so in `note` (cancel the task to drop it)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from syncd.core.clock import iso
from syncd.core.models import Status, Task
from syncd.pool import slots
from syncd.service.view import PoolView


class Schedules(Protocol):
    def describe(self) -> list[dict[str, Any]]: ...


class Daemon(PoolView, Protocol):
    """The parts of the daemon an explanation reads."""

    @property
    def scheduler(self) -> Schedules: ...


RECENT_RUNS = 20
LOOK_AHEAD = 200

RouteKey = tuple[str, str]


@dataclass
class Snapshot:
    """The pool at one instant (the eligibility rule's view) and when each running task
    started: what every reason and estimate is decided against."""

    view: slots.View
    mono: float
    started_mono: dict[int, float]

    @classmethod
    def take(cls, d: Daemon) -> Snapshot:
        disp = d.dispatcher
        with disp.cond:
            view = disp.view()
            started = {rt.task.id: rt.started_mono for rt in disp.running.values()}
        return cls(view=view, mono=d.clock.monotonic(), started_mono=started)

    @property
    def now(self) -> datetime:
        return self.view.now

    @property
    def running(self) -> Sequence[Task]:
        return self.view.running

    @property
    def max_workers(self) -> int:
        return self.view.max_workers

    def elapsed(self, task: Task) -> float:
        return max(0.0, self.mono - self.started_mono.get(task.id, self.mono))


def reason(snap: Snapshot, task: Task) -> tuple[str, str, list[int]]:
    """(reason, message, blocking ids) of the first reason holding the task back."""
    if task.status is not Status.QUEUED:
        return "none", f"task {task.id} is {task.status.value}, not queued", []
    found = slots.blockers(snap.view, task)
    if not found:
        return "none", "nothing blocks it; it starts at the next dispatch", []
    return found[0].reason, found[0].message, list(found[0].blocking)


def reasons(d: Daemon, tasks: Sequence[Task]) -> dict[int, str]:
    """The one-word reason of each queued task, from one snapshot (the `list` op)."""
    snap = Snapshot.take(d)
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
    d: Daemon, snap: Snapshot, durations: Durations, task: Task, b: slots.Blocker
) -> datetime | None:
    """When this one reason should stop holding the task back (None: no estimate)."""
    if b.reason == slots.PAUSED:
        return None
    waits_for_runs = b.reason in (slots.ROUTE_RUNNING, slots.SOURCE_LIMIT)
    if waits_for_runs or (b.reason == slots.SOURCE_OPEN and b.blocking):  # a half-open probe
        left = remaining(snap, durations, [t for t in snap.running if t.id in b.blocking])
        return snap.now + timedelta(seconds=min(left)) if left else None
    if b.reason != slots.POOL_FULL:
        return b.until  # not_before, and a source's timed holds
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
    """The first reason as `reason`/`message`/`blocking` (as before), every reason in
    `reasons`, each with its estimate, and the task's estimated start."""
    snap = Snapshot.take(d)
    why, message, blocking = reason(snap, task)
    rows: list[dict[str, Any]] = []
    start: datetime | None = None
    if task.status is Status.QUEUED:
        starts = []
        durations = Durations(d)
        for b in slots.blockers(snap.view, task):
            when = estimate(d, snap, durations, task, b)
            starts.append(when)
            rows.append({"reason": b.reason, "message": b.message, "blocking": list(b.blocking),
                         "estimated_start": iso(when) if when is not None else None})  # fmt: skip
        known = [w for w in starts if w is not None]
        start = snap.now if not starts else max(known) if len(known) == len(starts) else None
    return {
        "reason": why,
        "message": message,
        "blocking": blocking,
        "reasons": rows,
        "estimated_start": iso(start) if start is not None else None,
        "note": schedule_note(d, task),
    }
