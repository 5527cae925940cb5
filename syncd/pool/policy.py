"""What an ended attempt leads to: its final status from the exit (completed, failed, or
deferred when the sync asked to be run later), and its follow-up: a retry with backoff, a
requeue after a shutdown, or the defer of a deferred task, bounded by max_deferrals. Pure:
the dispatcher feeds it facts and records what it decides."""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from syncd.config.model import Route
from syncd.core.clock import iso
from syncd.core.models import NewTask, Status, Task, trigger_follow_up

EX_TEMPFAIL = 75  # the exit code of a sync asking to be run later
DEFAULT_DEFER_SECONDS = 60.0  # exit 75 of a task whose route is gone


class Outcome(NamedTuple):
    """How a task ended, before it is recorded."""

    status: Status
    exit_code: int | None
    error: str | None
    delay: float | None = None  # deferred: seconds until its follow-up may start


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit code {code}"


def exit_outcome(
    code: int, retry_after: tuple[float, str | None] | None, route: Route | None
) -> Outcome:
    """The outcome of a child that exited by itself. `::retry-after SECONDS [reason]` in its
    output, or exit 75 (after the route's retry_backoff_seconds), defers it."""
    if retry_after is not None or code == EX_TEMPFAIL:
        if retry_after is not None:
            seconds, why = retry_after
        else:
            seconds = route.retry_backoff_seconds if route is not None else DEFAULT_DEFER_SECONDS
            why = f"exit code {EX_TEMPFAIL}"
        error = f"retry after {seconds:g}s: {why or 'no reason given'}"
        return Outcome(Status.DEFERRED, code, error, seconds)
    if code == 0:
        return Outcome(Status.COMPLETED, 0, None)
    return Outcome(Status.FAILED, code, describe_exit(code))


@dataclass(frozen=True)
class Decision:
    """The status and error to record, the one follow-up (if any), and whether the ending
    counts for the source's breaker."""

    status: Status
    error: str | None
    retry: NewTask | None = None
    requeue: NewTask | None = None
    defer: NewTask | None = None
    counts: bool = True


def decide(
    task: Task,
    route: Route | None,
    outcome: Outcome,
    now: datetime,
    *,
    shutdown: bool,
    requeue_on_shutdown: bool,
    deferrals: Callable[[], int],
) -> Decision:
    """`deferrals()`: how many deferrals in a row led to this task (asked only when it
    defers). A shutdown, or a sync that kept asking to be run later, says nothing of the
    API's health, so neither counts for the breaker."""
    status, error = outcome.status, outcome.error
    if status is Status.DEFERRED:
        limit = route.max_deferrals if route is not None else 0
        depth = deferrals()
        if depth >= limit:  # failed with the reason; no retry either
            error = f"deferred {depth} times in a row, giving up ({error})"
            return Decision(Status.FAILED, error, counts=False)
        later = iso(now + timedelta(seconds=outcome.delay or 0.0))
        follow = NewTask.follow_up(task, trigger_follow_up("defer", task.id), not_before=later)
        return Decision(status, error, defer=follow, counts=False)
    if status is Status.FAILED and shutdown:
        requeue = None
        if requeue_on_shutdown:
            requeue = NewTask.follow_up(task, trigger_follow_up("requeue", task.id), front=True)
        return Decision(status, error, requeue=requeue, counts=False)
    if status is Status.FAILED and route is not None and task.attempt <= route.retries:
        backoff = route.retry_backoff_seconds * 2 ** (task.attempt - 1)
        backoff *= 1 + random.uniform(0, 0.1)
        retry = NewTask.follow_up(
            task,
            trigger_follow_up("retry", task.id),
            attempt=task.attempt + 1,
            not_before=iso(now + timedelta(seconds=backoff)),
        )
        return Decision(status, error, retry=retry)
    return Decision(status, error)
