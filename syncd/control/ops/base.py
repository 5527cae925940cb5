"""What every op handler shares: the one registry they are declared in, the daemon parts they
may use (a protocol, so handlers never import the daemon that composes them), and helpers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from syncd.config.model import Config
from syncd.control.auth import Peer
from syncd.control.protocol import Arg, Registry, Request
from syncd.core.clock import Clock, iso, parse_iso
from syncd.core.errors import SyncdError
from syncd.core.events import EventBus
from syncd.core.models import ErrorCode, Status, Task
from syncd.pool.dispatcher import Dispatcher
from syncd.pool.monitor import Monitor
from syncd.schedule.maintenance import Maintenance
from syncd.schedule.scheduler import Scheduler
from syncd.service.metrics import Metrics
from syncd.service.tasks import TaskService
from syncd.store.facade import Store

OPS = Registry()

STATUSES = tuple(s.value for s in Status)
ID = Arg("int", required=True, min=1, help="task id")
SOURCE = Arg("str", help="source name")
DRY_RUN = Arg("bool", False, help="report, change nothing")
NAME = Arg("str", required=True, help="schedule name")


class Daemon(Protocol):
    """The parts of the running daemon a handler may use."""

    pid: int
    started_at: datetime
    started_mono: float
    config: Config

    @property
    def clock(self) -> Clock: ...
    @property
    def store(self) -> Store: ...
    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def tasks(self) -> TaskService: ...
    @property
    def monitor(self) -> Monitor: ...
    @property
    def scheduler(self) -> Scheduler: ...
    @property
    def maintenance(self) -> Maintenance: ...
    @property
    def events(self) -> EventBus: ...
    @property
    def metrics(self) -> Metrics: ...

    def reload(self, *, dry_run: bool = ..., requested_by: str = ...) -> dict[str, Any]: ...
    def reconcile_orphans(self) -> list[int]: ...
    def poke_scheduler(self) -> None: ...


class Context:
    """A handler's first argument: the daemon, and answers several ops share."""

    def __init__(self, daemon: Daemon):
        self.d = daemon

    def handle(self, request: Request, peer: Peer) -> Any:
        return request.spec.handler(self, request.args, peer)

    def handle_batch(self, requests: list[Request], peer: Peer) -> list[Any]:
        """Consecutive pipelined requests of one batchable op: per request its result or
        its SyncdError."""
        batch = requests[0].spec.batch
        assert batch is not None
        return batch(self, requests, peer)

    def task(self, task_id: int) -> Task:
        task = self.d.store.get(task_id)
        if task is None:
            raise SyncdError(ErrorCode.UNKNOWN_TASK, f"no task {task_id}")
        return task


Handler = Callable[[Context, dict[str, Any], Peer], Any]


def time_arg(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return iso(parse_iso(value))
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 with an offset
        raise SyncdError(
            ErrorCode.INVALID_ARGS, f"{name}: {value!r} is not an ISO 8601 time"
        ) from None
