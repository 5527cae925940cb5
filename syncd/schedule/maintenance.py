"""The built-in maintenance: prune old history and its logs, give the
freed pages back, check the database. It is not a task: it needs no slot and runs on a
thread of its own (at `prune_at`, cron in UTC), never on the dispatch loop, or on `syncctl
prune`. Each step stands alone: one that fails is logged and the others still run, and the
slot is recorded as handled either way, so a restart does not redo it at once.

Bookkeeping is a schedule's: the last handled `prune_at` slot is persisted as `last_fire` in
the schedule_state row `@maintenance` (`@` cannot start a schedule name, and the scheduler's
reconcile never deletes `@` rows). A first start has missed nothing; after downtime it runs
once; a backwards clock jump runs nothing twice.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

from syncd.core import paths
from syncd.core.clock import Clock, iso, parse_iso
from syncd.core.errors import SyncdError
from syncd.cron import CronExpr
from syncd.schedule.scheduler import MAX_WAIT, due_slot
from syncd.store.facade import Store
from syncd.tasklog.writer import remove_log

log = logging.getLogger(__name__)

STATE_NAME = "@maintenance"
KEEP_COMPLETED = 3  # per (source, route), whatever their age
KEEP_FAILED = 1
_UTC = timezone.utc
T = TypeVar("T")


@dataclass(frozen=True)
class PruneResult:
    deleted: int
    kept: int  # old tasks kept by the per-route floors
    freed_bytes: int  # log files + database pages; dry run: the log files that would go
    integrity: str  # "ok", the problems, or "not checked (dry run)"
    ids: list[int] = field(default_factory=list)


class Maintenance:
    """Runs `prune` when `prune_at` is due; one prune at a time (loop and ops may race)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        prune_at: str,
        history_days: float,
        log_dir: Path,
    ):
        self._store = store
        self._clock = clock
        self._expr = CronExpr.parse(prune_at)
        self._history = timedelta(days=history_days)
        self._log_dir = Path(log_dir)
        self._lock = threading.RLock()
        self._last: datetime | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- its own thread --------------------------------------------------------------------
    def start(self) -> None:
        """Run `tick` on a thread of its own until stop(): a prune of a large history
        never holds up dispatch, heartbeats or the watchdog ping."""
        self._thread = threading.Thread(target=self._run, name="maintenance", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (a prune stops between two batches) and wait for it."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("maintenance still running after %.0f s at stop", timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                wait = self.tick()
            except Exception:  # e.g. the database is busy: look again shortly
                log.exception("maintenance: tick failed")
                wait = MAX_WAIT
            self._stopping.wait(wait)

    def update(self, *, prune_at: str, history_days: float) -> None:
        """After a reload; the last handled slot is kept."""
        with self._lock:
            self._expr = CronExpr.parse(prune_at)
            self._history = timedelta(days=history_days)

    def tick(self) -> float:
        """Prune if a `prune_at` slot is due; seconds until the next one (at most MAX_WAIT)."""
        with self._lock:
            now = self._clock.now()
            last = self._last_run(now)
            pending = due_slot(self._expr, _UTC, last, now)
            if pending is not None:
                try:
                    self.prune()
                except Exception:
                    log.exception("maintenance failed; next attempt at the next prune_at slot")
                finally:
                    self._set_last(pending.slot)
                last = pending.slot
            upcoming = self._expr.next_after(max(last, now), _UTC)
            return min(MAX_WAIT, max(0.0, (upcoming - now).total_seconds()))

    def prune(self, dry_run: bool = False) -> PruneResult:
        """Delete finished tasks older than history_days (keeping the per-route floors) and
        their logs, then vacuum incrementally and check integrity. dry_run changes nothing."""
        with self._lock:
            cutoff = iso(self._clock.now() - self._history) or ""
            ids, kept = self._store.prune(
                older_than=cutoff,
                keep_completed=KEEP_COMPLETED,
                keep_failed=KEEP_FAILED,
                dry_run=dry_run,
                stop=self._stopping.is_set,
            )
            if dry_run:
                would_free = sum(self._log_size(i) for i in ids)
                log.info("prune (dry run): would delete %d tasks, %d kept", len(ids), kept)
                return PruneResult(len(ids), kept, would_free, "not checked (dry run)", ids)
            log_bytes = self._step("log removal", lambda: self._remove_logs(ids, listed=True), 0)
            log_bytes += self._step("orphaned log removal", self._remove_orphaned_logs, 0)
            db_bytes = self._step("incremental vacuum", self._store.incremental_vacuum, 0)
            checked = self._step("integrity check", self._store.integrity_check, None)
            integrity = "not checked (the check failed)" if checked is None else checked
            if checked is not None and checked != "ok":
                log.error(
                    "DATABASE INTEGRITY CHECK FAILED for %s: %s -- stop syncd, back up the "
                    "file and restore or move it aside",
                    self._store.path,
                    integrity.replace("\n", "; "),
                )
            log.info(
                "prune: deleted %d tasks older than %s (%d kept as floor), freed %d log bytes "
                "and %d database bytes, integrity %s",
                len(ids),
                cutoff,
                kept,
                log_bytes,
                db_bytes,
                "ok" if integrity == "ok" else "FAILED",
            )
            return PruneResult(len(ids), kept, log_bytes + db_bytes, integrity, ids)

    # -- helpers ---------------------------------------------------------------------------
    def _step(self, what: str, run: Callable[[], T], failed: T) -> T:
        """One step of a prune: a failure is logged and the next steps still run."""
        try:
            return run()
        except Exception as exc:
            log.error("maintenance: %s failed: %s", what, getattr(exc, "message", exc))
            return failed

    def _last_run(self, now: datetime) -> datetime:
        if self._last is not None:
            return self._last
        row = self._store.get_schedule_state(STATE_NAME)
        last = parse_iso(row["last_fire"]) if row else None
        if last is None:  # first start: nothing missed
            last = now
            self._set_last(now)
        self._last = last
        return last

    def _set_last(self, slot: datetime) -> None:
        self._last = slot
        try:
            self._store.put_schedule_state(STATE_NAME, last_fire=iso(slot))
        except SyncdError as exc:
            log.warning("maintenance: last run not saved: %s", exc.message)

    def _log_path(self, task_id: int) -> Path:
        return paths.task_log(self._log_dir, task_id)

    def _log_size(self, task_id: int) -> int:
        try:
            return self._log_path(task_id).stat().st_size
        except OSError:
            return 0

    def _remove_logs(self, ids: list[int], *, listed: bool = False) -> int:
        """Unlink the deleted tasks' logs (missing ones are fine); bytes freed. `listed`:
        read the log directory once and touch only the ids found there, not a handful of
        system calls for each of 200,000 ids whose logs are long gone."""
        if listed:
            try:
                names = os.listdir(self._log_dir)
            except OSError:
                names = []
            present = {i for i in map(paths.log_task_id, names) if i is not None}
            ids = [i for i in ids if i in present]
        # remove_log also takes the tail segments a crash may have left behind.
        return sum(remove_log(self._log_path(task_id)) for task_id in ids)

    def _remove_orphaned_logs(self) -> int:
        """Logs of tasks that are gone: a crash between a prune's commit and its unlinks
        leaves them, and no later prune names those ids again. Only ids the store has
        handed out are considered (a task's row exists before its log); bytes freed."""
        try:
            names = os.listdir(self._log_dir)
        except OSError as exc:
            log.warning("prune: cannot list %s: %s", self._log_dir, exc.strerror or exc)
            return 0
        found = {i for i in map(paths.log_task_id, names) if i is not None}
        highest = self._store.max_id()
        gone = self._store.missing_ids([i for i in found if i <= highest])
        if gone:
            log.info("prune: removing the logs of %d tasks deleted earlier", len(gone))
        return self._remove_logs(sorted(gone))
