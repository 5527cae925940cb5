"""Building blocks of store.py that need no lock of their own: row <-> Task mapping,
error mapping, the enqueue batch (coalescing, ids, front rule) and the query shapes of
list and prune. Everything here runs inside a transaction the Store opened."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from syncd.core.errors import StoreError
from syncd.core.models import FINAL, ErrorCode, Status, Task

if TYPE_CHECKING:
    from syncd.store.facade import NewTask

PUBLIC = (
    "id", "source", "sync_type", "route", "argv", "params", "priority", "status", "trigger",
    "attempt", "submitted_at", "started_at", "finished_at", "last_heartbeat", "pid",
    "exit_code", "error", "requested_by", "not_before", "progress",
)  # fmt: skip
INTERNAL = ("queue_order", "lost_count", "proc_starttime", "boot_id")
COLUMNS = PUBLIC + INTERNAL
SELECT = "SELECT " + ", ".join(f'"{c}"' for c in COLUMNS) + " FROM tasks"
RETURNING = "RETURNING " + ", ".join(f'"{c}"' for c in COLUMNS)  # row_task() reads these
# Terms that match the partial indexes' WHERE clauses word for word, as SQLite requires
# before it will use them (status <> 'queued' for tasks_status, ... for tasks_finished).
RUNNING = "status = 'running' AND status <> 'queued'"
FINISHED = "status <> 'queued' AND finished_at IS NOT NULL"
QUEUE_ORDER = "ORDER BY priority, queue_order, id"  # dispatch order: the tasks_queue index
QUEUE_INDEX = "tasks_queue"
FINISHED_INDEX = "tasks_finished"  # newest-first history without sorting every finished row
HISTORY_ORDER = "ORDER BY finished_at DESC, id DESC"
MAX_ID = (  # the highest id ever handed out: AUTOINCREMENT's rule, deleted rows included
    "max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'tasks'), 0),"
    " coalesce((SELECT max(id) FROM tasks), 0))"
)
_CHUNK = 500  # ids per IN (...) list, well under SQLite's bound-parameter limit
_KEYS_PER_QUERY = 5000  # coalescing keys per lookup (one JSON parameter)
_PARAMS = COLUMNS.index("params")
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode

Key = tuple[str, str, str]  # (source, route, canonical params): what coalescing compares


def canonical_params(params: dict[str, Any]) -> str:
    """One spelling per params dict, so equal params compare equal in SQL."""
    return _encode(params)


def row_task(row: Sequence[Any]) -> Task:
    values = dict(zip(COLUMNS, row, strict=True))
    internal = {k: values.pop(k) for k in INTERNAL}
    values["argv"] = json.loads(values["argv"])
    values["params"] = json.loads(values["params"])
    values["status"] = Status(values["status"])
    return Task(**values, internal=internal)


def store_error(exc: sqlite3.Error, what: str) -> StoreError | None:
    """The SQLite failures a caller can report (busy, full, I/O) as protocol errors;
    None for anything else, which is a bug and should surface as such."""
    name = getattr(exc, "sqlite_errorname", "") or ""  # Python >= 3.11; text below for 3.10
    text = str(exc)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "is locked" in text:
        return StoreError(ErrorCode.BUSY, f"database is busy, try again ({what}): {text}")
    storage = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN",
               "SQLITE_CORRUPT", "SQLITE_NOTADB")  # fmt: skip
    words = ("is full", "I/O error", "readonly", "malformed", "unable to open")
    if name.startswith(storage) or any(w in text for w in words):
        return StoreError(ErrorCode.STORAGE_ERROR, f"database error ({what}): {text}")
    return None


def chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def marks(n: int) -> str:
    return ", ".join("?" * n)


def get_in(conn: sqlite3.Connection, task_id: int) -> Task | None:
    row = conn.execute(f"{SELECT} WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else row_task(row)


def follow_up_exists(conn: sqlite3.Connection, trigger: str) -> bool:
    """Has a retry:<id> / requeue:<id> task been created already? (tasks_follow_up index)"""
    sql = 'SELECT 1 FROM tasks WHERE "trigger" = ? AND "trigger" <> \'manual\' LIMIT 1'
    return conn.execute(sql, (trigger,)).fetchone() is not None


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
        keyed = [(new, dup, (new.source, new.route, _encode(new.params))) for new, dup in items]
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
            per_source = Counter(task.source for task, _, _ in self.pending)
            self.conn.executemany(
                "INSERT INTO queued_by_source (source, n) VALUES (?, ?)"
                " ON CONFLICT (source) DO UPDATE SET n = n + excluded.n",
                per_source.items(),
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
                    self.targets.setdefault((task.source, task.route, row[_PARAMS]), task)
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


@dataclass(frozen=True)
class Group:
    """One block of the `list` order: running (0), queued (1), finished (2)."""

    rank: int
    where: str
    params: tuple[Any, ...]
    order: str
    counter: str | None  # the task_counts row that counts this group exactly, if any
    index: str | None = None  # pinned index for the rows query

    def after(self, cursor: Task) -> tuple[str, list[Any]]:
        """Keyset condition: rows of this group that come after `cursor`."""
        if self.rank == 0:
            return "id > ?", [cursor.id]
        if self.rank == 1:
            return "(priority, queue_order, id) > (?, ?, ?)", [
                cursor.priority, cursor.internal["queue_order"], cursor.id,
            ]  # fmt: skip
        return "(finished_at, id) < (?, ?)", [cursor.finished_at, cursor.id]


def rank(status: Status) -> int:
    return {Status.RUNNING: 0, Status.QUEUED: 1}.get(status, 2)


def list_groups(
    statuses: set[Status], source: str | None, finished_since: str | None
) -> list[Group]:
    extra, params = ("", ()) if source is None else (" AND source = ?", (source,))
    groups = []
    if Status.RUNNING in statuses:
        counter = "running" if source is None else None
        groups.append(Group(0, RUNNING + extra, params, "ORDER BY id", counter))
    if Status.QUEUED in statuses:
        counter = "queued" if source is None else None
        groups.append(
            Group(1, "status = 'queued'" + extra, params, QUEUE_ORDER, counter, QUEUE_INDEX)
        )
    final = sorted(s.value for s in statuses if s in FINAL)
    if final:
        where = f"status IN ({marks(len(final))}) AND {FINISHED}" + extra
        values: tuple[Any, ...] = (*final, *params)
        if finished_since is not None:
            where, values = where + " AND finished_at >= ?", (*values, finished_since)
        groups.append(Group(2, where, values, HISTORY_ORDER, None, FINISHED_INDEX))
    return groups


def prune_plan(
    conn: sqlite3.Connection, older_than: str, keep_completed: int, keep_failed: int
) -> tuple[list[int], int]:
    """Finished tasks older than `older_than`, minus the newest completed/failed ones of
    each (source, route): (ids to delete, how many old ones the floors keep)."""
    rows = conn.execute(
        """
        SELECT id, status = 'completed' AND rn <= :kc OR status = 'failed' AND rn <= :kf
        FROM (
            SELECT id, status, finished_at, row_number() OVER (
                PARTITION BY source, route, status ORDER BY finished_at DESC, id DESC) AS rn
            FROM tasks
            WHERE status IN ('completed', 'failed', 'cancelled') AND status <> 'queued'
        )
        WHERE finished_at < :older ORDER BY id
        """,
        {"kc": keep_completed, "kf": keep_failed, "older": older_than},
    ).fetchall()
    return [r[0] for r in rows if not r[1]], sum(1 for r in rows if r[1])
