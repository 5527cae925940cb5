"""What callers hand the store beside a new task: a pick of the next task to start, and the
ending of a running one (with its follow-up)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from syncd.core.models import TRANSITIONS, NewTask, Status, trigger_follow_up
from syncd.store.rows import QUEUE_INDEX, QUEUE_ORDER, SOURCE_QUEUE_INDEX, marks

# The distinct sources with queued tasks, one index seek each (a skip scan by hand).
_QUEUED_SOURCES = f"""
WITH RECURSIVE s(x) AS (
    SELECT (SELECT min(source) FROM tasks INDEXED BY {SOURCE_QUEUE_INDEX} WHERE status = 'queued')
    UNION ALL
    SELECT (SELECT min(source) FROM tasks INDEXED BY {SOURCE_QUEUE_INDEX}
            WHERE status = 'queued' AND source > x)
    FROM s WHERE x IS NOT NULL
) SELECT x FROM s WHERE x IS NOT NULL
"""


@dataclass(frozen=True)
class Pick:
    """Which queued task dispatch may start: due by `now`, outside excluded sources (full,
    paused, throttled, open, out of rate) and busy routes (the pool's in-memory view).

    With no source excluded the pick is the first due entry of the queue index. With some
    excluded, a million queued tasks of one excluded source must not be walked past on
    every pick: each other source with queued tasks is looked up on its own index instead."""

    now: str
    exclude_sources: Collection[str] = ()
    exclude_routes: Collection[tuple[str, str]] = ()

    def choose(self, conn: sqlite3.Connection) -> int | None:
        """The id of the task to start, inside the caller's transaction."""
        if not self.exclude_sources:
            where, params = self.where()
            sql = f"SELECT id FROM tasks INDEXED BY {QUEUE_INDEX} WHERE {where} {QUEUE_ORDER}"
            row = conn.execute(sql + " LIMIT 1", params).fetchone()
            return None if row is None else int(row[0])
        excluded = set(self.exclude_sources)
        best: tuple[int, int, int] | None = None
        for (source,) in conn.execute(_QUEUED_SOURCES).fetchall():
            if source in excluded:
                continue
            where, params = self.where(source)
            row = conn.execute(
                f"SELECT priority, queue_order, id FROM tasks INDEXED BY {SOURCE_QUEUE_INDEX}"
                f" WHERE {where} {QUEUE_ORDER} LIMIT 1",
                params,
            ).fetchone()
            if row is not None and (best is None or tuple(row) < best):
                best = (int(row[0]), int(row[1]), int(row[2]))
        return None if best is None else best[2]

    def where(self, source: str | None = None) -> tuple[str, list[Any]]:
        where = "status = 'queued' AND (not_before IS NULL OR not_before <= ?)"
        params: list[Any] = [self.now]
        if source is not None:
            where += " AND source = ?"
            params.append(source)
        elif self.exclude_sources:
            where += f" AND source NOT IN ({marks(len(self.exclude_sources))})"
            params.extend(self.exclude_sources)
        if self.exclude_routes:
            pairs = ", ".join("(?, ?)" for _ in self.exclude_routes)
            where += f" AND (source, route) NOT IN (VALUES {pairs})"
            params.extend(x for pair in self.exclude_routes for x in pair)
        return where, params


@dataclass(frozen=True)
class Ending:
    """How a running task ended, as its finish records it (one follow-up at most: a retry,
    a requeue or, for a deferred task, its defer)."""

    status: Status
    finished_at: str
    exit_code: int | None
    error: str | None
    retry: NewTask | None = None
    requeue: NewTask | None = None
    progress: str | None = None  # the last progress line
    defer: NewTask | None = None
    # (source, its protection state row as of the commit) written with this ending
    source_state: tuple[str, Callable[[], dict[str, Any]]] | None = None

    def follow_up(self, task_id: int) -> NewTask | None:
        """The follow-up to queue with the finish, checked against the task it follows."""
        if self.status not in TRANSITIONS[Status.RUNNING]:
            raise ValueError(f"finish to {self.status.value} is not allowed")
        given = [(k, t) for k, t in (("retry", self.retry), ("requeue", self.requeue),
                 ("defer", self.defer)) if t is not None]  # fmt: skip
        if len(given) > 1:
            raise ValueError("a task gets one follow-up at most")
        if (self.defer is not None) != (self.status is Status.DEFERRED):
            raise ValueError("a deferred task, and only one, has a defer follow-up")
        follow_up = given[0][1] if given else None
        if follow_up is not None:
            kind = given[0][0]
            if follow_up.trigger != trigger_follow_up(kind, task_id):
                raise ValueError(f"{kind} of task {task_id} has trigger {follow_up.trigger!r}")
        return follow_up
