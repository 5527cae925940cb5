"""Ops about the pool and the daemon as a whole: liveness, state, pause, workers, reload,
repairs and maintenance."""

from __future__ import annotations

import logging
from typing import Any

from syncd import __version__
from syncd.control.auth import Peer
from syncd.control.ops.base import DRY_RUN, OPS, Context
from syncd.control.protocol import Arg
from syncd.core.clock import iso
from syncd.core.errors import SyncdError
from syncd.core.models import ErrorCode, Status
from syncd.service.sources import held

log = logging.getLogger(__name__)

QUEUED_IN_STATUS = 50


def pool_status(ctx: Context) -> dict[str, Any]:
    """The old dashboard's figures: available while a slot is free, overloaded when every
    slot is taken and tasks wait, busy when full with nothing waiting."""
    disp = ctx.d.dispatcher
    max_workers = disp.max_workers
    active = len(disp.running)
    queued = ctx.d.store.counts().get("queued", 0)
    if active < max_workers:
        state = "available"
    elif queued:
        state = "overloaded"
    else:
        state = "busy"
    return {
        "max_workers": max_workers,
        "active": active,
        "queued": queued,
        "available": max(0, max_workers - active),
        "utilization": round(min(1.0, active / max_workers), 4),
        "state": state,
        "paused": disp.paused,
        "sources": held(ctx.d),  # paused, throttled, open or half-open sources
    }


def running_rows(ctx: Context) -> list[dict[str, Any]]:
    disp = ctx.d.dispatcher
    with disp.cond:
        running = list(disp.running.values())
    now = ctx.d.clock.monotonic()
    rows = []
    for rt in sorted(running, key=lambda r: r.task.id):
        task = ctx.d.store.get(rt.task.id) or rt.task
        row = task.to_dict()
        row["elapsed_seconds"] = round(now - rt.started_mono, 3)
        row["cpu_percent"] = None
        row["rss_bytes"] = None
        if rt.child is not None:
            try:
                sample = rt.child.sample()
                row["cpu_percent"] = round(sample.cpu_percent, 1)
                row["rss_bytes"] = sample.rss_bytes
            except Exception:  # the process may be gone between the listing and the sample
                pass
            row["progress"] = rt.child.log.progress or row["progress"]
        rows.append(row)
    return rows


@OPS.op("ping", "daemon version, pid and uptime", command="ping", mutating=False)
def ping(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    d = ctx.d
    return {
        "version": __version__,
        "pid": d.pid,
        "started_at": iso(d.started_at),
        "uptime_seconds": round(d.clock.monotonic() - d.started_mono, 3),
    }


@OPS.op(
    "status",
    "pool state and counts",
    {"verbose": Arg("bool", False)},
    command="status",
    mutating=False,
)
def status(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    result = pool_status(ctx)
    if args.get("verbose"):
        result["active_tasks"] = running_rows(ctx)
        queued = ctx.d.store.tasks_with_status(Status.QUEUED, limit=QUEUED_IN_STATUS)
        result["queued_tasks"] = [t.to_dict() for t in queued]
    return result


def settings(ctx: Context) -> dict[str, Any]:
    cfg = ctx.d.config
    out: dict[str, Any] = {}
    for name, value in vars(cfg.daemon).items():
        if name == "socket_mode":
            value = f"{value:04o}"
        elif hasattr(value, "value"):
            value = value.value
        elif not isinstance(value, (int, float, str, bool, type(None))):
            value = str(value)
        out[name] = {"value": value, "origin": cfg.origins.get(name, "default")}
    override = ctx.d.store.get_setting("max_workers")
    if override:
        out["max_workers"] = {"value": int(override), "origin": "runtime"}
    return {"settings": out}


@OPS.op("config_get", "effective settings and their origin", command="config", mutating=False)
def config_get(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    return settings(ctx)


def _one_config_change(args: dict[str, Any]) -> str | None:
    if (args["max_workers"] is not None) == bool(args["reset"]):
        return "give exactly one of max_workers or reset: true"
    return None


@OPS.op(
    "config_set",
    "set max_workers at runtime, or reset it",
    {"max_workers": Arg("int", min=1, max=64), "reset": Arg("bool", False)},
    command="config",
    check=_one_config_change,
)
def config_set(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    disp = ctx.d.dispatcher
    if args.get("reset"):
        disp.set_max_workers(None)
        log.info("max_workers reset to %d by %s", disp.max_workers, peer.user)
    elif args.get("max_workers") is not None:
        disp.set_max_workers(args["max_workers"])
        log.info("max_workers set to %d by %s", args["max_workers"], peer.user)
    else:
        raise SyncdError(ErrorCode.INVALID_ARGS, "give max_workers or reset: true")
    return settings(ctx)


@OPS.op("pause", "stop dispatching (running tasks continue)", command="pause")
def pause(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    ctx.d.dispatcher.set_paused(True)
    return {"paused": True}


@OPS.op("resume", "start dispatching again", command="resume")
def resume(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    ctx.d.dispatcher.set_paused(False)
    return {"paused": False}


@OPS.op("process_queue", "wake the dispatcher now", command="process-queue")
def process_queue(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    return {"started": ctx.d.dispatcher.tick()}


@OPS.op(
    "fix_stuck",
    "run stale detection now and reconcile dead processes",
    {"minutes": Arg("float", min=0, max=1e6, exclusive_min=True)},
    command="fix-stuck",
)
def fix_stuck(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    minutes = args.get("minutes") or ctx.d.config.daemon.stale_minutes
    failed = ctx.d.monitor.fix_stuck(minutes)
    reconciled = ctx.d.reconcile_orphans()
    return {"failed": failed, "reconciled": reconciled}


@OPS.op(
    "reload",
    "re-read the config (the old one is kept on error)",
    {"dry_run": DRY_RUN},
    command="reload",
)
def reload(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    return ctx.d.reload(dry_run=bool(args.get("dry_run")), requested_by=peer.user)


@OPS.op("prune", "run the history maintenance now", {"dry_run": DRY_RUN}, command="prune")
def prune(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    result = ctx.d.maintenance.prune(dry_run=bool(args.get("dry_run")))
    return {"deleted": result.deleted, "kept": result.kept, "freed_bytes": result.freed_bytes}
