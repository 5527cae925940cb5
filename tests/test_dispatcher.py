"""Dispatcher units with a real store and real children, no daemon around them."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from syncd.clock import SystemClock
from syncd.config import loads_config
from syncd.dispatcher import Dispatcher
from syncd.errors import StoreError
from syncd.events import EventBus
from syncd.models import ErrorCode, Status
from syncd.routing import RouteTable
from syncd.store import Store


def make(tmp_path: Path) -> Dispatcher:
    text = f"""
[daemon]
state_dir = "{tmp_path / "state"}"
socket = "{tmp_path / "s.sock"}"
[defaults]
allowed_params = []
[sources.src.routes]
ok = {{ argv = ["{sys.executable}", "-c", "pass"] }}
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


def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_final_write_that_fails_is_retried_until_it_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make(tmp_path)
    d.stopping = False
    real_finish = d.store.finish
    failures = {"left": 2}

    def flaky_finish(*args: Any, **kwargs: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise StoreError(ErrorCode.STORAGE_ERROR, "database or disk is full")
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(d.store, "finish", flaky_finish)
    monkeypatch.setattr("syncd.dispatcher.PERSIST_RETRY_SECONDS", 0.05)
    task, _ = d.submit(d.new_task("src", "ok", None, None, "manual", "test"))
    assert d.tick() == [task.id]
    wait_until(lambda: not d.running)
    final = d.store.get(task.id)
    assert final is not None and final.status is Status.COMPLETED
    assert failures["left"] == 0
    d.store.close()


def test_stop_gives_up_a_failing_final_write_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make(tmp_path)

    def broken_finish(*args: Any, **kwargs: Any) -> Any:
        raise StoreError(ErrorCode.STORAGE_ERROR, "disk I/O error")

    monkeypatch.setattr(d.store, "finish", broken_finish)
    monkeypatch.setattr("syncd.dispatcher.PERSIST_RETRY_SECONDS", 0.05)
    task, _ = d.submit(d.new_task("src", "ok", None, None, "manual", "test"))
    d.tick()
    wait_until(lambda: d.running[task.id].child is not None if task.id in d.running else True)
    t0 = time.monotonic()
    d.stop(timeout=5)
    assert time.monotonic() - t0 < 5
    assert not d.running
    # The row was never finished: the next start reconciles it as lost.
    row = d.store.get(task.id)
    assert row is not None and row.status is Status.RUNNING
    d.store.close()
