"""syncctl commands for operators at a terminal: `top`, `show`, `explain`, `list-tasks`
(with the reason each queued task waits) and `history` (--failed, per-route --summary).

They live here to keep ctl.py to the plain one-request commands. Completion of task ids,
sources, sync types and schedule names asks the daemon; it is silent when the daemon cannot
be reached."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

from syncd.ctl import render
from syncd.ctl.app import (
    FINAL,
    ID,
    call,
    client,
    command,
    emit,
    main,
    now_utc,
    since_iso,
    want_json,
)
from syncd.ctl.client import Client, locate_socket

SUMMARY_LIMIT = 10000  # the history op's own cap: the summary covers at most this many runs
COMPLETE_TIMEOUT = 2.0


# -- completion from the daemon ---------------------------------------------------------------


def _complete_call(ctx: click.Context, op: str, **args: Any) -> Any:
    """One request for a completion; None on any failure (completion must never print)."""
    try:
        meta = ctx.meta
        path, _ = locate_socket(meta.get("syncctl.socket"), meta.get("syncctl.config"), os.environ)
        with Client(path, connect_timeout=COMPLETE_TIMEOUT, timeout=COMPLETE_TIMEOUT) as c:
            return c.call(op, **args)
    except Exception:
        return None


def complete_task_ids(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Running and queued tasks (and recently finished ones), with their sync as help."""
    r = _complete_call(ctx, "list", limit=200)
    tasks = r.get("tasks", []) if isinstance(r, dict) else []
    return [
        CompletionItem(str(t["id"]), help=f"{t.get('status')} {render.sync_name(t)}")
        for t in tasks
        if str(t.get("id", "")).startswith(incomplete)
    ]


def _sources(ctx: click.Context) -> list[dict[str, Any]]:
    r = _complete_call(ctx, "routes")
    return list(r.get("sources", [])) if isinstance(r, dict) else []


def complete_sources(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    return [CompletionItem(s["name"]) for s in _sources(ctx) if s["name"].startswith(incomplete)]


def complete_sync_types(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The routes of the SOURCE already typed (or of every source for --type)."""
    wanted = ctx.params.get("source")
    names = {
        r["sync_type"]
        for s in _sources(ctx)
        if wanted in (None, s["name"])
        for r in s.get("routes", [])
    }
    return [CompletionItem(n) for n in sorted(names) if n.startswith(incomplete)]


def complete_schedules(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    r = _complete_call(ctx, "schedules")
    rows = r.get("schedules", []) if isinstance(r, dict) else []
    return [CompletionItem(s["name"]) for s in rows if s["name"].startswith(incomplete)]


Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]
COMPLETERS: dict[str, Completer] = {
    "task_id": complete_task_ids,
    "task_ids": complete_task_ids,
    "source": complete_sources,
    "sync_type": complete_sync_types,
    "name": complete_schedules,
}


def attach_completers(group: click.Group) -> None:
    """Give every ID, SOURCE, TYPE and schedule NAME parameter its daemon-backed completer.

    Set on the parameters after the fact because most commands live in ctl.py; click reads
    the same attribute its `shell_complete=` argument sets."""
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            attach_completers(cmd)
            continue
        for param in cmd.params:
            fn = COMPLETERS.get(param.name or "")
            if fn is not None and not isinstance(param.type, click.Choice):
                param._custom_shell_complete = fn


# -- show, explain, list-tasks, history -------------------------------------------------------


@command(main, "show", "syncctl show 812")
@ID
def show(task_id: int) -> None:
    """One task, every field: the argv it runs and the route rule (exact or fallback)."""
    emit(call("get", id=task_id), lambda r: render.task_show(r["task"]))


@command(main, "explain", "syncctl explain 813")
@ID
def explain(task_id: int) -> None:
    """Why a queued task is not running yet, and when it may start.

    Reasons: pool_full, source_limit, route_running, not_before, paused, none. The start
    time is an estimate from the median duration of each route's last 20 completed runs
    (absent until the routes involved have run). A task queued by a schedule that is now
    paused still runs: the note says so."""
    emit(call("explain", id=task_id), lambda r: render.explain_full(task_id, r, now_utc()))


@command(main, "list-tasks", "syncctl list-tasks --queued --source crm")
@click.option("--active", is_flag=True, help="running tasks only")
@click.option("--queued", is_flag=True, help="queued tasks only, with the reason each waits")
@click.option("--finished", is_flag=True, help="recently finished tasks only")
@click.option("--source", help="only this source")
def list_tasks(active: bool, queued: bool, finished: bool, source: str | None) -> None:
    """The live view: running, queued and recently finished tasks.

    With --queued each task shows why it waits (the one word of `syncctl explain`)."""
    if active + queued + finished > 1:
        raise click.UsageError("--active, --queued and --finished exclude each other")
    if queued:
        r = call("list", status=["queued"], source=source, explain=True)
        return emit(r, lambda r: render.queued_table(r, now_utc()))
    which = ["running"] if active else list(FINAL) if finished else None
    emit(call("list", status=which, source=source), lambda r: render.list_text(r, now_utc()))


@command(main, "history", "syncctl history --failed --since 2h")
@click.option("--source", help="only this source")
@click.option("--type", "sync_type", help="only this sync type")
@click.option("--status", "statuses", multiple=True, type=click.Choice(FINAL))
@click.option("--failed", is_flag=True, help="only failed runs (same as --status failed)")
@click.option("--since", metavar="WHEN", help="ISO 8601 (naive = UTC) or relative: 30m, 2h, 7d")
@click.option("--limit", type=click.IntRange(1, 10000), help="at most N rows (daemon: 100)")
@click.option(
    "--summary",
    is_flag=True,
    help="per route: runs, failures, p50/p95 duration, last success (up to 10000 runs)",
)
def history(
    statuses: tuple[str, ...], failed: bool, since: str | None, summary: bool, **kw: Any
) -> None:
    """Finished runs, newest first; or a per-route summary of them.

    The summary is computed here from one `history` request (--limit, default 10000)."""
    if failed:
        statuses = tuple(dict.fromkeys([*statuses, "failed"]))
    when = since_iso(since, now_utc()) if since else None
    if summary and kw.get("limit") is None:
        kw["limit"] = SUMMARY_LIMIT
    r = call("history", status=list(statuses) or None, since=when, **kw)
    if not summary:
        return emit(r, lambda r: render.list_text(r, now_utc()))
    rows = render.history_summary(r.get("tasks", []))
    emit({"routes": rows, "runs": len(r.get("tasks", []))}, lambda s: render.summary_table(rows))


# -- top --------------------------------------------------------------------------------------


@command(main, "top", "syncctl top --no-color")
@click.option("--no-color", is_flag=True, help="no colours (also when NO_COLOR is set)")
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 2.0),
    default=2.0,
    show_default=True,
    help="seconds between CPU/RSS refreshes",
)
def top(no_color: bool, interval: float) -> None:
    """Full-screen live dashboard fed by the daemon's event stream.

    Keys: arrows select, c cancel (asks y/n), + / - make a queued task more / less urgent,
    p pause or resume dispatching, q quit."""
    from syncd.ctl.top.app import run_top

    if want_json():
        raise click.UsageError("top is interactive; use `syncctl watch --json` for a stream")
    where = client()  # resolves --socket/--config/env as every command does; not connected
    color = not no_color and not os.environ.get("NO_COLOR")
    code = run_top(where.path, where.origin, color=color, interval=interval)
    click.get_current_context().exit(code)


attach_completers(main)
