"""A real daemon (the e2e harness) and a real `syncd web` process on a free port, shared by
a module's tests; plus one headless Chromium per module for the browser tests."""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.chromium import start_chromium
from tests.helpers.daemon import kill_orphaned_tasks
from tests.helpers.web import Stack, make_stack


@pytest.fixture(scope="module")
def stack_factory() -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(**kw: Any) -> Stack:
        workdir = Path(tempfile.mkdtemp(prefix="sw-", dir="/tmp"))
        s = make_stack(workdir, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.web.stop()
        if s.daemon.proc is not None and s.daemon.proc.poll() is None:
            s.daemon.stop(signal.SIGKILL)
        kill_orphaned_tasks(s.daemon.state_dir / "syncd.db")
        shutil.rmtree(s.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    profile = tempfile.mkdtemp(prefix="sw-chrome-")
    driver = start_chromium(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
