"""The one eligibility rule: may a queued task start now, and if not, every reason why.

The dispatcher's pick and `explain` both read a `View` of the pool through these functions,
so they cannot disagree. Rules come in three levels, checked in this order:
- the pool: dispatch paused, or every slot taken (`pool_full` is listed last);
- the source: paused, open breaker (or its one half-open probe running), throttled, out
  of its rate, at its max_concurrent: held back in SQL by excluding the source;
- the task: its not_before, or the same (source, route) already running.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from syncd.core.clock import iso, parse_iso
from syncd.core.models import Status, Task
from syncd.store.requests import Pick

# The reason words, in the order they are reported.
PAUSED = "paused"
SOURCE_PAUSED = "source_paused"
SOURCE_OPEN = "source_open"
SOURCE_THROTTLED = "source_throttled"
RATE_LIMITED = "rate_limited"
NOT_BEFORE = "not_before"
ROUTE_RUNNING = "route_running"
SOURCE_LIMIT = "source_limit"
POOL_FULL = "pool_full"
NONE = "none"


@dataclass(frozen=True)
class Blocker:
    """One reason a task waits: its word, a sentence, the running tasks it waits for, and
    when the hold lifts by itself (None: it waits for a person or for running tasks)."""

    reason: str
    message: str
    blocking: tuple[int, ...] = ()
    until: datetime | None = None


@dataclass
class View:
    """The pool at one instant: what every rule is decided against."""

    now: datetime
    paused: bool
    max_workers: int
    running: Sequence[Task]
    limit: Callable[[str], int | None]  # a source's max_concurrent (None: no limit)
    holds: Mapping[str, Sequence[Blocker]] = field(default_factory=dict)  # source state
    stopping: bool = False


def _tasks(ids: Sequence[int]) -> str:
    return ("task " if len(ids) == 1 else "tasks ") + ", ".join(map(str, ids))


def pool_blockers(view: View) -> list[Blocker]:
    """Reasons no task at all may start now."""
    out = []
    if view.paused:
        out.append(Blocker(PAUSED, "dispatch is paused (syncctl resume to start it again)"))
    if len(view.running) >= view.max_workers:
        ids = tuple(sorted(t.id for t in view.running))
        message = f"all {view.max_workers} slots are taken ({_tasks(ids)})"
        out.append(Blocker(POOL_FULL, message, ids))
    return out


def source_blockers(view: View, source: str) -> list[Blocker]:
    """Reasons no task of `source` may start now."""
    out = list(view.holds.get(source, ()))
    limit = view.limit(source)
    mine = tuple(sorted(t.id for t in view.running if t.source == source))
    if limit is not None and len(mine) >= limit:
        held = f"source {source} is at its limit of {limit} ({_tasks(mine)})"
        out.append(Blocker(SOURCE_LIMIT, held, mine))
    return out


def task_blockers(view: View, task: Task) -> list[Blocker]:
    """Reasons of this task's own: its backoff, or its sync already running."""
    out = []
    nb = parse_iso(task.not_before)
    if nb is not None and nb > view.now:
        out.append(Blocker(NOT_BEFORE, f"waits until {task.not_before} (retry backoff or a "
                           "deferral)", (), nb))  # fmt: skip
    same = tuple(t.id for t in view.running if (t.source, t.route) == (task.source, task.route))
    if same:
        what = f"{task.source}.{task.route}"
        out.append(Blocker(ROUTE_RUNNING, f"the same sync {what} is running as task {same[0]}",
                           same))  # fmt: skip
    return out


def blockers(view: View, task: Task) -> list[Blocker]:
    """Every reason `task` may not start now, paused first and pool_full last; empty when
    it starts at the next dispatch."""
    if task.status is not Status.QUEUED:
        return []
    pool = pool_blockers(view)
    first = [b for b in pool if b.reason == PAUSED]
    last = [b for b in pool if b.reason == POOL_FULL]
    return first + source_blockers(view, task.source) + task_blockers(view, task) + last


def pick(view: View) -> Pick | None:
    """What the next claim may take; None when no task may start at all. Sources with a
    blocker are excluded in SQL (held sources are few and known here), busy routes too."""
    if view.stopping or pool_blockers(view):
        return None
    candidates = set(view.holds) | {t.source for t in view.running}
    excluded = {s for s in candidates if source_blockers(view, s)}
    busy = {(t.source, t.route) for t in view.running}
    return Pick(iso(view.now), excluded, busy)
