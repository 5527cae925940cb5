"""What the pool knows about one running task beyond its row: the process, when it started,
why it is being killed, and what the monitor last saw of it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from syncd.config.model import Route
from syncd.core.models import Task
from syncd.pool.runner import Child


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
    last_cpu: float = 0.0
    last_io: int = 0
    last_output: int = 0
    throttles_applied: int = 0  # `::throttle` lines of its output already applied
    thread: threading.Thread | None = field(default=None, repr=False)
