"""What a service reads of the running daemon, as a protocol: services sit below the daemon
that composes them, so they name the parts they need instead of importing it."""

from __future__ import annotations

from typing import Protocol

from syncd.core.clock import Clock
from syncd.pool.dispatcher import Dispatcher
from syncd.store.facade import Store


class PoolView(Protocol):
    """The pool, the store and the clock."""

    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def store(self) -> Store: ...
    @property
    def clock(self) -> Clock: ...
