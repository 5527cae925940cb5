"""Building blocks of the store that need no lock of their own: the columns and SQL words,
row <-> Task mapping, error mapping and the prune plan. Everything here runs inside a
transaction the store opened."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from syncd.core.errors import StoreError
from syncd.core.models import ErrorCode, Status, Task

if TYPE_CHECKING:
    pass

PUBLIC = (
    "id", "source", "sync_type", "route", "argv", "params", "priority", "status", "trigger",
    "attempt", "submitted_at", "started_at", "finished_at", "last_heartbeat", "pid",
    "exit_code", "error", "requested_by", "not_before", "progress",
)  # fmt: skip
INTERNAL = (
    "queue_order", "lost_count", "proc_starttime", "boot_id", "argv_template", "cancel_requested",
)  # fmt: skip
COLUMNS = PUBLIC + INTERNAL
SELECT = "SELECT " + ", ".join(f'"{c}"' for c in COLUMNS) + " FROM tasks"
RETURNING = "RETURNING " + ", ".join(f'"{c}"' for c in COLUMNS)  # row_task() reads these
# Terms that match the partial indexes' WHERE clauses word for word, as SQLite requires
# before it will use them (status <> 'queued' for tasks_status, ... for tasks_finished).
RUNNING = "status = 'running' AND status <> 'queued'"
FINISHED = "status <> 'queued' AND finished_at IS NOT NULL"
QUEUE_ORDER = "ORDER BY priority, queue_order, id"  # dispatch order: the tasks_queue index
QUEUE_INDEX = "tasks_queue"
SOURCE_QUEUE_INDEX = "tasks_source_queue"  # dispatch order within one source
FINISHED_INDEX = "tasks_finished"  # newest-first history without sorting every finished row
HISTORY_ORDER = "ORDER BY finished_at DESC, id DESC"
MAX_ID = (  # the highest id ever handed out: AUTOINCREMENT's rule, deleted rows included
    "max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'tasks'), 0),"
    " coalesce((SELECT max(id) FROM tasks), 0))"
)
_CHUNK = 500  # ids per IN (...) list, well under SQLite's bound-parameter limit
PARAMS_COLUMN = COLUMNS.index("params")
encode_params = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def canonical_params(params: dict[str, Any]) -> str:
    """One spelling per params dict, so equal params compare equal in SQL."""
    return encode_params(params)


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


def prune_plan(
    conn: sqlite3.Connection, older_than: str, keep_completed: int, keep_failed: int
) -> tuple[list[int], int]:
    """Finished tasks older than `older_than`, minus what the floors keep: the newest
    completed/failed ones of each (source, route), and the last success of each params
    set of a watermark route (the run that set its next watermark: without it the next
    run starts from the route's default, a full re-sync). (ids to delete, how many old
    ones the floors keep.)"""
    rows = conn.execute(
        """
        SELECT id, status = 'completed' AND (rn <= :kc OR wp = 1 AND wm)
                   OR status = 'failed' AND rn <= :kf
        FROM (
            SELECT id, status, finished_at,
                row_number() OVER (PARTITION BY source, route, status
                                   ORDER BY finished_at DESC, id DESC) AS rn,
                row_number() OVER (PARTITION BY source, route, params, status
                                   ORDER BY started_at DESC, id DESC) AS wp,
                max(argv_template IS NOT NULL) OVER (
                    PARTITION BY source, route, params, status) AS wm
            FROM tasks
            WHERE status IN ('completed', 'failed', 'cancelled', 'deferred') AND status <> 'queued'
        )
        WHERE finished_at < :older ORDER BY id
        """,
        {"kc": keep_completed, "kf": keep_failed, "older": older_than},
    ).fetchall()
    return [r[0] for r in rows if not r[1]], sum(1 for r in rows if r[1])
