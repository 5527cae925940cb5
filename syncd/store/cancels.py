"""Cancels as the store writes them: queued tasks by id (one transaction, a chunk of ids per
statement), a page of the queue at a time for the bulk cancels (so other writers get the lock
between pages), and the cancel request of a running task, committed before it is sent."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

from syncd.core.models import Task
from syncd.store.db import StoreBase
from syncd.store.rows import QUEUE_INDEX, RETURNING, chunks, marks, row_task


class CancelledRow(NamedTuple):
    """A task a bulk cancel ended: what the metrics count it by."""

    id: int
    source: str
    route: str


class Cancels(StoreBase):
    def cancel_queued(self, ids: Collection[int], *, finished_at: str) -> list[Task]:
        """queued → cancelled for each id still queued, in one transaction; returns the
        tasks cancelled, in the order asked."""

        def write(conn: sqlite3.Connection) -> dict[int, Task]:
            done: dict[int, Task] = {}
            for chunk in chunks(list(ids)):
                rows = conn.execute(
                    f"UPDATE tasks SET status = 'cancelled', finished_at = ?"
                    f" WHERE status = 'queued' AND id IN ({marks(len(chunk))}) {RETURNING}",
                    (finished_at, *chunk),
                ).fetchall()
                done.update((task.id, task) for task in map(row_task, rows))
            return done

        done = self._group("cancel", write)
        return [done[i] for i in dict.fromkeys(ids) if i in done]

    def cancel_queued_page(
        self, *, finished_at: str, limit: int, up_to_id: int, source: str | None = None
    ) -> list[CancelledRow]:
        """Cancel up to `limit` queued tasks (of `source`; ids up to `up_to_id`, so work
        queued meanwhile is left alone) in one short transaction: a bulk cancel is a loop of
        these, and other writers get the lock between them. Returns (id, source, route) of
        each task cancelled: enough to count them without reading the rows back."""
        where, params = "status = 'queued' AND id <= ?", list[Any]([up_to_id])
        if source is not None:
            where, params = where + " AND source = ?", [*params, source]
        with self._write("cancel") as conn:
            found = conn.execute(
                f"UPDATE tasks SET status = 'cancelled', finished_at = ? WHERE id IN ("
                f"SELECT id FROM tasks INDEXED BY {QUEUE_INDEX} WHERE {where} LIMIT ?)"
                f" AND status = 'queued' RETURNING id, source, route",
                (finished_at, *params, limit),
            ).fetchall()
        return [CancelledRow(*row) for row in found]

    def tasks_by_id(self, ids: Sequence[int]) -> list[Task]:
        """The tasks with these ids (missing ones left out), in id order."""
        out: list[Task] = []
        for chunk in chunks(list(ids)):
            out += self._tasks(f"id IN ({marks(len(chunk))})", chunk, "ORDER BY id")
        return out

    def request_cancel(self, ids: Collection[int]) -> list[int]:
        """Mark running tasks as cancelled by request, committed before the kill is sent
        or acknowledged: a daemon that dies before their end is recorded ends them
        `cancelled` at the next start, never requeued. Returns the ids marked."""
        marked: list[int] = []
        with self._write("cancel") as conn:
            for chunk in chunks(list(ids)):
                rows = conn.execute(
                    f"UPDATE tasks SET cancel_requested = 1"
                    f" WHERE status = 'running' AND id IN ({marks(len(chunk))}) RETURNING id",
                    tuple(chunk),
                ).fetchall()
                marked += [row[0] for row in rows]
        return marked
