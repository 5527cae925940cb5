"""A dispatcher on a real store with real children and no daemon around it, and a manual
submit through the one submit path."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from syncd.config.load import loads_config
from syncd.config.routing import RouteTable
from syncd.core.clock import SystemClock
from syncd.core.events import EventBus
from syncd.core.models import Task
from syncd.pool.dispatcher import Dispatcher
from syncd.service.tasks import TaskService
from syncd.store.facade import Store
from tests.helpers.procs import wait_until

__all__ = ["make", "submit", "wait_until"]


def make(tmp_path: Path, routes: str = "", **daemon: Any) -> Dispatcher:
    """Source `src` with a route `ok` that exits 0, plus `routes` (TOML lines) and
    `daemon` settings."""
    extra = "".join(f"{k} = {v}\n" for k, v in daemon.items())
    text = f"""
[daemon]
state_dir = "{tmp_path / "state"}"
socket = "{tmp_path / "s.sock"}"
{extra}
[defaults]
allowed_params = []
[sources.src.routes]
ok = {{ argv = ["{sys.executable}", "-c", "pass"] }}
{routes}
"""
    cfg = loads_config(text, base_dir=tmp_path, env={"PATH": os.environ["PATH"]})
    store = Store.open(cfg.daemon.state_dir / "syncd.db")
    return Dispatcher(
        store=store,
        routes=RouteTable.from_config(cfg),
        settings=cfg.daemon,
        clock=SystemClock(),
        events=EventBus(),
    )


def submit(
    d: Dispatcher, sync_type: str, allow_duplicate: bool = False, *, start: bool = False
) -> tuple[Task, bool]:
    """A manual submit through the one submit path. A submit claims a free slot itself, in
    its own transaction; unless `start`, the task is only queued here and the test's
    `tick()` starts it (dispatch is held, in memory only, for the length of the submit)."""
    service = TaskService(d.store, d, d.clock)
    new = service.request("src", sync_type, None, None, "manual", "test")
    if start:
        return service.submit(new, allow_duplicate=allow_duplicate)
    with d.cond:
        was, d.paused = d.paused, True
    try:
        return service.submit(new, allow_duplicate=allow_duplicate)
    finally:
        with d.cond:
            d.paused = was
