"""Starting one task's process: its argv (watermarks filled in at spawn), its environment
(the base, the route's env_file and env, and the variables that name the task) and its log."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from syncd.config.model import Route
from syncd.config.watermarks import next_run_argv
from syncd.core.models import Task
from syncd.pool.envfile import build_env
from syncd.pool.procs import STORE_ID_VAR
from syncd.pool.runner import Child, SpawnRequest
from syncd.store.facade import Store


def start_child(
    task: Task,
    route: Route,
    argv: list[str],
    *,
    base_env: Mapping[str, str],
    store_id: str,
    log_path: Path,
    log_max_bytes: int,
) -> Child:
    """Spawn the task's process group; SpawnError (a missing cwd or env_file, an
    executable gone) is the caller's to record."""
    env = build_env(
        base_env,
        route.env_file,
        route.env,
        {
            "SYNCD_TASK_ID": str(task.id),
            "SYNCD_SOURCE": task.source,
            "SYNCD_SYNC_TYPE": task.sync_type,
            "SYNCD_ATTEMPT": str(task.attempt),
            STORE_ID_VAR: store_id,  # with the task id, finds the process after a crash
        },
    )
    return Child.start(
        SpawnRequest(
            task_id=task.id,
            argv=argv,
            cwd=route.cwd,
            env=env,
            log_path=log_path,
            log_max_bytes=log_max_bytes,
            caller_waits=True,
        )
    )


def watermarked_argv(store: Store, task: Task, route: Route) -> list[str]:
    """The argv with the last success of this route and params filled in, recorded as the
    task's argv before it runs (the one queued is kept for its follow-ups)."""
    last = store.last_success(task.source, task.route, task.params)
    when = None if last is None else (last.started_at, last.finished_at)
    argv = next_run_argv(task.argv, task.params, when, route.watermark_default or "")
    store.record_spawn_argv(task.id, argv, task.argv)
    return argv
