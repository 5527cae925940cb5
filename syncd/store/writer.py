"""Group commit. A hot write is handed, as a closure, to one writer thread; the thread runs
every closure queued so far in ONE transaction (a failing one undoes it and gets its own
error; the others run again in the next), commits once (one fsync for all) and only then
answers each caller. The fsync is not in the COMMIT (see `durable`): each caller of a
durable write syncs the WAL, or waits for the sync in flight, before it returns, while the
writer runs the next batch. A write that finds the writer idle and nobody else waiting runs in
its caller's thread instead (with any posted writes): handing it to the writer thread and
back was two thread wake-ups per write, most of an uncontended submit's answer on a busy
machine. Acknowledged still means durable: no caller returns before the commit that
holds its write is on disk."""

from __future__ import annotations

import _thread
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from syncd.core.errors import StoreError
from syncd.core.latch import Latch
from syncd.core.models import ErrorCode
from syncd.store.durable import WalSync
from syncd.store.gate import WritesFirst
from syncd.store.rows import store_error

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BATCH = 256  # closures per transaction: bounds how long one commit keeps the others
_SHORTEN_AFTER_MS = 50  # a batch older than this takes its wait off busy_timeout
# A write that returned with the transaction gone: SQLite rolled it back (a full disk, an I/O
# error) under a write that caught the error itself. The writes after it would otherwise
# each commit on their own, outside the batch, and its callers be told they failed.
_LOST_TRANSACTION = (
    "the database rolled back the transaction during %s (a full disk or an I/O error); "
    "nothing of it was written"
)
# A posted write (a pid, a progress line) waits this long for a write someone waits on, and
# rides in its transaction: a short task's pid record and its finish are one commit, not two.
POST_GATHER_SECONDS = 0.05


class _Job(Generic[T]):
    __slots__ = (
        "commit_seq",
        "detached",
        "durable",
        "error",
        "fn",
        "queued_at",
        "ready",
        "result",
        "what",
    )

    def __init__(
        self, what: str, fn: Callable[[sqlite3.Connection], T], durable: bool, detached: bool
    ):
        self.detached = detached  # nobody waits: its error is logged here
        self.what = what
        self.fn = fn
        self.durable = durable
        self.queued_at = time.monotonic()
        self.ready = Latch()  # opened once committed (or failed)
        self.result: T | None = None
        self.error: BaseException | None = None
        self.commit_seq = 0  # its commit's number (WalSync), once committed

    def fail(self, exc: BaseException, path: Path) -> None:
        error = exc
        if isinstance(exc, sqlite3.Error):
            mapped = store_error(exc, self.what)
            if mapped is not None:
                log.warning("store %s: %s", path, mapped.message)
                mapped.__cause__ = exc
                error = mapped
        if self.detached and error is exc:
            log.warning("store %s: %s failed: %s", path, self.what, exc)
        self.error = error
        self.ready.open()


class GroupWriter:
    """The writer thread of one store connection. It takes the store lock for each batch,
    so writes on the old locked path and reads stay serialised with it."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        lock: threading.RLock,
        busy_ms: int,
        path: Path,
        writes_first: WritesFirst,
        wal_sync: WalSync,
    ) -> None:
        self._conn = conn
        self._wal_sync = wal_sync
        self._lock = lock
        self._writes_first = writes_first  # the store's: reads wait while a batch waits
        self._busy_ms = busy_ms
        self._path = path
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Job[Any]] = deque()
        self._awaited = 0  # queued jobs whose caller waits (not posted)
        self._thread: threading.Thread | None = None
        self._busy = False  # a batch runs (in the writer thread or in a caller's)
        # When the waiting writer thread wakes by itself (None: only when told). A posted
        # write does not wake it when it will anyway before that write's gather ends: a
        # wake-up per pid record was a thread switch per task.
        self._wake_at: float | None = None
        self._in_batch: int | None = None  # the thread running it: its store calls join it
        self._stopping = False

    # -- callers ---------------------------------------------------------------------------
    def run(self, what: str, fn: Callable[[sqlite3.Connection], T], *, durable: bool) -> T:
        """Run `fn(conn)` in the next group transaction; return its result after the commit
        (or raise its error, mapped like any store error). `durable=False`: facts that mean
        nothing after a power loss; a batch of only those commits without the fsync."""
        if self._in_batch == _thread.get_ident():
            return fn(self._conn)  # a closure calling the store: already in the transaction
        job = _Job(what, fn, durable, detached=False)
        direct = self._take_idle(job)
        if direct is not None:
            self._run_here(direct)
        else:
            self._put(job)
            job.ready.wait()
        if job.error is not None:
            raise job.error
        if job.durable:
            self._wal_sync.wait(job.commit_seq)
        return job.result  # type: ignore[return-value]

    def post(self, what: str, fn: Callable[[sqlite3.Connection], object]) -> None:
        """Queue a this-boot-only write and return at once; a failure is logged. Later
        writes of the same thread are queued after it, so they commit with it or later. It
        commits with the next waited-for write, or alone after POST_GATHER_SECONDS."""
        if self._in_batch == _thread.get_ident():
            fn(self._conn)
            return
        self._put(_Job(what, fn, durable=False, detached=True))

    def _put(self, job: _Job[T]) -> _Job[T]:
        with self._cond:
            self._check_open()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
                self._thread.start()
            self._queue.append(job)
            self._awaited += not job.detached
            if not job.detached or self._wake_at is None:
                self._cond.notify()
        return job

    def _take_idle(self, job: _Job[T]) -> list[_Job[Any]] | None:
        """The batch to run in the caller's thread (posted writes queued so far, then
        `job`) when nothing runs and nobody else waits; None: queue it for the writer."""
        with self._cond:
            self._check_open()
            if self._busy or self._awaited:
                return None
            self._busy = True
            posted = [self._queue.popleft() for _ in range(min(MAX_BATCH - 1, len(self._queue)))]
        return [*posted, job]

    def _check_open(self) -> None:
        """Caller holds `_cond`."""
        if self._stopping:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")

    def _run_here(self, jobs: list[_Job[Any]]) -> None:
        try:
            self._run_batch(jobs)
        finally:
            self._batch_done()

    def _batch_done(self) -> None:
        """The connection is free: wake the writer thread for what queued meanwhile (posted
        writes only if it has no time to wake by itself), and stop()."""
        with self._cond:
            self._busy = False
            if self._stopping or self._awaited or (self._queue and self._wake_at is None):
                self._cond.notify_all()

    def pending(self) -> int:
        """Closures queued and not yet taken into a batch (tests watch a batch gather)."""
        with self._cond:
            return len(self._queue)

    def stop(self) -> None:
        """Answer what is queued, then end the thread; later writes fail as on a closed
        connection."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._cond:  # a batch in a caller's thread: the connection is still in use
            while self._busy and self._in_batch != _thread.get_ident():
                self._cond.wait()

    def commit(self, conn: sqlite3.Connection) -> None:
        """The one COMMIT of a batch (its fsync comes after); a seam for tests that slow it
        down."""
        conn.execute("COMMIT")

    # -- the thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._ready_to_write():
                    timeout = None if self._busy else self._gather_left()
                    self._wake_at = None if timeout is None else time.monotonic() + timeout
                    self._cond.wait(timeout)
                self._wake_at = None
                if not self._queue:
                    return
                jobs = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
                self._awaited -= sum(not job.detached for job in jobs)
                self._busy = True
            try:
                self._run_batch(jobs)
            finally:
                self._batch_done()

    def _run_batch(self, jobs: list[_Job[Any]]) -> None:
        self._in_batch = _thread.get_ident()
        try:
            self._batch(jobs)
        except BaseException as exc:  # a bug here must not leave callers waiting
            log.exception("store %s: group write failed", self._path)
            for job in jobs:
                if not job.ready.is_open():
                    job.fail(exc, self._path)
        finally:
            self._in_batch = None

    def _ready_to_write(self) -> bool:
        """A batch may start: someone waits for a write, the oldest posted write has waited
        long enough, or the writer is stopping; and no batch runs. Caller holds `_cond`."""
        if self._busy:
            return False
        if self._stopping or self._awaited:
            return True
        return bool(self._queue) and self._gather_left() == 0

    def _gather_left(self) -> float | None:
        """Seconds the oldest posted write may still wait (None: nothing queued)."""
        if not self._queue:
            return None
        return max(0.0, self._queue[0].queued_at + POST_GATHER_SECONDS - time.monotonic())

    def _batch(self, jobs: list[_Job[Any]]) -> None:
        """Under the store lock, waited for no longer than busy_timeout counted from the
        oldest caller's arrival; what it waited comes off SQLite's busy timeout too."""
        waited_ms = int((time.monotonic() - _oldest_caller(jobs)) * 1000)
        with self._writes_first.writing():  # reads arriving meanwhile wait behind it
            acquired = self._lock.acquire(timeout=max(0, self._busy_ms - waited_ms) / 1000)
        if not acquired:
            for job in jobs:
                message = f"database is busy, try again ({job.what}): another write holds it"
                log.warning("store %s: %s", self._path, message)
                job.fail(StoreError(ErrorCode.BUSY, message), self._path)
            return
        try:
            waited_ms = int((time.monotonic() - _oldest_caller(jobs)) * 1000)
            shorten = waited_ms > _SHORTEN_AFTER_MS
            if shorten:
                self._conn.execute(f"PRAGMA busy_timeout = {max(1, self._busy_ms - waited_ms)}")
            try:
                while jobs:
                    jobs = self._attempt(jobs)
            finally:
                if shorten:
                    self._conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        finally:
            self._lock.release()

    def _attempt(self, jobs: list[_Job[Any]]) -> list[_Job[Any]]:
        """One transaction over `jobs`. Returns the jobs to run again: all but the one whose
        error rolled the transaction back."""
        durable = any(j.durable for j in jobs)
        committed: list[_Job[Any]] = []
        try:
            return self._transaction(jobs, durable, committed)
        finally:
            for job in committed:  # answered only now: committed, and the connection reset
                job.ready.open()

    def _transaction(
        self, jobs: list[_Job[Any]], durable: bool, committed: list[_Job[Any]]
    ) -> list[_Job[Any]]:
        conn = self._conn
        try:
            self._wal_sync.check()
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            rollback(conn)
            for job in jobs:
                job.fail(exc, self._path)
            return []
        changes_before = conn.total_changes
        for i, job in enumerate(jobs):
            try:
                job.result = job.fn(conn)
                if not conn.in_transaction:
                    raise StoreError(ErrorCode.STORAGE_ERROR, _LOST_TRANSACTION % job.what)
            except BaseException as exc:
                # No savepoint per write (two statements each, a measurable share of a
                # batch): a failing write undoes the whole transaction, gets its own
                # error, and the writes before and after it run again in the next one.
                rollback(conn)
                job.fail(exc, self._path)
                return [*jobs[:i], *jobs[i + 1 :]]
        try:
            self.commit(conn)
        except BaseException as exc:
            rollback(conn)
            for job in jobs:
                job.fail(exc, self._path)
            return []
        if durable:  # its callers flush the WAL (WalSync) once the connection is free again
            seq = self._wal_sync.after_commit(conn.total_changes != changes_before)
            for job in jobs:
                job.commit_seq = seq
        committed += jobs
        return []


def _oldest_caller(jobs: list[_Job[Any]]) -> float:
    """When the longest-waiting caller arrived (posted writes waited on purpose: not them)."""
    return min((j.queued_at for j in jobs if not j.detached), default=time.monotonic())


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open (SQLite may already have done it)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback failed: %s", exc)
