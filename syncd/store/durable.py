"""The WAL's fsync, taken out of SQLite's COMMIT so the next transaction need not wait for it.

With synchronous=FULL the COMMIT itself fsyncs, and the one connection stays busy until the
disk answers: a finish behind another slot's commit waited out that fsync before its pick
could even run (half of the exit-to-next-claim time). The store's connection now commits with
synchronous=NORMAL (the frames are written, not synced) and the callers that need durability
sync the WAL file themselves before they are answered, while the writer already runs the next
batch. fsync flushes every written page of the file, whoever wrote it, so one that starts after
a commit covers it, and those who commit meanwhile share the next one (a leader syncs, the
others wait for it). Reads on the store connection wait until what they can see is synced:
nothing that may be lost on power failure is answered or shown.

A failed fsync cannot be retried safely (Linux may drop the pages it could not write and
report the error once), so the first one is kept: every later wait fails with it, the store
reports storage_error, and the daemon is told (`on_failure`) so it stops: a restart recovers
from what the file holds (Postgres does the same since 2018, "fsyncgate")."""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from syncd.core.errors import StoreError
from syncd.core.failpoints import injected_error
from syncd.core.models import ErrorCode

log = logging.getLogger(__name__)


class WalSync:
    """Numbers for durable commits, and the fsyncs that make them durable."""

    def __init__(self, wal: Path) -> None:
        self._wal = wal  # where SQLite keeps it: beside the database file a symlink names
        self._cond = threading.Condition(threading.Lock())
        self._committed = 0  # durable commits made so far
        self._synced = 0  # commits an fsync that has returned covers
        self._syncing = False
        self._fd: int | None = None
        self._failed: str | None = None
        self._closed = False
        self.on_failure: Callable[[str], None] | None = None  # told once, unlocked: it stops

    @property
    def failed(self) -> str | None:
        """Why the store can no longer be written durably (None: it can)."""
        return self._failed

    def check(self) -> None:
        """Before a write transaction: refuse it once a flush has failed (its commit could
        not be made durable, and a later checkpoint must not build on what may be lost)."""
        if self._failed is not None:
            raise StoreError(ErrorCode.STORAGE_ERROR, self._failed)

    def after_commit(self, wrote: bool) -> int:
        """The number to `wait` for after a COMMIT (called under the store lock). A
        transaction that changed no row wrote nothing (a coalesced submit): it waits only
        for what it saw, the commits before it."""
        with self._cond:
            self._committed += wrote
            return self._committed

    def wait(self, seq: int | None = None) -> None:
        """Return once commit `seq` (default: every commit so far) is on disk: sync the WAL
        if nobody else does, else wait for the one in flight, and again if it started before
        `seq` was committed. Raises StoreError(storage_error) if an fsync failed."""
        with self._cond:
            target = self._committed if seq is None else seq
            while self._synced < target and self._failed is None:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                upto = self._committed
                self._cond.release()
                try:
                    error = self._sync()
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                if error is None:
                    self._synced = max(self._synced, upto)
                    continue
                self._failed = error
                log.critical("store %s: %s", self._wal, error)
                tell = self.on_failure
                if tell is not None:
                    self._cond.release()
                    try:
                        tell(error)
                    finally:
                        self._cond.acquire()
            if self._synced < target:
                raise StoreError(ErrorCode.STORAGE_ERROR, self._failed or "fsync failed")

    def close(self) -> None:
        """After the store's last durable commit was waited for (StoreBase.close): a late
        waiter finds its commit synced and never reopens the file."""
        with self._cond:
            self._cond.wait_for(lambda: not self._syncing)
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _sync(self) -> str | None:
        """fdatasync the WAL file; the reason on failure."""
        try:
            if self._closed:
                raise OSError(errno.EBADF, "the store is closed")
            self.flush(self._wal_fd())
        except OSError as exc:
            return (
                f"could not flush committed writes to disk ({exc.strerror or exc}); what was "
                "committed since the last flush may be lost on power failure, so nothing more "
                "is acknowledged: restart syncd"
            )
        return None

    def flush(self, fd: int) -> None:
        """A seam for tests (a slow or failing disk); SYNCD_FAILPOINT=error:wal_flush fails
        it as a disk would, for the daemon's end-to-end test."""
        if injected_error("wal_flush"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.fdatasync(fd)

    def _wal_fd(self) -> int:
        """An fd of the WAL file, reopened if the file was replaced. While the store's
        connection is open SQLite keeps the file (it deletes it only at the last close): a
        missing one is an error, never "nothing to flush"."""
        inode = os.stat(self._wal).st_ino
        fd = self._fd
        if fd is not None and os.fstat(fd).st_ino == inode:
            return fd
        if fd is not None:
            os.close(fd)
            self._fd = None
        self._fd = os.open(self._wal, os.O_RDONLY | os.O_CLOEXEC)
        return self._fd
