"""The store's API: the queue and history over one connection, every write one transaction
(the hot ones grouped by the writer thread), every status change a compare-and-set.

Crash safety comes from the database, not from ordering tricks: a submit, a finish and
its follow-up (retry or requeue) are each one transaction, so after a crash they exist
entirely or not at all."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Collection, Sequence
from typing import Any

from syncd.core.clock import iso, parse_iso
from syncd.core.errors import StoreError, SyncdError
from syncd.core.failpoints import failpoint, injected_error
from syncd.core.models import (
    FINAL,
    FOLLOW_UP_KINDS,
    TRANSITIONS,
    ErrorCode,
    NewTask,
    Status,
    Task,
    trigger_follow_up,
)
from syncd.store.cancels import Cancels
from syncd.store.db import put_schedule_state_in
from syncd.store.enqueue import Batch
from syncd.store.listing import list_groups, rank
from syncd.store.requests import Ending, Pick
from syncd.store.rows import (
    FINISHED,
    FINISHED_INDEX,
    HISTORY_ORDER,
    QUEUE_INDEX,
    QUEUE_ORDER,
    RETURNING,
    SOURCE_QUEUE_INDEX,
    canonical_params,
    chunks,
    follow_up_exists,
    get_in,
    marks,
    row_task,
)
from syncd.store.sources import SourceRows, put_source_state_in
from syncd.store.success import Successes

log = logging.getLogger(__name__)


_SETTABLE = frozenset(
    {"started_at", "finished_at", "pid", "exit_code", "error", "progress", "last_heartbeat",
     "proc_starttime", "boot_id", "argv"}
)  # fmt: skip


class Store(Successes, SourceRows, Cancels):
    """The task queue and history in one SQLite file; safe to call from many threads."""

    # -- enqueue ---------------------------------------------------------------------------
    def enqueue(self, new: NewTask, *, allow_duplicate: bool = False) -> tuple[Task, bool]:
        """Queue `new`, or coalesce it into the queued task with the same (source, route,
        params): that one keeps the more urgent priority and the earlier not_before."""
        return self.enqueue_many([(new, allow_duplicate)])[0]

    def enqueue_many(
        self,
        items: list[tuple[NewTask, bool]],
        *,
        schedule_state: tuple[str, dict[str, Any]] | None = None,
        claim: Callable[[sqlite3.Connection], object] | None = None,
    ) -> list[tuple[Task, bool]]:
        """(new, allow_duplicate) pairs in one transaction; items coalesce with each other.
        `schedule_state` (name, fields): a schedule's fire commits with its state, so a
        crash cannot keep the task and lose the slot's `last_fire` (it would fire again).
        `claim` runs after the inserts in the same transaction: the pool claims what the
        free slots can take without a commit (an fsync) of its own."""
        if not items:
            return []
        now = iso(self._clock.now()) or ""

        def write(conn: sqlite3.Connection) -> list[tuple[Task, bool]]:
            results = Batch(conn, now).add(items)
            if schedule_state is not None:
                put_schedule_state_in(conn, *schedule_state)
            if claim is not None:
                claim(conn)
            return results

        results = self._group("enqueue", write)
        failpoint("enqueue_after_commit")
        return results

    # -- dispatch --------------------------------------------------------------------------
    def next_queued(
        self,
        now: str,
        *,
        exclude_sources: Collection[str] = (),
        exclude_routes: Collection[tuple[str, str]] = (),
    ) -> Task | None:
        """The task dispatch would start next: priority, then queue order, among those due."""
        pick = Pick(now, exclude_sources, exclude_routes)
        with self._hold("read") as conn:
            found = pick.choose(conn)
            return None if found is None else get_in(conn, found)

    def next_not_before(self, now: str | None = None) -> str | None:
        """The earliest future not_before among queued tasks: when to wake for a retry."""
        now = now or iso(self._clock.now())
        rows = self._read(
            "SELECT min(not_before) FROM tasks"
            " WHERE status = 'queued' AND not_before IS NOT NULL AND not_before > ?",
            (now,),
        )
        return rows[0][0] if rows else None

    def transition(self, task_id: int, old: Status, new: Status, **fields: Any) -> Task | None:
        """Compare-and-set old → new; None when the task is no longer `old`."""
        if new not in TRANSITIONS[old]:
            raise ValueError(f"transition {old.value} -> {new.value} is not allowed")
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} in a transition")
        if new in FINAL and "finished_at" not in fields:
            fields["finished_at"] = iso(self._clock.now())
        if "argv" in fields:
            fields["argv"] = json.dumps(fields["argv"])
        sets = "".join(f", {k} = ?" for k in fields)
        row = self._group(
            "transition",
            lambda conn: conn.execute(  # RETURNING: the new row without a second statement
                f"UPDATE tasks SET status = ?{sets} WHERE id = ? AND status = ? {RETURNING}",
                (new.value, *fields.values(), task_id, old.value),
            ).fetchone(),
        )
        return None if row is None else row_task(row)

    def set_running_fields(self, task_id: int, *, wait: bool = True, **fields: Any) -> bool:
        """Record facts about a running task (pid, process identity, ...); False if it is
        not running.

        Not fsynced: they identify a process of this boot, and a power loss ends the boot.
        `wait=False`: queue the write and return True at once (a failure is logged); the
        caller's later writes, such as the task's finish, commit with it or after it."""
        unknown = set(fields) - _SETTABLE
        if unknown or not fields:
            raise ValueError(f"cannot set {sorted(unknown) or 'nothing'} on a running task")
        if "argv" in fields:
            fields["argv"] = json.dumps(fields["argv"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        if injected_error("set_running_fields"):  # crash tests: the pid write fails
            raise StoreError(ErrorCode.STORAGE_ERROR, "database error (update): injected")

        def write(conn: sqlite3.Connection) -> int:
            return conn.execute(
                f"UPDATE tasks SET {sets} WHERE id = ? AND status = 'running'",
                (*fields.values(), task_id),
            ).rowcount

        if not wait:
            self._writer.post("update", write)
            return True
        return self._group("update", write, this_boot_only=True) > 0

    def post_progress(self, task_id: int, latest: Callable[[], str | None]) -> None:
        """Queue a write of a running task's progress line and return at once (this boot
        only, like a heartbeat). `latest` is asked when the write runs, so a burst of lines
        costs one write that records the newest."""

        def write(conn: sqlite3.Connection) -> None:
            text = latest()
            if text is not None:
                conn.execute(
                    "UPDATE tasks SET progress = ? WHERE id = ? AND status = 'running'",
                    (text, task_id),
                )

        self._writer.post("progress", write)

    def finish(
        self,
        task_id: int,
        status: Status,
        *,
        finished_at: str,
        exit_code: int | None,
        error: str | None,
        retry: NewTask | None = None,
        requeue: NewTask | None = None,
        progress: str | None = None,
        defer: NewTask | None = None,
    ) -> tuple[Task | None, Task | None]:
        """running → final status and its follow-up task, in one transaction; `progress`
        (the last progress line) is recorded in the same write, not a heartbeat of its own.

        Returns (finished task, follow-up); (None, None) when the task was not running."""
        ending = Ending(status, finished_at, exit_code, error, retry, requeue, progress, defer)
        done, follow, _ = self.finish_and_claim(task_id, ending, None, "")
        return done, follow

    def finish_and_claim(
        self,
        task_id: int,
        ending: Ending,
        pick: Pick | None = None,
        started_at: str = "",
        *,
        claim: Callable[[sqlite3.Connection], Task | None] | None = None,
    ) -> tuple[Task | None, Task | None, Task | None]:
        """finish(), and in the same transaction claim (queued → running, `started_at`) the
        task `pick` finds: the slot the finish frees is refilled without a commit (an fsync)
        of its own. `claim` instead of a pick: it runs in the transaction (the pool decides
        its pick there, see `claim`). No pick and no claim, no claim.

        Returns (finished task, follow-up, claimed task or None)."""
        if claim is None and pick is not None:
            claim = self._claim_by(pick, started_at)

        def write(conn: sqlite3.Connection) -> tuple[Task | None, Task | None, Task | None]:
            if ending.source_state is not None:
                source, snapshot = ending.source_state
                put_source_state_in(conn, source, snapshot())
            done, follow = self._finish_in(conn, task_id, ending)
            claimed = None if claim is None else claim(conn)
            failpoint("finish_before_commit")
            return done, follow, claimed

        done, follow, claimed = self._group("finish", write)
        failpoint("finish_after_commit")
        return done, follow, claimed

    def _claim_by(self, pick: Pick, started_at: str) -> Callable[[sqlite3.Connection], Task | None]:
        return lambda conn: self.claim_in(conn, pick, started_at)

    def claim(self, claim: Callable[[sqlite3.Connection], Task | None]) -> Task | None:
        """Run `claim(conn)` in the next group transaction and return what it claimed once
        committed. The pool decides its pick inside the transaction, under its own lock
        held for that only (never across the commit), so claims and finishes of every
        worker share commits and each pick sees the claims made before it."""
        return self._group("claim", claim)

    def claim_in(self, conn: sqlite3.Connection, pick: Pick, started_at: str) -> Task | None:
        """queued → running for the task `pick` finds, inside the caller's transaction."""
        chosen = pick.choose(conn)
        if chosen is None:
            return None
        row = conn.execute(
            f"UPDATE tasks SET status = 'running', started_at = ? WHERE id = ?"
            f" AND status = 'queued' {RETURNING}",
            (started_at, chosen),
        ).fetchone()
        return None if row is None else row_task(row)

    def queued_in(self, conn: sqlite3.Connection) -> int:
        """Queued tasks, from the trigger-kept counter, inside the caller's transaction."""
        row = conn.execute("SELECT n FROM task_counts WHERE status = 'queued'").fetchone()
        return int(row[0]) if row is not None else 0

    def sync(self) -> None:
        """Return once every write queued before this call is committed durably."""
        self._group("sync", lambda conn: None)

    def _finish_in(
        self, conn: sqlite3.Connection, task_id: int, ending: Ending
    ) -> tuple[Task | None, Task | None]:
        follow_up = ending.follow_up(task_id)  # a bad one raises: the transaction rolls back
        progress = ending.progress
        row = conn.execute(
            "UPDATE tasks SET status = ?, finished_at = ?, exit_code = ?, error = ?,"
            " progress = coalesce(?, progress),"
            " last_heartbeat = CASE WHEN ? IS NULL THEN last_heartbeat ELSE ? END"
            f" WHERE id = ? AND status = 'running' {RETURNING}",
            (ending.status.value, ending.finished_at, ending.exit_code, ending.error, progress,
             progress, ending.finished_at, task_id),
        ).fetchone()  # fmt: skip
        if row is None:
            return None, None
        follow: Task | None = None
        if follow_up is not None and not follow_up_exists(conn, follow_up.trigger):
            batch = Batch(conn, iso(self._clock.now()) or ending.finished_at)
            follow = batch.add([(follow_up, True)])[0][0]
        return row_task(row), follow

    def heartbeat(self, beats: list[tuple[int, str, str | None]]) -> None:
        """One transaction per monitor tick, whatever the number of running tasks."""
        if not beats:
            return
        rows = [(beat, progress, task_id) for task_id, beat, progress in beats]
        self._group(
            "heartbeat",
            lambda conn: conn.executemany(
                "UPDATE tasks SET last_heartbeat = ?, progress = coalesce(?, progress)"
                " WHERE id = ? AND status = 'running'",
                rows,
            ),
            this_boot_only=True,
        )

    def set_priority(self, task_id: int, priority: int) -> Task:
        with self._write("set_priority") as conn:
            row = conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None:
                raise SyncdError(ErrorCode.UNKNOWN_TASK, f"no task {task_id}")
            if row[0] != Status.QUEUED.value:
                raise SyncdError(
                    ErrorCode.NOT_QUEUED, f"task {task_id} is {row[0]}, not queued",
                    {"id": task_id, "status": row[0]},
                )  # fmt: skip
            conn.execute("UPDATE tasks SET priority = ? WHERE id = ?", (priority, task_id))
            task = get_in(conn, task_id)
        assert task is not None
        return task

    # -- queries ---------------------------------------------------------------------------
    def missing_ids(self, ids: Collection[int]) -> set[int]:
        """Those of `ids` with no row (deleted, or never handed out)."""
        return set(ids) - set(self.statuses(ids))

    def statuses(self, ids: Collection[int]) -> dict[int, str]:
        """The status of each of `ids` that has a row: one indexed query per 500 ids."""
        found: dict[int, str] = {}
        for chunk in chunks(list(ids)):
            sql = f"SELECT id, status FROM tasks WHERE id IN ({marks(len(chunk))})"
            found.update((row[0], row[1]) for row in self._read(sql, chunk))
        return found

    def get(self, task_id: int) -> Task | None:
        found = self._tasks("id = ?", (task_id,))
        return found[0] if found else None

    def follow_up_of(self, task_id: int) -> Task | None:
        """The task queued by this one's end (its retry, requeue or defer), if any: a task
        has one follow-up at most."""
        triggers = [trigger_follow_up(kind, task_id) for kind in FOLLOW_UP_KINDS]
        found = self._tasks(
            f'"trigger" IN ({marks(len(triggers))}) AND "trigger" <> \'manual\'',
            triggers,
            "LIMIT 1",
            index="tasks_follow_up",
        )
        return found[0] if found else None

    def active_for(self, source: str, route: str, params: dict[str, Any]) -> Task | None:
        """The running (else queued) task of this sync, if any: schedule overlap checks."""
        found = self._tasks(
            "source = ? AND route = ? AND params = ? AND status IN ('queued', 'running')",
            (source, route, canonical_params(params)),
            "ORDER BY status = 'running' DESC, id LIMIT 1",
        )
        return found[0] if found else None

    def tasks_with_status(self, status: Status, limit: int | None = None) -> list[Task]:
        """Queued ones in dispatch order, the others by id."""
        index = QUEUE_INDEX if status is Status.QUEUED else None
        if status is Status.QUEUED:
            where, order = "status = 'queued'", QUEUE_ORDER
        else:
            where, order = "status = ? AND status <> 'queued'", "ORDER BY id"
        params: list[Any] = [] if status is Status.QUEUED else [status.value]
        if limit is not None:
            order, params = order + " LIMIT ?", [*params, limit]
        return self._tasks(where, params, order, index)

    def queued_ids_of_routes_not_in(self, keep: Callable[[str, str], bool]) -> list[int]:
        """Ids of queued tasks whose (source, route) `keep` rejects: what a
        reload would strand. The distinct routes come from the queue's covering index, and
        rows are read only for the routes rejected (a reload read every queued row)."""
        pairs = self._read(
            f"SELECT DISTINCT source, route FROM tasks INDEXED BY {SOURCE_QUEUE_INDEX}"
            " WHERE status = 'queued'"
        )
        ids: list[int] = []
        for source, route in pairs:
            if not keep(source, route):
                ids += [row[0] for row in self._read(
                    f"SELECT id FROM tasks INDEXED BY {SOURCE_QUEUE_INDEX}"
                    " WHERE status = 'queued' AND source = ? AND route = ?",
                    (source, route),
                )]  # fmt: skip
        return ids

    def recent_durations(self, source: str, route: str, limit: int) -> list[float]:
        """Seconds taken by the route's last `limit` completed runs, newest first (explain's
        estimates). The (source, route, params) index narrows the rows."""
        rows = self._read(
            "SELECT started_at, finished_at FROM tasks WHERE source = ? AND route = ?"
            " AND status = 'completed' AND started_at IS NOT NULL AND finished_at IS NOT NULL"
            " ORDER BY finished_at DESC LIMIT ?",
            (source, route, limit),
        )
        out = []
        for started, finished in rows:
            a, b = parse_iso(started), parse_iso(finished)
            if a is not None and b is not None:
                out.append(max(0.0, (b - a).total_seconds()))
        return out

    def deferral_depth(self, task: Task) -> int:
        """How many deferrals in a row led to `task` (its `defer:<id>` chain), the task itself
        not counted. Stops at the first link that is not a deferral (or was pruned)."""
        depth, trigger = 0, task.trigger
        while trigger.startswith("defer:") and depth < 10_000:
            rows = self._read('SELECT "trigger" FROM tasks WHERE id = ?', (int(trigger[6:]),))
            depth += 1
            if not rows:
                break
            trigger = rows[0][0]
        return depth

    def queued_ids(self, source: str | None = None) -> list[int]:
        where, params = "status = 'queued'", []
        if source is not None:
            where, params = where + " AND source = ?", [source]
        rows = self._read(
            f"SELECT id FROM tasks INDEXED BY {QUEUE_INDEX} WHERE {where} {QUEUE_ORDER}", params
        )
        return [r[0] for r in rows]

    def counts(self) -> dict[str, int]:
        """{"queued": n, "running": n} from the trigger-kept counters: O(1) at any size."""
        rows = self._read("SELECT status, n FROM task_counts WHERE status IN ('queued', 'running')")
        out = {"queued": 0, "running": 0}
        out.update({status: int(n) for status, n in rows})
        return out

    def queued_by_source(self) -> dict[str, int]:
        """Queued tasks per source from the trigger-kept counters (sources with none left out)."""
        rows = self._read("SELECT source, n FROM queued_by_source WHERE n > 0 ORDER BY source")
        return {source: int(n) for source, n in rows}

    def finished_counts(self, since: str, bucket_seconds: int) -> list[tuple[int, str, int]]:
        """(bucket start as Unix seconds, status, count) of the tasks finished at or after
        `since`: what the daemon's 24 h throughput series is seeded from at start."""
        rows = self._read(
            f"SELECT CAST(strftime('%s', finished_at) AS INTEGER) / ?1 * ?1 AS b, status,"
            f" count(*) FROM tasks INDEXED BY {FINISHED_INDEX}"
            f" WHERE {FINISHED} AND finished_at >= ?2 GROUP BY b, status",
            (bucket_seconds, since),
        )
        return [(int(b), str(status), int(n)) for b, status, n in rows]

    def list_tasks(
        self,
        *,
        statuses: Collection[Status],
        source: str | None = None,
        finished_since: str | None = None,
        limit: int = 200,
        after_id: int | None = None,
    ) -> tuple[list[Task], int]:
        """Running (by id), then queued (dispatch order), then finished (newest first);
        `after_id` is a cursor: the page starts after that task's place in this order.
        One hold of the store lock for every group's query: a task claimed or finished
        between two of them was missing from the page (neither queued nor running yet)."""
        with self._hold("read"):
            return self._list_tasks(statuses, source, finished_since, limit, after_id)

    def _list_tasks(
        self,
        statuses: Collection[Status],
        source: str | None,
        finished_since: str | None,
        limit: int,
        after_id: int | None,
    ) -> tuple[list[Task], int]:
        groups = list_groups(set(statuses), source, finished_since)
        total = sum(self._count(g.where, g.params, g.counter) for g in groups)
        cursor = None if after_id is None else self.get(after_id)
        if after_id is not None and cursor is None:
            return [], total
        start = -1 if cursor is None else rank(cursor.status)
        out: list[Task] = []
        for group in groups:
            if len(out) >= limit or group.rank < start:
                continue
            where, params = group.where, list(group.params)
            if cursor is not None and group.rank == start:
                cond, values = group.after(cursor)
                where, params = f"{where} AND {cond}", params + values
            tail = f"{group.order} LIMIT ?"
            out += self._tasks(where, [*params, limit - len(out)], tail, group.index)
        return out, total

    def _count(self, where: str, params: Sequence[Any], counter: str | None) -> int:
        if counter is not None:
            rows = self._read("SELECT n FROM task_counts WHERE status = ?", (counter,))
        else:
            rows = self._read(f"SELECT count(*) FROM tasks WHERE {where}", params)
        return int(rows[0][0]) if rows else 0

    def history(
        self,
        *,
        source: str | None = None,
        sync_type: str | None = None,
        statuses: Collection[Status] | None = None,
        trigger: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
        before: tuple[str, int] | None = None,
    ) -> list[Task]:
        """Finished tasks, newest first. `since` <= finished_at <= `until`; a trigger without
        a colon ("schedule", "retry") matches every trigger of that kind. `before` is a
        page cursor, (finished_at, id) of the last row seen: rows strictly after it in this
        order (many rows share one finished_at after a bulk cancel)."""
        final = sorted(s.value for s in (FINAL if statuses is None else statuses) if s in FINAL)
        if not final:
            return []
        where, params = [f"status IN ({marks(len(final))})", FINISHED], list[Any](final)
        for column, value in (("source", source), ("sync_type", sync_type)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if trigger is not None and ":" in trigger:
            where.append('"trigger" = ?')
            params.append(trigger)
        elif trigger is not None:
            where.append("""("trigger" = ? OR "trigger" LIKE ? ESCAPE '\\')""")
            escaped = trigger.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params += [trigger, escaped + ":%"]
        for op, value in ((">=", since), ("<=", until)):
            if value is not None:
                where.append(f"finished_at {op} ?")
                params.append(value)
        if before is not None:  # a range on the index, then the tie on id (an OR of the
            # two was planned as a multi-index OR and a sort of the whole history per page)
            where.append("finished_at <= ? AND (finished_at < ? OR id < ?)")
            params += [before[0], before[0], before[1]]
        tail = f"{HISTORY_ORDER} LIMIT ?"
        return self._tasks(" AND ".join(where), [*params, limit], tail, FINISHED_INDEX)
