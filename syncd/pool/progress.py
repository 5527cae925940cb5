"""A running task's progress line reaches the store when it is printed, not at the next
heartbeat: every reader of the row (`show`, `list`, `history`, the web) sees what the
process last said, even when it says it and then works silently for less than a heartbeat.
At most one write per task is queued at a time, and it records the newest line when it
runs, so a task printing thousands of lines costs a handful of writes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class ProgressSink(Protocol):
    def post_progress(self, task_id: int, latest: Callable[[], str | None]) -> None: ...


class ProgressRecorder:
    """Called by the task's log on each new progress line (from the reading thread)."""

    def __init__(self, sink: ProgressSink, task_id: int, latest: Callable[[], str | None]):
        self._sink = sink
        self._task_id = task_id
        self._latest = latest
        self._lock = threading.Lock()
        self._pending = False

    def __call__(self) -> None:
        with self._lock:
            if self._pending:
                return  # the queued write will take this line
            self._pending = True
        try:
            self._sink.post_progress(self._task_id, self._take)
        except Exception as exc:  # a closing store: the finish records the line anyway
            with self._lock:
                self._pending = False
            log.debug("task %d: progress not written: %s", self._task_id, exc)

    def _take(self) -> str | None:
        """The write runs: lines printed from now on need a write of their own."""
        with self._lock:
            self._pending = False
        return self._latest()
