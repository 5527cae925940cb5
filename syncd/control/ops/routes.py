"""Ops on the routing table and the schedules: what exists, and what a request would run."""

from __future__ import annotations

from typing import Any

from syncd.config.model import Route
from syncd.config.watermarks import has_watermarks, next_run_argv
from syncd.control.auth import Peer
from syncd.control.ops.base import NAME, OPS, SOURCE, Context
from syncd.control.ops.tasks import SUBMIT_ARGS
from syncd.control.protocol import Arg


def _route_row(route: Route) -> dict[str, Any]:
    return {
        "sync_type": route.sync_type,
        "argv": list(route.argv),
        "cwd": str(route.cwd) if route.cwd else None,
        "timeout_minutes": route.timeout_minutes,
        "priority": route.priority,
        "retries": route.retries,
        "allowed_params": list(route.allowed_params),
        "env_keys": sorted(route.env),  # names only: values may be secrets
    }


@OPS.op("routes", "the routing table", {"source": SOURCE}, command="routes", mutating=False)
def routes(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    wanted = args.get("source")
    table = ctx.d.dispatcher.routes
    sources = table.sources()
    if wanted is not None:
        name = wanted.strip().lower()
        sources = [s for s in sources if s.name == name]
        if not sources:
            table.resolve(wanted)  # raises unknown_source with the list of known sources
    return {
        "sources": [
            {
                "name": s.name,
                "fallback": s.fallback,
                "max_concurrent": s.max_concurrent,
                "routes": [_route_row(r) for r in s.routes.values()],
            }
            for s in sources
        ]
    }


@OPS.op(
    "resolve",
    "which route and argv a submit would run",
    {k: SUBMIT_ARGS[k] for k in ("source", "sync_type", "params")},
    command="resolve",
    mutating=False,
)
def resolve(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    table = ctx.d.dispatcher.routes
    res = table.resolve(args["source"], args.get("sync_type"), args.get("params"))
    source = table.source(res.source)
    result: dict[str, Any] = {
        "source": res.source,
        "sync_type": res.sync_type,
        "route": res.route.sync_type,
        "rule": res.rule,
        "argv": list(res.argv),
        "cwd": str(res.route.cwd) if res.route.cwd else None,
        "timeout_minutes": res.route.timeout_minutes,
        "priority": res.route.priority,
        "max_concurrent": source.max_concurrent if source else None,
    }
    if has_watermarks(res.argv, res.params):
        # What the next run would get: the argv as the spawn will fill it in now.
        last = ctx.d.store.last_success(res.source, res.route.sync_type, res.params)
        when = None if last is None else (last.started_at, last.finished_at)
        default = res.route.watermark_default or ""
        result["argv"] = next_run_argv(res.argv, res.params, when, default)
        result["argv_template"] = list(res.argv)
        result["watermark"] = {
            "default": res.route.watermark_default,
            "last_success": None if last is None else last.to_dict(),
        }
    return result


@OPS.op("schedules", "every schedule with next and last fire", command="schedules", mutating=False)
def schedules(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    return {"schedules": ctx.d.scheduler.describe()}


@OPS.op(
    "schedule_run",
    "fire a schedule now (honours its overlap)",
    {"name": NAME},
    command="schedule run",
)
def schedule_run(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    return {"outcome": ctx.d.scheduler.run_now(args["name"]).to_dict()}


@OPS.op(
    "schedule_pause", "disable a schedule (persisted)", {"name": NAME}, command="schedule pause"
)
def schedule_pause(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    return {"schedule": ctx.d.scheduler.pause(args["name"])}


@OPS.op(
    "schedule_resume",
    "enable a schedule (persisted)",
    {"name": NAME, "from_now": Arg("bool", False, help="skip the paused period")},
    command="schedule resume",
)
def schedule_resume(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    row = ctx.d.scheduler.resume(args["name"], from_now=bool(args.get("from_now")))
    ctx.d.poke_scheduler()
    return {"schedule": row}
