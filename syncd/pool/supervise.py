"""One task's process from spawn to exit: the argv it runs (watermarks filled in), the start,
the pid record, the wait, and the outcome the exit (or a kill) gives. No process of a task
outlives its record: whatever breaks after the spawn kills the group first."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from syncd.config.model import DaemonSettings
from syncd.config.watermarks import has_watermarks
from syncd.core import paths
from syncd.core.errors import SyncdError
from syncd.core.models import Status
from syncd.pool.envfile import SpawnError
from syncd.pool.policy import Outcome, describe_exit, exit_outcome
from syncd.pool.progress import ProgressRecorder
from syncd.pool.runner import Child
from syncd.pool.running import RunningTask
from syncd.pool.spawn import start_child, watermarked_argv
from syncd.store.facade import Store

log = logging.getLogger(__name__)

T = TypeVar("T")

# Why a running task is being killed; decides its final status and message.
KILL_CANCEL = "cancel"
KILL_TIMEOUT = "timeout"
KILL_STALE = "stale"
KILL_SHUTDOWN = "shutdown"


class Pool(Protocol):
    """What running one task needs from the pool (the dispatcher)."""

    cond: threading.Condition
    settings: DaemonSettings
    store: Store
    store_id: str
    base_env: dict[str, str]
    log_dir: Path

    def persist(self, what: str, write: Callable[[], T], gave_up: T) -> T: ...


def run_child(pool: Pool, rt: RunningTask) -> Outcome:
    task = rt.task
    route = rt.route
    if route is None:
        error = f"unknown_route: {task.source}.{task.route} is no longer configured"
        return Outcome(Status.FAILED, None, error)
    if rt.kill_reason is not None:
        return killed_outcome(rt, None)
    argv = task.argv
    if has_watermarks(task.argv, task.params):
        if route.watermark_default is None:
            error = f"spawn error: {route.key_path}.watermark_default is no longer set"
            return Outcome(Status.FAILED, None, error)
        gave_up: list[str] = []
        argv = pool.persist(
            f"task {task.id} argv", lambda: watermarked_argv(pool.store, task, route), gave_up
        )
        if argv is gave_up:
            return killed_outcome(rt, None)
    try:
        child = start_child(
            task,
            route,
            argv,
            base_env=pool.base_env,
            store_id=pool.store_id,
            log_path=paths.task_log(pool.log_dir, task.id),
            log_max_bytes=pool.settings.log_max_bytes,
        )
    except SpawnError as exc:
        log.warning("task %d: spawn error: %s", task.id, exc)
        return Outcome(Status.FAILED, None, f"spawn error: {exc}")
    try:
        return supervise(pool, rt, child)
    except BaseException:  # whatever broke, no process of the task outlives its record
        log.error("task %d: supervision failed; killing process group %d", task.id, child.pid)
        child.terminate(0)
        child.wait(pool.settings.kill_grace_seconds + 5)
        raise


def supervise(pool: Pool, rt: RunningTask, child: Child) -> Outcome:
    task = rt.task
    with pool.cond:
        rt.child = child
        if rt.kill_reason is not None:
            child.terminate(pool.settings.kill_grace_seconds)
    tasklog = child.log
    tasklog.on_progress = ProgressRecorder(pool.store, task.id, lambda: tasklog.progress)
    if tasklog.progress is not None:  # read before the recorder was in place
        tasklog.on_progress()
    try:
        pool.store.set_running_fields(  # queued, not waited for: the child runs on
            task.id,
            wait=False,
            pid=child.pid,
            proc_starttime=child.identity.starttime,
            boot_id=child.identity.boot_id,
        )
    except SyncdError as exc:  # supervision goes on; only crash recovery needs the pid
        log.warning("task %d: pid %d not recorded: %s", task.id, child.pid, exc.message)
    rt.tell()  # the process runs: its start (and the end before it) is told meanwhile
    code = child.wait()
    assert code is not None
    if rt.kill_reason is not None and not child.exited_before_kill:
        return killed_outcome(rt, code)
    if rt.kill_reason is not None:  # the leader's own exit status wins over a late kill
        log.info("task %d: exited (%s) before it was killed", task.id, describe_exit(code))
        with pool.cond:
            rt.kill_reason = rt.kill_detail = None
    return exit_outcome(code, child.log.retry_after, rt.route)


def killed_outcome(rt: RunningTask, code: int | None) -> Outcome:
    """A task that was killed: its status and message come from why."""
    reason = rt.kill_reason
    if reason == KILL_CANCEL:
        return Outcome(Status.CANCELLED, code, "cancelled")
    if reason == KILL_SHUTDOWN:
        return Outcome(Status.FAILED, code, "interrupted by shutdown")
    return Outcome(Status.FAILED, code, rt.kill_detail or str(reason))
