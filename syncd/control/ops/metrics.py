"""The `metrics` and `series` ops: the collector's counters plus gauges read now from the
pool and the store (O(1) or O(sources) at any queue depth)."""

from __future__ import annotations

from typing import Any

from syncd import __version__
from syncd.control.auth import Peer
from syncd.control.ops.base import OPS, Context
from syncd.control.ops.pool import pool_status
from syncd.core.clock import parse_iso
from syncd.pool.sources import STATE_WORDS
from syncd.service.freshness import freshness as route_freshness
from syncd.service.sources import describe as describe_sources


def _gauge(help: str, samples: list[tuple[dict[str, str], float]]) -> dict[str, Any]:
    return {"help": help, "samples": [{"labels": ls, "value": v} for ls, v in samples]}


def gauges(ctx: Context) -> dict[str, Any]:
    d = ctx.d
    status = pool_status(ctx)
    queued = d.store.queued_by_source()
    # Every configured source appears (0 when empty), plus any still queued after a reload
    # removed it: the label set stays bounded by what the config has named.
    sources = sorted({s.name for s in d.dispatcher.routes.sources()} | set(queued))
    return {
        "syncd_workers_max": _gauge("Global worker limit.", [({}, status["max_workers"])]),
        "syncd_tasks_running": _gauge("Tasks running now.", [({}, status["active"])]),
        "syncd_pool_paused": _gauge(
            "1 when dispatching is paused.", [({}, 1 if status["paused"] else 0)]
        ),
        "syncd_tasks_queued": _gauge(
            "Tasks waiting, per source.", [({"source": s}, queued.get(s, 0)) for s in sources]
        ),
        "syncd_route_last_success_timestamp_seconds": _gauge(
            "When the last completed task of the route started (the freshness it gives), in"
            " Unix seconds; read from the history, so it survives restarts.",
            last_successes(ctx),
        ),
        "syncd_source_state": _gauge(
            "1 for each source's current protection state (ok, paused, throttled, open,"
            " half_open), 0 for the others.",
            source_states(ctx),
        ),
        "syncd_build_info": _gauge("The daemon's version.", [({"version": __version__}, 1)]),
        "process_start_time_seconds": _gauge(
            "When the daemon started, in Unix seconds.", [({}, round(d.started_at.timestamp(), 3))]
        ),
    }


def source_states(ctx: Context) -> list[tuple[dict[str, str], float]]:
    """Every state of every configured source, 1 for the one in force: a bounded label set
    (sources times five states) that alerts can match with `== 1`."""
    return [
        ({"source": row["name"], "state": state}, 1 if row["state"] == state else 0)
        for row in describe_sources(ctx.d, queued=False)
        for state in STATE_WORDS
    ]


def last_successes(ctx: Context) -> list[tuple[dict[str, str], float]]:
    """Routes that ever completed; one index seek per route, whatever the history's size."""
    d = ctx.d
    rows = route_freshness(d.dispatcher.routes, d.store, d.clock.now(), all_routes=True)
    out = []
    for r in rows["routes"]:
        started = parse_iso((r["last_success"] or {}).get("started_at"))
        if started is not None:
            labels = {"source": r["source"], "sync_type": r["sync_type"]}
            out.append((labels, round(started.timestamp(), 3)))
    return out


@OPS.op(
    "metrics",
    "counters, gauges and histograms as JSON (for Prometheus)",
    command="metrics",
    mutating=False,
)
def metrics(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    snap = ctx.d.metrics.snapshot()
    snap["gauges"] = {**gauges(ctx), **snap["gauges"]}
    return snap


@OPS.op(
    "series",
    "the last 24 h of throughput and queue depth, per quarter hour",
    command="metrics",
    mutating=False,
)
def series(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    # The current bar includes the queue as it is now, not only the last minute's sample.
    ctx.d.metrics.sample_queue(ctx.d.store.counts()["queued"])
    return ctx.d.metrics.series()
