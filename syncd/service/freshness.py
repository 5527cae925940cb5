"""How fresh each route's data is: what operators watch is not whether a task ran but when
the route last completed. A route with `freshness_minutes` is stale when its last completed
task started longer ago than that, or when it never completed.

A pure function of the routing table, the store's last successes and `now`, so the tests
move a clock instead of waiting, and the web page and the metrics read the same answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from syncd.config.routing import RouteTable
from syncd.core.clock import iso, parse_iso
from syncd.store.success import Success, Successes


def freshness(
    routes: RouteTable, store: Successes, now: datetime, *, all_routes: bool = False
) -> dict[str, Any]:
    """`{checked_at, routes: [row]}`, one row per route with a target (every route with
    `all_routes`, as the last-success metric needs), in routing-table order."""
    chosen = [
        (src.name, route.sync_type, route.freshness_minutes)
        for src in routes.sources()
        for route in src.routes.values()
        if all_routes or route.freshness_minutes is not None
    ]
    last = store.last_successes([(source, stype) for source, stype, _ in chosen])
    rows = [row(s, t, target, last.get((s, t)), now) for s, t, target in chosen]
    return {"checked_at": iso(now), "routes": rows}


def row(
    source: str, sync_type: str, target: float | None, success: Success | None, now: datetime
) -> dict[str, Any]:
    """One route: its target, its last success (null if none) and whether it is stale."""
    started = parse_iso(success.started_at) if success is not None else None
    age = None if started is None else max(0.0, (now - started).total_seconds())
    stale = target is not None and (age is None or age > target * 60)
    return {
        "source": source,
        "sync_type": sync_type,
        "target_minutes": target,
        "last_success": None if success is None else success.to_dict(),
        "age_seconds": None if age is None else round(age, 3),
        "stale": stale,
    }
