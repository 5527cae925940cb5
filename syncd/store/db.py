"""The connection half of the store: open (pragmas, quick_check, migrations, a write
probe), the lock and transaction helpers every write goes through, and the small tables
beside the queue (settings, schedule state) plus maintenance. store.py adds the tasks."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from syncd.core.clock import Clock, SystemClock
from syncd.core.errors import StoreError, StoreUnusable
from syncd.core.models import ErrorCode, Task
from syncd.store import migrations
from syncd.store.durable import WalSync
from syncd.store.gate import WritesFirst
from syncd.store.rows import (
    FINISHED,
    MAX_ID,
    SELECT,
    chunks,
    marks,
    prune_plan,
    row_task,
    store_error,
)
from syncd.store.writer import GroupWriter, rollback

log = logging.getLogger(__name__)

_CORRUPT_HINT = (
    "move the file aside (or restore a backup, or try `sqlite3 FILE .recover`) and start "
    "syncd again; it creates a new empty database"
)
_ACCESS_HINT = "make the file and its directory writable by the user syncd runs as"
_SCHEDULE_FIELDS = ("last_fire", "last_outcome", "paused", "paused_at")
_S = TypeVar("_S", bound="StoreBase")
_T = TypeVar("_T")
_SHORTEN_AFTER_MS = 50  # a wait for the store lock longer than this comes off busy_timeout
PRUNE_BATCH = 1000  # rows deleted per transaction: the store lock is held for one batch only
VACUUM_STEP = 256  # free pages given back per transaction


class StoreBase:
    """One connection and the lock that serialises every use of it (many threads call)."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, clock: Clock, busy_timeout_ms: int = 5000
    ):
        self.path = path
        self._conn = conn
        self._clock = clock
        self._lock = threading.RLock()
        self._writes_first = WritesFirst()
        self._busy_ms = int(busy_timeout_ms)
        self._closed = False
        # From here on SQLite's COMMIT does not fsync: every durable write is flushed by
        # WalSync before its caller goes on (migrations and the first commit were FULL).
        conn.execute("PRAGMA synchronous = NORMAL")
        self._wal_sync = WalSync(_wal_path(conn))
        self._writer = GroupWriter(
            conn, self._lock, self._busy_ms, path, self._writes_first, self._wal_sync
        )

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(
        cls: type[_S], path: Path, clock: Clock | None = None, *, busy_timeout_ms: int = 5000
    ) -> _S:
        """Open (creating if needed), check and migrate; StoreUnusable if that cannot work."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnusable(str(path), f"cannot open: {exc}", _ACCESS_HINT) from None
        try:
            _prepare(conn, busy_timeout_ms)
            problems = "; ".join(" ".join(r[0].split()) for r in conn.execute("PRAGMA quick_check"))
            if problems != "ok":
                raise StoreUnusable(str(path), f"quick_check failed: {problems}", _CORRUPT_HINT)
            applied = migrations.migrate(conn)
            # Prove the file, its directory (-wal, -shm) and the disk take a commit now, so
            # a read-only state dir fails at start and not at the first submit.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"PRAGMA user_version = {migrations.version(conn)}")
            conn.execute("COMMIT")
        except StoreUnusable:
            conn.close()
            raise
        except migrations.SchemaTooNew as exc:
            conn.close()
            raise StoreUnusable(str(path), str(exc), "upgrade syncd") from None
        except sqlite3.Error as exc:
            conn.close()
            name = getattr(exc, "sqlite_errorname", "") or ""
            access = name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM"))
            access = access or any(w in str(exc) for w in ("readonly", "unable to open"))
            hint = _ACCESS_HINT if access else _CORRUPT_HINT
            raise StoreUnusable(str(path), f"not usable: {exc}", hint) from None
        if applied:
            log.info("store %s: migrated to schema version %s", path, applied[-1])
        return cls(conn, path, clock or SystemClock(), busy_timeout_ms)

    def on_durability_lost(self, tell: Callable[[str], None]) -> None:
        """`tell(reason)` once if a flush of the WAL fails: nothing can be acknowledged after
        that, so the daemon stops rather than refuse every write while looking healthy."""
        self._wal_sync.on_failure = tell

    def durability_lost(self) -> str | None:
        """Why the store can no longer be written durably (None: it can)."""
        return self._wal_sync.failed

    def close(self) -> None:
        """Refresh planner statistics (bounded work, so shutdown stays fast) and close.

        After a failed flush the connection is left open: closing it would checkpoint WAL
        pages the kernel may have dropped into the database file, where the restart's
        recovery (which checks every frame) could no longer leave them out. The daemon
        then exits without closing it (run_daemon)."""
        self._writer.stop()  # the group writes queued so far are committed and answered
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(StoreError):  # a failure is kept in _wal_sync
                self._wal_sync.wait()  # every commit made so far, so no late waiter syncs
            if self._wal_sync.failed is not None:
                log.error("store %s: left unclosed, not checkpointed: a flush failed", self.path)
                return
            try:
                self._conn.execute("PRAGMA analysis_limit = 400")
                self._conn.execute("PRAGMA optimize")
            except sqlite3.Error as exc:
                log.warning("store %s: optimize at close failed: %s", self.path, exc)
            self._conn.close()
            self._wal_sync.close()

    # -- transactions ----------------------------------------------------------------------
    def _group(
        self, what: str, fn: Callable[[sqlite3.Connection], _T], *, this_boot_only: bool = False
    ) -> _T:
        """A hot write: `fn(conn)` runs in the writer thread's next group transaction (with
        the writes of other callers; if it raises, it alone fails) and its result is returned
        after that commit. Errors are raised here, mapped as in `_write`."""
        if self._lock._is_owned():  # type: ignore[attr-defined]
            # Called under the store lock (inside a `_write`): the writer thread would wait
            # for this caller for ever. Join the open transaction, or take one of its own.
            if self._conn.in_transaction:
                return fn(self._conn)
            with self._write(what, this_boot_only=this_boot_only) as conn:
                return fn(conn)
        return self._writer.run(what, fn, durable=not this_boot_only)

    @contextmanager
    def _write(self, what: str, *, this_boot_only: bool = False) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the store lock; on any error nothing is written.
        The WAL is flushed (WalSync) after the lock is released and before the caller goes on.

        `this_boot_only`: facts that mean nothing after a power loss (a pid, a heartbeat)
        are not flushed: they survive a crash of the daemon, and the next flush syncs them
        with it, as WAL frames are written in order."""
        seq = 0
        with self._hold(what) as conn:
            try:
                self._wal_sync.check()
                conn.execute("BEGIN IMMEDIATE")
                before = conn.total_changes
                yield conn
                conn.execute("COMMIT")
                if not this_boot_only:
                    seq = self._wal_sync.after_commit(conn.total_changes != before)
            except BaseException as exc:
                rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    mapped = store_error(exc, what)
                    if mapped is not None:
                        log.warning("store %s: %s", self.path, mapped.message)
                        raise mapped from exc
                raise
        if seq:
            self._wal_sync.wait(seq)

    @contextmanager
    def _hold(self, what: str) -> Iterator[sqlite3.Connection]:
        """The store lock, waited for no longer than busy_timeout, and the connection. A
        write stuck on a foreign lock must not make each caller behind it wait a whole
        busy_timeout more: what the lock wait used comes off SQLite's own busy timeout."""
        start = time.monotonic()
        reading = what == "read" and not self._lock._is_owned()  # type: ignore[attr-defined]
        if reading:
            self._wal_sync.wait()  # the usual flush, while the writer goes on with the next batch
        if not self._acquire(what):
            message = f"database is busy, try again ({what}): another write is waiting for it"
            log.warning("store %s: %s", self.path, message)
            raise StoreError(ErrorCode.BUSY, message)
        try:
            if reading:
                self._wal_sync.wait()  # show nothing a power failure could still take back
            waited_ms = int((time.monotonic() - start) * 1000)
            shorten = waited_ms > _SHORTEN_AFTER_MS
            if shorten:
                self._conn.execute(f"PRAGMA busy_timeout = {max(1, self._busy_ms - waited_ms)}")
            try:
                yield self._conn
            finally:
                if shorten:
                    self._conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        finally:
            self._lock.release()

    def _acquire(self, what: str) -> bool:
        """The store lock within busy_timeout; a read lets waiting writes go first (unless
        this thread holds the lock already: inside a write, the write is this thread's)."""
        timeout = self._busy_ms / 1000
        if what != "read":
            with self._writes_first.writing():
                return self._lock.acquire(timeout=timeout)
        if not self._lock._is_owned():  # type: ignore[attr-defined]
            start = time.monotonic()
            if not self._writes_first.let_writes_first(timeout):
                return False
            timeout = max(0.0, timeout - (time.monotonic() - start))
        return self._lock.acquire(timeout=timeout)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._hold("read") as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                mapped = store_error(exc, "read")
                if mapped is not None:
                    raise mapped from exc
                raise

    def _tasks(
        self, where: str, params: Sequence[Any] = (), tail: str = "", index: str | None = None
    ) -> list[Task]:
        """Tasks matching `where`; `index` pins the plan (SQLite's statistics of a queue
        that is all one status can talk the planner into a full scan and a sort)."""
        source = f"{SELECT} INDEXED BY {index}" if index else SELECT
        return [row_task(r) for r in self._read(f"{source} WHERE {where} {tail}", params)]

    def max_id(self) -> int:
        """The highest id ever handed out (deleted rows included)."""
        return int(self._read(f"SELECT {MAX_ID}")[0][0])

    # -- settings and schedule state -------------------------------------------------------
    def get_setting(self, name: str) -> str | None:
        rows = self._read("SELECT value FROM settings WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def set_setting(self, name: str, value: str | None) -> None:
        """Persist a runtime setting; None deletes it (back to the config's value)."""
        with self._write("set_setting") as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE name = ?", (name,))
            else:
                conn.execute(
                    "INSERT INTO settings (name, value) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (name, value),
                )

    def store_id(self) -> str:
        """A random id made once per database. Each task's process carries it with its task
        id (SYNCD_STORE_ID, SYNCD_TASK_ID), so a restart finds a task's processes even when
        its pid was never recorded, and never those of another syncd's database."""
        with self._write("store_id") as conn:
            conn.execute(
                "INSERT OR IGNORE INTO settings (name, value) VALUES ('store_id', ?)",
                (secrets.token_hex(8),),
            )
            return str(
                conn.execute("SELECT value FROM settings WHERE name = 'store_id'").fetchone()[0]
            )

    def get_schedule_state(self, name: str) -> dict[str, Any] | None:
        """{last_fire, last_outcome (dict or None), paused (bool), paused_at} or None."""
        rows = self._read(
            f"SELECT {', '.join(_SCHEDULE_FIELDS)} FROM schedule_state WHERE name = ?", (name,)
        )
        if not rows:
            return None
        state = dict(zip(_SCHEDULE_FIELDS, rows[0], strict=True))
        outcome = state["last_outcome"]
        state["last_outcome"] = None if outcome is None else json.loads(outcome)
        state["paused"] = bool(state["paused"])
        return state

    def put_schedule_state(self, name: str, **fields: Any) -> None:
        """Upsert: only the given fields change."""
        with self._write("schedule_state") as conn:
            put_schedule_state_in(conn, name, fields)

    def delete_schedule_state(self, name: str) -> None:
        with self._write("schedule_state") as conn:
            conn.execute("DELETE FROM schedule_state WHERE name = ?", (name,))

    def schedule_state_names(self) -> list[str]:
        return [r[0] for r in self._read("SELECT name FROM schedule_state ORDER BY name")]

    # -- maintenance -----------------------------------------------------------------------
    def prune(
        self,
        *,
        older_than: str,
        keep_completed: int = 3,
        keep_failed: int = 1,
        dry_run: bool = False,
        stop: Callable[[], bool] | None = None,
    ) -> tuple[list[int], int]:
        """Delete finished tasks older than `older_than`, keeping the newest completed and
        failed ones of every (source, route); returns (deleted ids, kept by those floors).

        The plan is read on a connection of its own (no store lock), the rows go in batches
        of PRUNE_BATCH, each its own transaction: dispatch and submits wait for one batch at
        most, however large the history. `stop()` true ends it between batches."""
        with self._read_only() as ro:
            ids, kept = prune_plan(ro, older_than, keep_completed, keep_failed)
        if dry_run:
            return ids, kept
        deleted: list[int] = []
        for start in range(0, len(ids), PRUNE_BATCH):
            if stop is not None and stop():
                log.info("store %s: prune stopped after %d rows", self.path, len(deleted))
                break
            batch = ids[start : start + PRUNE_BATCH]
            with self._write("prune") as conn:
                for chunk in chunks(batch):
                    conn.execute(
                        f"DELETE FROM tasks WHERE id IN ({marks(len(chunk))}) AND {FINISHED}",
                        chunk,
                    )
            deleted += batch
        log.info(
            "store %s: pruned %d finished tasks, %d kept as floor", self.path, len(deleted), kept
        )
        return deleted, kept

    def incremental_vacuum(self) -> int:
        """Give free pages back to the file system, VACUUM_STEP pages per transaction so no
        one waits for all of them; returns the bytes freed."""
        freed = 0
        while True:
            with self._lock:
                try:
                    conn = self._conn
                    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
                    before = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
                    if before == 0:
                        return freed
                    # executescript steps the pragma to the end; execute() frees one page only
                    conn.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP});")
                    after = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
                except sqlite3.Error as exc:
                    mapped = store_error(exc, "incremental_vacuum")
                    if mapped is not None:
                        raise mapped from exc
                    raise
            freed += (before - after) * page_size
            if after >= before:  # nothing more can go (e.g. auto_vacuum is off)
                return freed

    def integrity_check(self) -> str:
        """PRAGMA integrity_check on a read-only connection of its own: it reads the whole
        file, and must not hold the store lock (dispatch, submits) while it does."""
        try:
            with self._read_only() as ro:
                return "\n".join(r[0] for r in ro.execute("PRAGMA integrity_check"))
        except sqlite3.Error as exc:
            mapped = store_error(exc, "integrity_check")
            if mapped is not None:
                raise mapped from exc
            raise

    @contextmanager
    def _read_only(self) -> Iterator[sqlite3.Connection]:
        """A separate read-only connection (WAL: it reads a snapshot while writes go on)."""
        conn = sqlite3.connect(
            f"{Path(self.path).resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=self._busy_ms / 1000,
            check_same_thread=False,
        )
        try:
            yield conn
        finally:
            conn.close()

    def quick_check(self) -> str:
        return "\n".join(r[0] for r in self._read("PRAGMA quick_check"))


def _schedule_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Schedule state fields as stored (JSON outcome, 0/1 paused); unknown ones refused."""
    unknown = set(fields) - set(_SCHEDULE_FIELDS)
    if unknown:
        raise ValueError(f"unknown schedule state fields {sorted(unknown)}")
    out = dict(fields)
    if out.get("last_outcome") is not None:
        out["last_outcome"] = json.dumps(out["last_outcome"], sort_keys=True)
    if "paused" in out:
        out["paused"] = int(bool(out["paused"]))
    return out


def put_schedule_state_in(conn: sqlite3.Connection, name: str, fields: dict[str, Any]) -> None:
    """Upsert a schedule's state inside the caller's transaction; only `fields` change."""
    fields = _schedule_fields(fields)
    names = ["name", *fields]
    updates = ", ".join(f"{k} = excluded.{k}" for k in fields)
    conflict = f"DO UPDATE SET {updates}" if fields else "DO NOTHING"
    conn.execute(
        f"INSERT INTO schedule_state ({', '.join(names)}) VALUES ({marks(len(names))})"
        f" ON CONFLICT (name) {conflict}",
        (name, *fields.values()),
    )


def _wal_path(conn: sqlite3.Connection) -> Path:
    """Where SQLite keeps the WAL: beside the database file it opened, which is the target
    when the configured path is a symlink (a state dir linking to a database on another
    disk): the -wal beside the link would never exist."""
    for _, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return Path(f"{file}-wal")
    raise StoreUnusable("?", "no main database on the connection", _CORRUPT_HINT)


def _prepare(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """Connection pragmas: WAL, synchronous=FULL while opening (StoreBase then flushes the
    WAL itself after each durable commit: WalSync), a busy timeout. auto_vacuum only takes
    effect before the first table exists, so it is set before migrating a new file."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    if migrations.version(conn) == 0:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot switch to WAL journal mode (got {mode!r})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
