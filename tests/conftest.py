"""Suite-wide: the shared fixtures (tests/helpers/fixtures.py), and UTC as local time (human
output shows local time, so every test runs in UTC unless it sets TZ)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

pytest_plugins = ("tests.helpers.fixtures",)


@pytest.fixture(autouse=True, scope="session")
def utc_local_time() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()
