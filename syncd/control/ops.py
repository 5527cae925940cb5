"""One small handler per op of the socket protocol. Handlers validate nothing the protocol
layer already validated; they translate between the op's args and the daemon's parts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from syncd import __version__
from syncd.core.clock import iso, parse_iso
from syncd.core.errors import SyncdError
from syncd.core.models import FINAL, ErrorCode, Status, Task
from syncd.tasklog.reader import read_log

if TYPE_CHECKING:
    from syncd.control.auth import Peer
    from syncd.control.protocol import Request
    from syncd.daemon.app import Daemon

log = logging.getLogger(__name__)

Handler = Callable[["Ops", dict[str, Any], "Peer"], Any]
HANDLERS: dict[str, Handler] = {}

LOG_FOLLOW_POLL_SECONDS = 0.2
QUEUED_IN_STATUS = 50


def op(name: str) -> Callable[[Handler], Handler]:
    """Register a handler; a second handler for one op is a bug caught at import."""

    def register(fn: Handler) -> Handler:
        if name in HANDLERS:
            raise RuntimeError(f"op {name!r} registered twice")
        HANDLERS[name] = fn
        return fn

    return register


def _time_arg(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return iso(parse_iso(value))
    except ValueError:
        raise SyncdError(
            ErrorCode.INVALID_ARGS, f"{name}: {value!r} is not an ISO 8601 time"
        ) from None


class Ops:
    def __init__(self, daemon: Daemon):
        self.d = daemon

    def handle(self, request: Request, peer: Peer) -> Any:
        return HANDLERS[request.op](self, request.args, peer)

    def handle_submits(self, requests: list[Request], peer: Peer) -> list[Any]:
        """Pipelined submits: each answered as `submit` would, all new rows in one commit.
        A request that fails validation gets its own error; a failed commit, all of them."""
        out: list[Any] = [None] * len(requests)
        items, where = [], []
        for i, request in enumerate(requests):
            try:
                new = _new_task(self, request.args, peer)
            except SyncdError as exc:
                out[i] = exc
                continue
            items.append((new, bool(request.args.get("allow_duplicate"))))
            where.append(i)
        try:
            results = self.d.dispatcher.submit_group(items)
        except SyncdError as exc:
            for i in where:
                out[i] = exc
            return out
        for i, (task, coalesced) in zip(where, results, strict=True):
            out[i] = _submitted(task, coalesced)
        return out

    # helpers ------------------------------------------------------------------------------
    def _task(self, task_id: int) -> Task:
        task = self.d.store.get(task_id)
        if task is None:
            raise SyncdError(ErrorCode.UNKNOWN_TASK, f"no task {task_id}")
        return task

    def pool_status(self) -> dict[str, Any]:
        disp = self.d.dispatcher
        max_workers = disp.max_workers
        active = len(disp.running)
        queued = self.d.store.counts().get("queued", 0)
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
        }

    def running_rows(self) -> list[dict[str, Any]]:
        disp = self.d.dispatcher
        with disp.cond:
            running = list(disp.running.values())
        now = self.d.clock.monotonic()
        rows = []
        for rt in sorted(running, key=lambda r: r.task.id):
            task = self.d.store.get(rt.task.id) or rt.task
            row = task.to_dict()
            row["elapsed_seconds"] = round(now - rt.started_mono, 3)
            row["cpu_percent"] = None
            row["rss_bytes"] = None
            if rt.child is not None:
                try:
                    sample = rt.child.sample()
                    row["cpu_percent"] = round(sample.cpu_percent, 1)
                    row["rss_bytes"] = sample.rss_bytes
                except Exception:
                    pass
                row["progress"] = rt.child.log.progress or row["progress"]
            rows.append(row)
        return rows


@op("ping")
def _ping(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    d = self.d
    return {
        "version": __version__,
        "pid": d.pid,
        "started_at": iso(d.started_at),
        "uptime_seconds": round(d.clock.monotonic() - d.started_mono, 3),
    }


@op("status")
def _status(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    result = self.pool_status()
    if args.get("verbose"):
        result["active_tasks"] = self.running_rows()
        queued = self.d.store.tasks_with_status(Status.QUEUED, limit=QUEUED_IN_STATUS)
        result["queued_tasks"] = [t.to_dict() for t in queued]
    return result


@op("list")
def _list(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    statuses = args.get("status")
    finished_since = None
    if not statuses:
        statuses = [s.value for s in Status]
        retention = timedelta(minutes=self.d.config.daemon.retention_minutes)
        finished_since = iso(self.d.clock.now() - retention)
    tasks, total = self.d.store.list_tasks(
        statuses=[Status(s) for s in statuses],
        source=args.get("source"),
        finished_since=finished_since,
        limit=args.get("limit", 200),
        after_id=args.get("after_id"),
    )
    rows = [t.to_dict() for t in tasks]
    if args.get("explain"):
        # One dispatcher snapshot for the whole page; only queued rows get a reason.
        from syncd.service.explain import reasons

        why = reasons(self.d, tasks)
        for row in rows:
            if row["id"] in why:
                row["reason"] = why[row["id"]]
    return {"tasks": rows, "total": total}


@op("get")
def _get(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    return {"task": self._task(args["id"]).to_dict()}


def _new_task(self: Ops, item: dict[str, Any], peer: Peer) -> Any:
    return self.d.dispatcher.new_task(
        item["source"],
        item.get("sync_type"),
        item.get("params"),
        item.get("priority"),
        "manual",
        peer.user,
    )


@op("submit")
def _submit(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    new = _new_task(self, args, peer)
    task, coalesced = self.d.dispatcher.submit(
        new, allow_duplicate=bool(args.get("allow_duplicate"))
    )
    return _submitted(task, coalesced)


def _submitted(task: Task, coalesced: bool) -> dict[str, Any]:
    return {"task": task.to_dict(), "coalesced": coalesced}


@op("submit_many")
def _submit_many(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    items = []
    for index, item in enumerate(args["items"]):
        try:
            items.append((_new_task(self, item, peer), bool(item.get("allow_duplicate"))))
        except SyncdError as exc:
            details = dict(exc.details or {})
            details["index"] = index
            raise SyncdError(exc.code, f"items[{index}]: {exc.message}", details) from None
    results = self.d.dispatcher.submit_many(items)
    return {"results": [{"id": t.id, "coalesced": c} for t, c in results]}


@op("cancel")
def _cancel(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    cancelled, skipped = self.d.dispatcher.cancel(list(args["ids"]))
    return {"cancelled": cancelled, "skipped": skipped}


@op("set_priority")
def _set_priority(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    self._task(args["id"])
    task = self.d.store.set_priority(args["id"], args["priority"])
    self.d.dispatcher.wake()
    return {"task": task.to_dict()}


@op("history")
def _history(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    statuses = args.get("status")
    tasks = self.d.store.history(
        source=args.get("source"),
        sync_type=args.get("sync_type"),
        statuses=[Status(s) for s in statuses] if statuses else None,
        trigger=args.get("trigger"),
        since=_time_arg("since", args.get("since")),
        until=_time_arg("until", args.get("until")),
        limit=args.get("limit", 100),
    )
    return {"tasks": [t.to_dict() for t in tasks]}


@op("logs")
def _logs(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    task = self._task(args["id"])
    path = self.d.dispatcher.log_dir / f"{task.id}.log"
    offset = args.get("offset", 0)
    if not args.get("follow"):
        try:
            text, size, truncated = read_log(path, offset)
        except FileNotFoundError:  # not started yet, spawn failed early, or pruned
            return {"text": "", "size": 0, "truncated": False}
        return {"text": text, "size": size, "truncated": truncated}
    return _follow_log(self, task.id, path, offset)


def _follow_log(
    self: Ops, task_id: int, path: Any, offset: int
) -> Iterator[tuple[dict[str, Any], bool] | None]:
    while True:
        task = self.d.store.get(task_id)
        final = task is None or task.status in FINAL
        try:
            text, size, _ = read_log(path, offset)
        except FileNotFoundError:
            text, size = "", offset
        if text:
            offset = size
            yield {"text": text, "offset": offset}, True
            continue  # a read is capped at 1 MiB: read on before sleeping or ending
        if final:
            yield (
                {
                    "status": task.status.value if task else None,
                    "exit_code": task.exit_code if task else None,
                },
                False,
            )
            return
        yield None
        time.sleep(LOG_FOLLOW_POLL_SECONDS)


def _route_row(route: Any) -> dict[str, Any]:
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


@op("routes")
def _routes(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    wanted = args.get("source")
    table = self.d.dispatcher.routes
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


@op("resolve")
def _resolve(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    table = self.d.dispatcher.routes
    res = table.resolve(args["source"], args.get("sync_type"), args.get("params"))
    source = table.source(res.source)
    return {
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


def _settings(self: Ops) -> dict[str, Any]:
    cfg = self.d.config
    out: dict[str, Any] = {}
    for name, value in vars(cfg.daemon).items():
        if name == "socket_mode":
            value = f"{value:04o}"
        elif hasattr(value, "value"):
            value = value.value
        elif not isinstance(value, (int, float, str, bool, type(None))):
            value = str(value)
        out[name] = {"value": value, "origin": cfg.origins.get(name, "default")}
    override = self.d.store.get_setting("max_workers")
    if override:
        out["max_workers"] = {"value": int(override), "origin": "runtime"}
    return {"settings": out}


@op("config_get")
def _config_get(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    return _settings(self)


@op("config_set")
def _config_set(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    if args.get("reset"):
        self.d.dispatcher.set_max_workers(None)
        log.info("max_workers reset to %d by %s", self.d.dispatcher.max_workers, peer.user)
    elif args.get("max_workers") is not None:
        self.d.dispatcher.set_max_workers(args["max_workers"])
        log.info("max_workers set to %d by %s", args["max_workers"], peer.user)
    else:
        raise SyncdError(ErrorCode.INVALID_ARGS, "give max_workers or reset: true")
    return _settings(self)


@op("pause")
def _pause(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    self.d.dispatcher.set_paused(True)
    return {"paused": True}


@op("resume")
def _resume(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    self.d.dispatcher.set_paused(False)
    return {"paused": False}


@op("process_queue")
def _process_queue(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    return {"started": self.d.dispatcher.tick()}


@op("clear_queue")
def _clear_queue(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    ids = self.d.store.queued_ids(args.get("source"))
    done = self.d.store.cancel_queued(ids, finished_at=iso(self.d.clock.now()) or "")
    self.d.dispatcher.wake()
    return {"cancelled": len(done)}


@op("fix_stuck")
def _fix_stuck(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    minutes = args.get("minutes") or self.d.config.daemon.stale_minutes
    failed = self.d.monitor.fix_stuck(minutes)
    reconciled = self.d.reconcile_orphans()
    return {"failed": failed, "reconciled": reconciled}


@op("reset_state")
def _reset_state(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    ids = self.d.store.queued_ids(None)
    done = self.d.store.cancel_queued(ids, finished_at=iso(self.d.clock.now()) or "")
    killed: list[int] = []
    if args.get("force"):
        with self.d.dispatcher.cond:
            running = list(self.d.dispatcher.running)
        killed = [i for i in running if self.d.dispatcher.cancel_one(i)]
    self.d.dispatcher.wake()
    return {"cancelled": len(done), "killed": killed}


@op("explain")
def _explain(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    from syncd.service.explain import explain

    return explain(self.d, self._task(args["id"]))


@op("watch")
def _watch(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    sub = self.d.events.subscribe(args.get("events"))
    return sub


@op("reload")
def _reload(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    return self.d.reload(dry_run=bool(args.get("dry_run")), requested_by=peer.user)


@op("schedules")
def _schedules(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    return {"schedules": self.d.scheduler.describe()}


@op("schedule_run")
def _schedule_run(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    return {"outcome": self.d.scheduler.run_now(args["name"]).to_dict()}


@op("schedule_pause")
def _schedule_pause(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    return {"schedule": self.d.scheduler.pause(args["name"])}


@op("schedule_resume")
def _schedule_resume(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    row = self.d.scheduler.resume(args["name"], from_now=bool(args.get("from_now")))
    self.d.poke_scheduler()
    return {"schedule": row}


@op("prune")
def _prune(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    result = self.d.maintenance.prune(dry_run=bool(args.get("dry_run")))
    return {"deleted": result.deleted, "kept": result.kept, "freed_bytes": result.freed_bytes}


# Handlers that live in modules of their own register themselves when imported.
from syncd.control import metrics_ops as _metrics_ops  # noqa: E402,F401
