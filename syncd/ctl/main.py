"""The `syncctl` program: the group with every command module's commands on it, and their
daemon-backed shell completion."""

from __future__ import annotations

from syncd.ctl import freshness, pool, routes, sources, tasks, watch
from syncd.ctl.app import main
from syncd.ctl.complete import attach_completers

COMMAND_MODULES = (pool, tasks, routes, sources, watch, freshness)
attach_completers(main)

__all__ = ["main"]

if __name__ == "__main__":
    main()
