"""Startup recovery: rows a previous daemon instance left `running`.

Each such task is failed as lost and requeued at the front of its priority, within the
poison-pill cap (`max_lost_requeues`), in the same transaction as the failure. Before that, a
process that is provably the task's own (pid + kernel start time + boot id all match what was
stored at spawn) is killed with its group; a recycled pid or another boot is never signalled.
A task whose cancel was acknowledged (persisted before the kill) ends `cancelled` instead.

All left-over groups are killed at the same time (SIGTERM to all, one shared grace period,
SIGKILL to what is left), so a restart with several hung tasks costs one grace period, not
one per task: reconciliation runs before the socket is bound, and systemd waits for READY=1.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from syncd.core.clock import Clock, iso
from syncd.core.models import NewTask, Status, Task, trigger_follow_up
from syncd.pool.procs import ProcIdentity, kill_identified_group, task_processes
from syncd.store.facade import Store

log = logging.getLogger(__name__)

LOST_ON_RESTART = "lost: daemon restarted"
LOST_NO_PROCESS = "lost: no live process"
CANCELLED = "cancelled"
_MAX_KILL_THREADS = 64  # max_workers' upper bound: every left-over group in one round


@dataclass(frozen=True)
class Policy:
    """The settings reconciliation needs, read from the config at the moment it runs."""

    kill_grace: float
    max_lost_requeues: int


def identity_of(task: Task) -> ProcIdentity | None:
    """What was stored at spawn to recognise the task's process; None if it never got that
    far (claimed, then the daemon died before the child was recorded)."""
    internal = task.internal
    starttime, boot = internal.get("proc_starttime"), internal.get("boot_id")
    if not task.pid or starttime is None or not boot:
        return None
    return ProcIdentity(int(task.pid), int(starttime), str(boot))


@dataclass(frozen=True)
class LeftOvers:
    """What killing the left-over groups did: the tasks whose processes were signalled, and,
    by task, the pids still alive after SIGKILL."""

    killed: list[int]
    survived: dict[int, list[int]]


def kill_left_overs(tasks: Sequence[Task], grace: float, store_id: str | None = None) -> LeftOvers:
    """Kill every task's own live process group concurrently.

    One thread per group runs procs.kill_identified_group (identity check, SIGTERM, wait up
    to `grace`, SIGKILL); started together, they share one grace period. With `store_id`,
    processes marked with it and one of the tasks' ids in their environment are killed too:
    a task whose pid was never recorded (the write failed, or the daemon died first)."""
    targets = [(t.id, ident) for t in tasks if (ident := identity_of(t)) is not None]
    if store_id is not None and tasks:
        wanted = {t.id for t in tasks}
        known = {ident.pid for _, ident in targets}
        for task_id, found in sorted(task_processes(store_id).items()):
            for ident in found:
                if task_id in wanted and ident.pid not in known:
                    log.warning(
                        "task %d: found its process %d by its environment", task_id, ident.pid
                    )
                    targets.append((task_id, ident))
    if not targets:
        return LeftOvers(killed=[], survived={})
    workers = min(len(targets), _MAX_KILL_THREADS)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile-kill") as pool:
        results = list(pool.map(lambda t: kill_identified_group(t[1], grace), targets))
    killed: set[int] = set()
    survived: dict[int, list[int]] = {}
    for (task_id, ident), result in zip(targets, results, strict=True):
        if result.sent and task_id not in killed:
            killed.add(task_id)
            log.warning("task %d: killed its left-over process group %d", task_id, ident.pid)
        if result.survivors:
            survived.setdefault(task_id, []).extend(result.survivors)
    return LeftOvers(killed=sorted(killed), survived=survived)


def reconcile_one(
    store: Store, clock: Clock, task: Task, error: str, cap: int, survivors: Sequence[int] = ()
) -> Task | None:
    """Fail one lost task and requeue it (front of its priority) unless its chain of lost
    requeues has reached `cap`; returns the requeued task, if any. The failure and the
    requeue are one transaction, and the requeue is created at most once per task.

    A task with `survivors` (its processes outlived SIGKILL) is never requeued: the copy
    would run beside the one still alive, the overlap the pool exists to prevent."""
    lost_count = int(task.internal.get("lost_count") or 0) + 1
    requeue = None
    status = Status.FAILED
    if task.internal.get("cancel_requested"):  # a cancel was acknowledged: never run again
        status, error = Status.CANCELLED, CANCELLED
    elif survivors:
        pids = ", ".join(str(p) for p in survivors)
        error = f"{error}; not requeued: process {pids} survived SIGKILL and may still run"
    elif lost_count > cap:
        error = f"lost {lost_count} times, not requeued"
    else:
        requeue = NewTask.follow_up(
            task, trigger_follow_up("requeue", task.id), lost_count=lost_count, front=True
        )
    done, follow = store.finish(
        task.id,
        status,
        finished_at=iso(clock.now()) or "",
        exit_code=None,
        error=error,
        retry=None,
        requeue=requeue,
    )
    if done is None:  # it stopped being `running` meanwhile (fix-stuck racing a finish)
        return None
    log.warning(
        "task %d %s.%s: %s%s",
        task.id,
        task.source,
        task.route,
        error,
        f"; requeued as task {follow.id}" if follow else "",
    )
    return follow


def reconcile(
    store: Store, clock: Clock, tasks: Sequence[Task], error: str, policy: Policy
) -> None:
    """Kill the tasks' own left-over groups (all at once), then fail and requeue each."""
    left = kill_left_overs(tasks, policy.kill_grace, store.store_id() if tasks else None)
    for task in tasks:
        survivors = left.survived.get(task.id, ())
        reconcile_one(store, clock, task, error, policy.max_lost_requeues, survivors)


def reconcile_lost(store: Store, clock: Clock, policy: Policy) -> list[int]:
    """At start, before the socket is bound: every `running` row belongs to a previous
    instance. Returns their ids."""
    lost = store.tasks_with_status(Status.RUNNING)
    if lost:
        log.warning("reconciling %d task(s) left running by a previous instance", len(lost))
    reconcile(store, clock, lost, LOST_ON_RESTART, policy)
    return [t.id for t in lost]


def reconcile_orphans(
    store: Store, clock: Clock, orphans: Collection[Task], policy: Policy
) -> list[int]:
    """At run time (fix-stuck): rows `running` that this daemon is not running. The caller
    lists them under the dispatcher's lock, so a task being claimed is never among them."""
    found = sorted(orphans, key=lambda t: t.id)
    reconcile(store, clock, found, LOST_NO_PROCESS, policy)
    return [t.id for t in found]
