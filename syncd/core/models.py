"""The closed vocabularies of syncd and the one record everything revolves around: a Task."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol


class Status(str, Enum):
    QUEUED = "queued"  # waiting for a slot
    RUNNING = "running"  # a process was started for it
    COMPLETED = "completed"  # the process exited 0
    FAILED = "failed"  # non-zero exit, signal, timeout, stale, spawn error, lost
    CANCELLED = "cancelled"  # an operator cancelled it
    DEFERRED = "deferred"  # the sync asked to be run later; its follow-up (defer:<id>) carries on


FINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.DEFERRED})
FINAL_NAMES = tuple(s.value for s in Status if s in FINAL)  # in declaration order, for CLIs

# Every allowed status change; anything else is refused by the store's compare-and-set.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED}),
    Status.RUNNING: frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.DEFERRED}),
    Status.COMPLETED: frozenset(),
    Status.DEFERRED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


class Overlap(str, Enum):
    SKIP = "skip"  # a fire while the sync is queued or running is recorded, nothing queued
    QUEUE = "queue"  # behaves as a manual submit (coalescing included)
    REPLACE = "replace"  # cancel the running task, queue a new one


class OnShutdown(str, Enum):
    REQUEUE = "requeue"  # interrupted tasks are queued again at the front of their priority
    FAIL = "fail"  # interrupted tasks stay failed


class ErrorCode(str, Enum):
    BAD_REQUEST = "bad_request"  # not JSON, not an object, too long, too deep
    UNKNOWN_OP = "unknown_op"
    INVALID_ARGS = "invalid_args"  # unknown, missing or ill-typed args
    UNSUPPORTED_VERSION = "unsupported_version"
    STORAGE_ERROR = "storage_error"  # the database could not commit; nothing acknowledged
    BUSY = "busy"  # too many connections, or the database is locked by someone else
    FORBIDDEN = "forbidden"  # a mutating op from a peer without the right
    UNKNOWN_TASK = "unknown_task"
    UNKNOWN_SOURCE = "unknown_source"
    UNKNOWN_ROUTE = "unknown_route"
    UNKNOWN_SCHEDULE = "unknown_schedule"
    PARAM_NOT_ALLOWED = "param_not_allowed"
    NOT_QUEUED = "not_queued"
    CONFIG_INVALID = "config_invalid"
    INTERNAL = "internal"  # a bug: logged with its traceback, never shown to the client


class SourceRoute(Protocol):
    """Anything that names a task's source and route (a Task, or a row a bulk cancel
    returned): what the metrics count ends by."""

    @property
    def source(self) -> str: ...

    @property
    def route(self) -> str: ...


@dataclass
class Task:
    """One attempt of one sync: one row, never reused, kept in history after it ends."""

    id: int
    source: str
    sync_type: str
    route: str
    argv: list[str]
    params: dict[str, Any]
    priority: int
    status: Status
    trigger: str
    attempt: int = 1
    submitted_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    last_heartbeat: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    error: str | None = None
    requested_by: str | None = None
    not_before: str | None = None
    progress: str | None = None
    # Not part of the public task object: kept for reconciliation and requeue limits.
    internal: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The task object of the protocol: exactly the public fields of a task. Built by hand:
        `asdict` deep-copies recursively, and this runs for every task of every reply and
        event. argv and params are copied one level, which is all they have."""
        out = {name: getattr(self, name) for name in TASK_FIELDS}
        out["argv"] = list(self.argv)
        out["params"] = dict(self.params)
        out["status"] = self.status.value
        return out


TASK_FIELDS = tuple(f for f in Task.__dataclass_fields__ if f != "internal")


# What queued a task, as recorded in its `trigger`: every producer builds it with these.
TRIGGER_MANUAL = "manual"


def trigger_schedule(name: str) -> str:
    return f"schedule:{name}"


FOLLOW_UP_KINDS = ("retry", "requeue", "defer")


def trigger_follow_up(kind: str, task_id: int) -> str:
    """A task queued by the end of another: `retry:<id>`, `requeue:<id>` or `defer:<id>`."""
    return f"{kind}:{task_id}"


@dataclass(frozen=True)
class NewTask:
    """What a submission asks the store to queue (ids, times and status are the store's)."""

    source: str
    sync_type: str
    route: str
    argv: list[str]
    params: dict[str, Any]
    priority: int
    trigger: str
    attempt: int = 1
    requested_by: str | None = None
    not_before: str | None = None
    lost_count: int = 0
    front: bool = False  # queue ahead of every queued task of the same priority

    @classmethod
    def follow_up(cls, task: Task, trigger: str, **changes: Any) -> NewTask:
        """The same sync again (a retry or a requeue): same argv, params, priority and
        requester, with `changes` (attempt, not_before, lost_count, front) applied. A task
        whose watermarks were filled in at spawn passes on the argv it was queued with."""
        template = task.internal.get("argv_template")
        base = cls(
            source=task.source,
            sync_type=task.sync_type,
            route=task.route,
            argv=json.loads(template) if template else list(task.argv),
            params=dict(task.params),
            priority=task.priority,
            trigger=trigger,
            attempt=task.attempt,
            requested_by=task.requested_by,
            lost_count=int(task.internal.get("lost_count") or 0),
        )
        return replace(base, **changes)
