"""The versioned schema of the store. `PRAGMA user_version` is the number of migrations
applied; each migration runs in its own transaction with the version bump, so a crash
mid-upgrade leaves the file at the previous version, never in between.

Append new migrations to `MIGRATIONS`; never edit one that has shipped."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]

STATUSES = ("queued", "running", "completed", "failed", "cancelled")  # as v1 created them


def _v1(conn: sqlite3.Connection) -> None:
    """The whole initial schema: tasks, their indexes and counters, settings, schedule state."""
    statuses = ", ".join(f"'{s}'" for s in STATUSES)
    conn.execute(
        f"""
        CREATE TABLE tasks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL,
            sync_type TEXT NOT NULL,
            route TEXT NOT NULL,
            argv TEXT NOT NULL,
            params TEXT NOT NULL,
            priority INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ({statuses})),
            "trigger" TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 1,
            submitted_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            last_heartbeat TEXT,
            pid INTEGER,
            exit_code INTEGER,
            error TEXT,
            requested_by TEXT,
            not_before TEXT,
            progress TEXT,
            queue_order INTEGER NOT NULL,
            lost_count INTEGER NOT NULL DEFAULT 0,
            proc_starttime INTEGER,
            boot_id TEXT
        )
        """
    )
    # Dispatch order: the next queued task is the first entry of this index. id makes the
    # order total (list paging); source, route and not_before let dispatch skip excluded or
    # not-yet-due tasks inside the index instead of reading each row (5x at 100k queued).
    conn.execute(
        "CREATE INDEX tasks_queue ON tasks(priority, queue_order, id, source, route, not_before)"
        " WHERE status = 'queued'"
    )
    # Coalescing and "is this sync active" lookups.
    conn.execute(
        "CREATE INDEX tasks_active_key ON tasks(source, route, params)"
        " WHERE status IN ('queued', 'running')"
    )
    # History and `list` of finished tasks. Partial, like the status index: queued rows
    # (possibly a million) would only make every insert pay for entries nobody reads.
    conn.execute("CREATE INDEX tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL")
    conn.execute("CREATE INDEX tasks_status ON tasks(status) WHERE status <> 'queued'")
    # Retry timers: few rows, so the earliest not_before is cheap even at 1M queued.
    conn.execute(
        "CREATE INDEX tasks_not_before ON tasks(not_before)"
        " WHERE status = 'queued' AND not_before IS NOT NULL"
    )
    # Follow-up idempotency (retry:<id>, requeue:<id>) and history by trigger; manual
    # submissions are the bulk of the table and are left out to keep inserts cheap.
    conn.execute("""CREATE INDEX tasks_follow_up ON tasks("trigger") WHERE "trigger" <> 'manual'""")
    # Per-status counters, so `status` stays O(1) at a million queued. Status changes and
    # deletes keep them by trigger; inserts (only ever the enqueue Batch, always `queued`)
    # add their number once per batch, because a per-row trigger doubled the insert cost.
    conn.execute("CREATE TABLE task_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    conn.executemany("INSERT INTO task_counts (status, n) VALUES (?, 0)", [(s,) for s in STATUSES])
    conn.execute(
        """
        CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
            UPDATE task_counts SET n = n - 1 WHERE status = OLD.status;
        END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER tasks_count_update AFTER UPDATE OF status ON tasks
        WHEN OLD.status IS NOT NEW.status BEGIN
            UPDATE task_counts SET n = n - 1 WHERE status = OLD.status;
            UPDATE task_counts SET n = n + 1 WHERE status = NEW.status;
        END
        """
    )
    conn.execute("CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT)")
    conn.execute(
        """
        CREATE TABLE schedule_state (
            name TEXT PRIMARY KEY,
            last_fire TEXT,
            last_outcome TEXT,
            paused INTEGER NOT NULL DEFAULT 0,
            paused_at TEXT
        )
        """
    )


def _v2(conn: sqlite3.Connection) -> None:
    """The last success of a route (freshness) and of a route with its params (watermarks):
    one index seek each, however long the history. Partial: only completed rows pay."""
    conn.execute(
        "CREATE INDEX tasks_last_success ON tasks(source, route, started_at)"
        " WHERE status = 'completed'"
    )
    conn.execute(
        "CREATE INDEX tasks_watermark ON tasks(source, route, params, started_at)"
        " WHERE status = 'completed'"
    )
    # The argv a watermark route was queued with (placeholders intact), kept here once
    # `argv` holds the argv actually run, so a retry or requeue takes the newest time again.
    conn.execute("ALTER TABLE tasks ADD COLUMN argv_template TEXT")


def _v3(conn: sqlite3.Connection) -> None:
    """Queued tasks per source, kept like task_counts, so the per-source queue gauge and the
    dashboard's source table stay O(sources) at a million queued (a GROUP BY took 165 ms)."""
    conn.execute("CREATE TABLE queued_by_source (source TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    conn.execute(
        "INSERT INTO queued_by_source (source, n)"
        " SELECT source, count(*) FROM tasks WHERE status = 'queued' GROUP BY source"
    )
    # Rows leave `queued` (claim, cancel) or are deleted; they never come back to it. Inserts
    # are counted by the batch that makes them (store.rows.Batch), like task_counts.
    conn.execute(
        """
        CREATE TRIGGER queued_by_source_update AFTER UPDATE OF status ON tasks
        WHEN OLD.status = 'queued' AND NEW.status <> 'queued' BEGIN
            UPDATE queued_by_source SET n = n - 1 WHERE source = OLD.source;
        END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER queued_by_source_delete AFTER DELETE ON tasks
        WHEN OLD.status = 'queued' BEGIN
            UPDATE queued_by_source SET n = n - 1 WHERE source = OLD.source;
        END
        """
    )


def _v4(conn: sqlite3.Connection) -> None:
    """A cancel of a running task is persisted before it is acknowledged, so a restart that
    finds the row still `running` ends it `cancelled` instead of requeueing it."""
    conn.execute("ALTER TABLE tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0")


def _v5(conn: sqlite3.Connection) -> None:
    """The `deferred` status (the CHECK constraint is rebuilt: SQLite cannot alter one) and
    the per-source protection state (pause, throttle, breaker, rate window)."""
    old = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'")
    table_sql = old.fetchone()[0]
    check = "'cancelled')"
    assert check in table_sql, "v1 tasks table without the expected status CHECK"
    new_sql = table_sql.replace(check, "'cancelled', 'deferred')", 1)
    new_sql = new_sql.replace("CREATE TABLE tasks", "CREATE TABLE tasks_v2", 1)
    extras = conn.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'tasks' AND type IN ('index', 'trigger')"
        " AND sql IS NOT NULL ORDER BY type = 'trigger', name"
    ).fetchall()
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'tasks'").fetchone()
    conn.execute(new_sql)
    conn.execute("INSERT INTO tasks_v2 SELECT * FROM tasks")
    conn.execute("DROP TABLE tasks")
    conn.execute("ALTER TABLE tasks_v2 RENAME TO tasks")
    for (sql,) in extras:
        conn.execute(sql)
    if seq is not None:  # ids are never reused, deleted ones included
        conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'tasks'", seq)
    conn.execute("INSERT INTO task_counts (status, n) VALUES ('deferred', 0)")
    # Dispatch order within one source: when sources are held back (full, paused, out of
    # rate), the others are picked by a seek each instead of a walk past the held ones.
    conn.execute(
        "CREATE INDEX tasks_source_queue ON tasks(source, priority, queue_order, id, route,"
        " not_before) WHERE status = 'queued'"
    )
    conn.execute(
        """
        CREATE TABLE source_state (
            name TEXT PRIMARY KEY,
            paused INTEGER NOT NULL DEFAULT 0,
            paused_until TEXT,
            pause_reason TEXT,
            throttled_until TEXT,
            throttle_reason TEXT,
            breaker TEXT NOT NULL DEFAULT 'closed' CHECK (breaker IN
                ('closed', 'open', 'half_open')),
            failures INTEGER NOT NULL DEFAULT 0,
            cooldown_until TEXT,
            breaker_reason TEXT,
            probe INTEGER,
            starts TEXT NOT NULL DEFAULT '[]',
            last_success TEXT,
            last_failure TEXT
        )
        """
    )


MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5]
LATEST = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The file was written by a newer syncd; downgrading would lose data."""


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int = LATEST) -> list[int]:
    """Apply the missing migrations up to `target`; returns the versions applied.

    `conn` must be in autocommit mode (isolation_level=None): each step is its own
    BEGIN IMMEDIATE ... COMMIT, and re-reads the version inside it so two processes
    opening the same file cannot both apply a step."""
    applied: list[int] = []
    current = version(conn)
    if current > LATEST:
        raise SchemaTooNew(f"schema version {current} is newer than this syncd ({LATEST})")
    while current < target:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = version(conn)
            if current < target:
                MIGRATIONS[current](conn)
                current += 1
                conn.execute(f"PRAGMA user_version = {current}")
                applied.append(current)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return applied
