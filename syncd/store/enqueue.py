"""Queueing inside a write transaction: id assignment, coalescing with a queued twin, and
one bulk insert per batch."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any

from syncd.core.models import NewTask, Status, Task
from syncd.store.rows import (
    MAX_ID,
    PARAMS_COLUMN,
    QUEUE_INDEX,
    SELECT,
    chunks,
    encode_params,
    marks,
    row_task,
)

_KEYS_PER_QUERY = 5000  # coalescing keys per lookup (one JSON parameter)
Key = tuple[str, str, str]  # (source, route, canonical params): what coalescing compares

_OLDEST_PER_KEY = (  # the words of the tasks_active_key index's WHERE, so it is used
    "SELECT (SELECT t.id FROM tasks AS t WHERE t.status IN ('queued', 'running')"
    " AND t.status = 'queued' AND t.source = k.s AND t.route = k.r AND t.params = k.p"
    " ORDER BY t.id LIMIT 1)"
    " FROM (SELECT json_extract(value, '$[0]') AS s, json_extract(value, '$[1]') AS r,"
    " json_extract(value, '$[2]') AS p FROM json_each(?)) AS k"
)


class Batch:
    """Queue tasks inside an open write transaction.

    Ids are assigned here (above both max(id) and sqlite_sequence, so never reused), which
    lets one executemany insert a whole batch and return tasks without reading them back;
    the coalescing lookups of a batch are one indexed query, not one per item."""

    def __init__(self, conn: sqlite3.Connection, now: str):
        self.conn = conn
        self.now = now
        self.next_id = int(conn.execute(f"SELECT {MAX_ID} + 1").fetchone()[0])
        self.targets: dict[Key, Task | None] = {}  # the queued task each key coalesces into
        self.pending: list[tuple[Task, str, str]] = []  # (task, argv, params) not inserted yet
        self.dirty: dict[int, Task] = {}  # inserted tasks whose priority/not_before changed
        self._argv_json: dict[tuple[str, ...], str] = {}  # a batch repeats a few routes' argv

    def add(self, items: Sequence[tuple[NewTask, bool]]) -> list[tuple[Task, bool]]:
        keyed = [
            (new, dup, (new.source, new.route, encode_params(new.params))) for new, dup in items
        ]
        # Only items that may coalesce need their key looked up: an allow_duplicate item
        # never joins a queued task, and a later item of its key is looked up itself.
        self._prefetch({key for _, dup, key in keyed if not dup})
        out: list[tuple[Task, bool]] = []
        for new, allow_duplicate, key in keyed:
            target = self.targets.get(key)
            if target is not None and not allow_duplicate:
                self._merge(target, new)
                out.append((target, True))
                continue
            task = self._build(new, key[2])
            if target is None:
                self.targets[key] = task
            out.append((task, False))
        self.flush()
        return out

    def flush(self) -> None:
        if self.pending:
            self.conn.executemany(_INSERT_QUEUED, [_queued_row(*p) for p in self.pending])
            self.conn.execute(
                "UPDATE task_counts SET n = n + ? WHERE status = 'queued'", (len(self.pending),)
            )
            per_source = Counter(p[0].source for p in self.pending)  # queued per source, too
            self.conn.executemany(
                "INSERT INTO source_counts (source, queued) VALUES (?, ?)"
                " ON CONFLICT (source) DO UPDATE SET queued = queued + excluded.queued",
                list(per_source.items()),
            )
            self.pending.clear()
        if self.dirty:
            self.conn.executemany(
                "UPDATE tasks SET priority = ?, not_before = ? WHERE id = ?",
                [(t.priority, t.not_before, t.id) for t in self.dirty.values()],
            )
            self.dirty.clear()

    def _prefetch(self, keys: set[Key]) -> None:
        """The oldest queued task of every key not looked up yet: one indexed probe per key
        (tasks_active_key, stopping at the first queued entry), never every queued twin."""
        missing = list(keys - self.targets.keys())
        for start in range(0, len(missing), _KEYS_PER_QUERY):
            chunk = missing[start : start + _KEYS_PER_QUERY]
            ids = [
                r[0]
                for r in self.conn.execute(_OLDEST_PER_KEY, (json.dumps(chunk),)).fetchall()
                if r[0] is not None
            ]
            for part in chunks(ids):
                rows = self.conn.execute(
                    f"{SELECT} WHERE id IN ({marks(len(part))})", tuple(part)
                ).fetchall()
                for row in rows:
                    task = row_task(row)
                    self.targets.setdefault((task.source, task.route, row[PARAMS_COLUMN]), task)
            for key in chunk:
                self.targets.setdefault(key, None)

    def _merge(self, target: Task, new: NewTask) -> None:
        """The coalesced task keeps the more urgent priority and the earlier not_before."""
        priority = min(target.priority, new.priority)
        not_before = target.not_before
        if not_before is not None:
            not_before = None if new.not_before is None else min(not_before, new.not_before)
        if (priority, not_before) == (target.priority, target.not_before):
            return
        target.priority, target.not_before = priority, not_before
        if not self.pending or target.id < self.pending[0][0].id:
            self.dirty[target.id] = target

    def _build(self, new: NewTask, params: str) -> Task:
        task_id = self.next_id
        self.next_id += 1
        queue_order = task_id
        if new.front:
            self.flush()
            lowest = self.conn.execute(
                f"SELECT min(queue_order) FROM tasks INDEXED BY {QUEUE_INDEX}"
                " WHERE status = 'queued' AND priority = ?",
                (new.priority,),
            ).fetchone()[0]
            queue_order = (task_id if lowest is None else int(lowest)) - 1
        task = Task(
            id=task_id,
            source=new.source,
            sync_type=new.sync_type,
            route=new.route,
            argv=list(new.argv),
            params=dict(new.params),
            priority=new.priority,
            status=Status.QUEUED,
            trigger=new.trigger,
            attempt=new.attempt,
            submitted_at=self.now,
            requested_by=new.requested_by,
            not_before=new.not_before,
            internal={
                "queue_order": queue_order,
                "lost_count": new.lost_count,
                "proc_starttime": None,
                "boot_id": None,
            },
        )
        key = tuple(task.argv)
        argv = self._argv_json.get(key)
        if argv is None:
            argv = self._argv_json[key] = json.dumps(task.argv)
        self.pending.append((task, argv, params))
        return task


_QUEUED_COLUMNS = (
    "id", "source", "sync_type", "route", "argv", "params", "priority", "trigger", "attempt",
    "submitted_at", "requested_by", "not_before", "queue_order", "lost_count",
)  # fmt: skip


_INSERT_QUEUED = (
    "INSERT INTO tasks (status, " + ", ".join(f'"{c}"' for c in _QUEUED_COLUMNS) + ")"
    f" VALUES ('queued', {marks(len(_QUEUED_COLUMNS))})"
)


def _queued_row(task: Task, argv: str, params: str) -> tuple[Any, ...]:
    """Only the columns a new task has, in _QUEUED_COLUMNS order: binding fewer values
    is most of what a bulk insert costs in Python."""
    return (
        task.id, task.source, task.sync_type, task.route, argv, params, task.priority,
        task.trigger, task.attempt, task.submitted_at, task.requested_by, task.not_before,
        task.internal["queue_order"], task.internal["lost_count"],
    )  # fmt: skip
