"""Every op the daemon answers: importing each handler module declares its ops in the one
registry, and nothing else may add to it."""

from __future__ import annotations

from syncd.control.ops import pool, routes, sources, streams, tasks
from syncd.control.ops.base import OPS
from syncd.control.protocol import Registry

HANDLER_MODULES = (pool, tasks, routes, streams, sources)


def registry() -> Registry:
    return OPS
