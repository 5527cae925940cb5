"""What callers hand the store beside a new task: a pick of the next task to start, and the
ending of a running one (with its follow-up)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from syncd.core.models import TRANSITIONS, NewTask, Status, trigger_follow_up
from syncd.store.rows import marks


@dataclass(frozen=True)
class Pick:
    """Which queued task dispatch may start: due by `now`, outside full sources and busy
    routes (the pool's in-memory view, passed in)."""

    now: str
    exclude_sources: Collection[str] = ()
    exclude_routes: Collection[tuple[str, str]] = ()

    def where(self) -> tuple[str, list[Any]]:
        where = "status = 'queued' AND (not_before IS NULL OR not_before <= ?)"
        params: list[Any] = [self.now]
        if self.exclude_sources:
            where += f" AND source NOT IN ({marks(len(self.exclude_sources))})"
            params.extend(self.exclude_sources)
        if self.exclude_routes:
            pairs = ", ".join("(?, ?)" for _ in self.exclude_routes)
            where += f" AND (source, route) NOT IN (VALUES {pairs})"
            params.extend(x for pair in self.exclude_routes for x in pair)
        return where, params


@dataclass(frozen=True)
class Ending:
    """How a running task ended, as its finish records it (a retry or a requeue at most)."""

    status: Status
    finished_at: str
    exit_code: int | None
    error: str | None
    retry: NewTask | None = None
    requeue: NewTask | None = None
    progress: str | None = None  # the last progress line

    def follow_up(self, task_id: int) -> NewTask | None:
        """The follow-up to queue with the finish, checked against the task it follows."""
        if self.status not in TRANSITIONS[Status.RUNNING]:
            raise ValueError(f"finish to {self.status.value} is not allowed")
        if self.retry is not None and self.requeue is not None:
            raise ValueError("a task gets a retry or a requeue, not both")
        follow_up = self.retry or self.requeue
        if follow_up is not None:
            kind = "retry" if self.retry is not None else "requeue"
            if follow_up.trigger != trigger_follow_up(kind, task_id):
                raise ValueError(f"{kind} of task {task_id} has trigger {follow_up.trigger!r}")
        return follow_up
