"""What the pool knows about one running task beyond its row: the process, when it started,
why it is being killed, and what the monitor last saw of it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from syncd.config.model import Route
from syncd.core.latch import Latch
from syncd.core.models import Task
from syncd.pool.runner import Child

log = logging.getLogger(__name__)


@dataclass
class RunningTask:
    """What the daemon knows about one running task beyond its row."""

    task: Task
    route: Route | None
    started_mono: float
    last_progress_mono: float
    child: Child | None = None
    kill_reason: str | None = None
    kill_detail: str | None = None
    cancel_requested: bool = False  # a cancel was acknowledged: it ends cancelled, no retry
    last_cpu: float = 0.0
    last_io: int = 0
    last_output: int = 0
    throttles_applied: int = 0  # `::throttle` lines of its output already applied
    thread: threading.Thread | None = field(default=None, repr=False)
    # What to tell (log lines, events, metrics) once its process is spawned: its start, and
    # the end of the task before it in the same thread. Told after the spawn, not before,
    # so telling is off the path from the claim's commit to the start of the process.
    untold: Callable[[], None] | None = field(default=None, repr=False)
    # Opened by whoever announces the task as queued after handing it to its thread: its
    # start is told only after that (see hold_telling).
    _queued_told: Latch | None = field(default=None, repr=False)

    def hold_telling(self) -> None:
        """Its start is not told before release_telling(): a submit hands the task to its
        thread first and tells of the queueing after, and watchers must see that order."""
        self._queued_told = Latch()

    def release_telling(self) -> None:
        if self._queued_told is not None:
            self._queued_told.open()

    def tell(self) -> None:
        """Tell what is untold, once; never raises (the task is committed and runs)."""
        untold, self.untold = self.untold, None
        if untold is None:
            return
        if self._queued_told is not None:  # its queueing first (open already, nearly
            self._queued_told.wait()  # always: the spawn took longer than the telling)
        try:
            untold()
        except Exception:
            log.exception("task %d: announcing failed", self.task.id)
