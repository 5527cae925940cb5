"""The fixtures every test module gets (loaded as a plugin by tests/conftest.py): a work dir
and real daemons for end-to-end tests, throw-away users and a stranger process for the fault
tests, a fake clock and a store on it for units."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from syncd.core import paths
from syncd.core.clock import FakeClock
from syncd.store.facade import Store
from tests.helpers.crash import stranger
from tests.helpers.daemon import make_daemon, workdir
from tests.helpers.system import test_users

__all__ = ["clock", "make_daemon", "store", "stranger", "test_users", "workdir"]

DEFAULT_T0 = datetime(2025, 9, 29, 15, 30, 45, tzinfo=timezone.utc)


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> FakeClock:
    """A fake clock at the test module's `T0` (each clock-driven module names its own)."""
    return FakeClock(getattr(request.module, "T0", DEFAULT_T0))


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    """A real store in a fresh state dir, on the fake clock."""
    s = Store.open(paths.db_path(tmp_path / "state"), clock)
    yield s
    s.close()
