"""Ops on tasks: the live list, one task, submit, cancel, priority, history, explain, and
the bulk cancels. Every write goes through the task service, so each change is announced."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from syncd.config.routing import normalise
from syncd.control.auth import Peer
from syncd.control.ops.base import ID, OPS, SOURCE, STATUSES, Context, time_arg
from syncd.control.protocol import Arg, Request
from syncd.core.clock import iso
from syncd.core.errors import SyncdError
from syncd.core.models import TRIGGER_MANUAL, ErrorCode, NewTask, Status, Task
from syncd.service.explain import explain as explain_task
from syncd.service.explain import reasons
from syncd.service.sources import known

MAX_ITEMS = 1000


def _name(text: str | None) -> str | None:
    """A source or sync type as stored: submit lower-cases and strips them (SPEC 4), so a
    filter must too, or `--source Alpha` finds nothing and says so without an error."""
    return None if text is None else normalise(text)


SUBMIT_ARGS: dict[str, Arg] = {
    "source": Arg("str", required=True, help="source name"),
    "sync_type": Arg("str", "all", help="sync type; absent or empty = all"),
    "params": Arg("params", {}, help="route params, rendered as --key=value"),
    "priority": Arg("int", None, min=0, max=9, help="default: the route's priority"),
    "allow_duplicate": Arg("bool", False, help="do not coalesce with a queued twin"),
}


@OPS.op(
    "list",
    "the live view: running, queued, recently finished",
    {
        "status": Arg("str_list", choices=STATUSES, min_items=1),
        "source": SOURCE,
        "limit": Arg("int", 200, min=1, max=10000),
        "after_id": Arg("int", min=0),
        "explain": Arg("bool", False, help="add each queued row's one-word reason"),
    },
    command="list-tasks",
    mutating=False,
)
def list_tasks(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    statuses = args.get("status")
    finished_since = None
    if not statuses:
        statuses = [s.value for s in Status]
        retention = timedelta(minutes=ctx.d.config.daemon.retention_minutes)
        finished_since = iso(ctx.d.clock.now() - retention)
    tasks, total = ctx.d.store.list_tasks(
        statuses=[Status(s) for s in statuses],
        source=_name(args.get("source")),
        finished_since=finished_since,
        limit=args.get("limit", 200),
        after_id=args.get("after_id"),
    )
    rows = [t.to_dict() for t in tasks]
    if args.get("explain"):
        # One dispatcher snapshot for the whole page; only queued rows get a reason.
        why = reasons(ctx.d, tasks)
        for row in rows:
            if row["id"] in why:
                row["reason"] = why[row["id"]]
    return {"tasks": rows, "total": total}


@OPS.op("get", "one task, every field, and the task that followed it", {"id": ID},
        command="show", mutating=False)  # fmt: skip
def get(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    task = ctx.task(args["id"])
    follow = ctx.d.store.follow_up_of(task.id)
    return {"task": task.to_dict(), "followed_by": None if follow is None else follow.to_dict()}


def _request(ctx: Context, item: dict[str, Any], peer: Peer) -> NewTask:
    return ctx.d.tasks.request(
        item["source"],
        item.get("sync_type"),
        item.get("params"),
        item.get("priority"),
        TRIGGER_MANUAL,
        peer.user,
    )


def _submitted(task: Task, coalesced: bool) -> dict[str, Any]:
    return {"task": task.to_dict(), "coalesced": coalesced}


def submit_batch(ctx: Context, requests: list[Request], peer: Peer) -> list[Any]:
    """Pipelined submits: each answered as `submit` would, all new rows in one commit.
    A request that fails validation gets its own error; a failed commit, all of them."""
    out: list[Any] = [None] * len(requests)
    items, where = [], []
    for i, request in enumerate(requests):
        try:
            new = _request(ctx, request.args, peer)
        except SyncdError as exc:
            out[i] = exc
            continue
        items.append((new, bool(request.args.get("allow_duplicate"))))
        where.append(i)
    try:
        results = ctx.d.tasks.submit_group(items)
    except SyncdError as exc:
        for i in where:
            out[i] = exc
        return out
    for i, (task, coalesced) in zip(where, results, strict=True):
        out[i] = _submitted(task, coalesced)
    return out


@OPS.op(
    "submit",
    "queue a sync (coalesced with a queued twin)",
    SUBMIT_ARGS,
    command="submit",
    batch=submit_batch,
)
def submit(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    new = _request(ctx, args, peer)
    task, coalesced = ctx.d.tasks.submit(new, allow_duplicate=bool(args.get("allow_duplicate")))
    return _submitted(task, coalesced)


@OPS.op(
    "submit_many",
    "queue several syncs in one transaction",
    {"items": Arg("items", required=True, min_items=1, max_items=MAX_ITEMS, items=SUBMIT_ARGS)},
    command="submit-many",
)
def submit_many(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    items = []
    for index, item in enumerate(args["items"]):
        try:
            items.append((_request(ctx, item, peer), bool(item.get("allow_duplicate"))))
        except SyncdError as exc:
            details = dict(exc.details or {})
            details["index"] = index
            raise SyncdError(exc.code, f"items[{index}]: {exc.message}", details) from None
    results = ctx.d.tasks.submit_many(items)
    return {"results": [{"id": t.id, "coalesced": c} for t, c in results]}


@OPS.op(
    "cancel",
    "cancel queued or running tasks",
    {"ids": Arg("int_list", required=True, min=1, min_items=1, max_items=10000)},
    command="cancel-task",
)
def cancel(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    cancelled, skipped = ctx.d.tasks.cancel(list(args["ids"]))
    return {"cancelled": cancelled, "skipped": skipped}


@OPS.op(
    "set_priority",
    "change a queued task's priority",
    {"id": ID, "priority": Arg("int", required=True, min=0, max=9)},
    command="priority",
)
def set_priority(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    ctx.task(args["id"])
    return {"task": ctx.d.tasks.set_priority(args["id"], args["priority"]).to_dict()}


@OPS.op(
    "history",
    "finished tasks, newest first",
    {
        "source": SOURCE,
        "sync_type": Arg("str"),
        "status": Arg("str_list", choices=STATUSES, min_items=1),
        "trigger": Arg("str"),
        "since": Arg("str", help="ISO 8601"),
        "until": Arg("str", help="ISO 8601"),
        "limit": Arg("int", 100, min=1, max=10000),
        "before_id": Arg("int", min=1, help="page cursor: rows after this task's place"),
    },
    command="history",
    mutating=False,
)
def history(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    statuses = args.get("status")
    before = None
    if args.get("before_id") is not None:
        cursor = ctx.task(args["before_id"])
        if cursor.finished_at is None:
            raise SyncdError(
                ErrorCode.INVALID_ARGS, f"before_id: task {cursor.id} has not finished"
            )
        before = (cursor.finished_at, cursor.id)
    tasks = ctx.d.store.history(
        source=_name(args.get("source")),
        sync_type=_name(args.get("sync_type")),
        statuses=[Status(s) for s in statuses] if statuses else None,
        trigger=args.get("trigger"),
        since=time_arg("since", args.get("since")),
        until=time_arg("until", args.get("until")),
        limit=args.get("limit", 100),
        before=before,
    )
    return {"tasks": [t.to_dict() for t in tasks]}


@OPS.op(
    "explain", "why a queued task is not running", {"id": ID}, command="explain", mutating=False
)
def explain(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    return explain_task(ctx.d, ctx.task(args["id"]))


@OPS.op("clear_queue", "cancel every queued task", {"source": SOURCE}, command="clear-queue")
def clear_queue(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    source = _name(args.get("source"))
    cancelled = ctx.d.tasks.clear_queue(source)
    if source is not None and not cancelled:
        # "cancelled 0" for a typo would read as an empty queue. A source a reload removed
        # may still have queued tasks: those are cancelled above, by its name.
        known(ctx.d, source)
    return {"cancelled": cancelled}


@OPS.op(
    "reset_state",
    "cancel all queued; force: kill running too",
    {"force": Arg("bool", False)},
    command="reset-state",
)
def reset_state(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    done, killed = ctx.d.tasks.reset(force=bool(args.get("force")))
    return {"cancelled": done, "killed": killed}
