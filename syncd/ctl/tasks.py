"""syncctl commands on tasks: submit (one or many), cancel, priority, logs, show, explain,
list-tasks (with the reason each queued task waits) and history (--failed, --summary)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from syncd.core.models import FINAL_NAMES
from syncd.ctl import render, waiting
from syncd.ctl.app import (
    ID,
    PARAM,
    call,
    client,
    command,
    emit,
    main,
    now_utc,
    parse_params,
    shared_client,
    since_iso,
    want_json,
)

SUMMARY_LIMIT = 10000  # the history op's own cap: the summary covers at most this many runs


@command(main, "submit", "syncctl submit crm contacts --priority 3 --param full --wait")
@click.argument("source")
@click.argument("sync_type", metavar="[TYPE]", required=False)
@click.option("--priority", type=click.IntRange(0, 9), help="0 = most urgent, 9 = least")
@PARAM
@click.option("--allow-duplicate", is_flag=True, help="do not coalesce with a queued twin")
@click.option("--wait", is_flag=True, help="follow the task; exit 0 only if it completes")
def submit(source: str, sync_type: str | None, params: tuple[str, ...], **kw: Any) -> None:
    """Queue a sync."""
    args = {"priority": kw["priority"], "allow_duplicate": kw["allow_duplicate"]}
    params_ = parse_params(params) or None
    r = call("submit", source=source, sync_type=sync_type, params=params_, **args)
    t = r["task"]
    if want_json():
        click.echo(json.dumps(r) if kw["wait"] else json.dumps(r, indent=2))
    else:
        click.echo(f"{_submitted_verb(r)} task {t['id']} ({render.sync_name(t)})")
    if not kw["wait"]:
        return
    last = None
    for state in shared_client().follow_task(t["id"]):
        if want_json():
            click.echo(json.dumps(state))
        elif state["status"] != last:
            click.echo(render.task_line(state))
        last = state["status"]
    click.get_current_context().exit(0 if last == "completed" else 1)


@command(main, "cancel-task", "syncctl cancel-task 812 813")
@click.argument("task_ids", metavar="ID...", type=int, nargs=-1, required=True)
def cancel_task(task_ids: tuple[int, ...]) -> None:
    """Cancel queued or running tasks (alias: cancel)."""
    emit(call("cancel", ids=list(task_ids)), render.cancel_text)


@command(main, "priority", "syncctl priority 813 1")
@ID
@click.argument("priority", metavar="N", type=click.IntRange(0, 9))
def set_priority(task_id: int, priority: int) -> None:
    """Change a queued task's priority (0 = most urgent)."""
    r = call("set_priority", id=task_id, priority=priority)
    emit(r, lambda r: f"task {task_id}: priority {r['task']['priority']}")


@command(main, "logs", "syncctl logs 812 --follow")
@ID
@click.option("--follow", "-f", is_flag=True, help="until the task ends; exit 0 if it completed")
def logs(task_id: int, follow: bool) -> None:
    """A task's output."""
    if not follow:
        r = call("logs", id=task_id)
        text = [r.get("text", "")]
        written = r.get("end", 0)  # when asked: a running task writes on meanwhile
        while r.get("size", 0) < written:  # a reply carries at most 1 MiB
            at = r["size"]
            r = call("logs", id=task_id, offset=at)
            text.append(r.get("text", ""))
            if r.get("size", 0) <= at:  # a running task's last character is half written
                break
        if want_json():
            return emit({**r, "text": "".join(text)}, str)
        click.echo("".join(text), nl=False)
        if r.get("truncated"):
            click.echo(f"(log truncated to its head and tail; {r.get('end')} bytes)", err=True)
        return
    end: dict[str, Any] = {}
    for frame in client(timeout=None).stream("logs", id=task_id, follow=True):
        if want_json():
            click.echo(json.dumps(frame))
        elif "text" in frame:
            click.echo(frame["text"], nl=False)
            sys.stdout.flush()
        end = frame if "status" in frame else end
    click.get_current_context().exit(0 if end.get("status") == "completed" else 1)


@command(main, "submit-many", "syncctl submit-many jobs.jsonl   # one submit object per line")
@click.argument("source_file", type=click.File("r"), default="-")
def submit_many(source_file: Any) -> None:
    """Queue many syncs in one request: JSON lines of submit args (all or nothing)."""
    items = []
    for number, line in enumerate(source_file, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(
                f"line {number}: {exc.msg}", param_hint="SOURCE_FILE"
            ) from None
        items.append(item)
    if not items:
        raise click.BadParameter("no items", param_hint="SOURCE_FILE")
    result = call("submit_many", items=items)
    emit(
        result,
        lambda r: "\n".join(
            f"{'coalesced into' if x['coalesced'] else 'queued'} task {x['id']}"
            for x in r["results"]
        ),
    )


# -- show, explain, list-tasks, history -------------------------------------------------------


@command(main, "show", "syncctl show 812")
@ID
def show(task_id: int) -> None:
    """One task, every field: the argv it runs and the route rule (exact or fallback)."""
    emit(call("get", id=task_id), lambda r: waiting.task_show(r["task"], r.get("followed_by")))


@command(main, "explain", "syncctl explain 813")
@ID
def explain(task_id: int) -> None:
    """Why a queued task is not running yet, and when it may start.

    Reasons: pool_full, source_limit, route_running, not_before, paused, none. The start
    time is an estimate from the median duration of each route's last 20 completed runs
    (absent until the routes involved have run). A task queued by a schedule that is now
    paused still runs: the note says so."""
    emit(call("explain", id=task_id), lambda r: waiting.explain_full(task_id, r, now_utc()))


def _submitted_verb(reply: dict[str, Any]) -> str:
    """A submit that found a slot free started its task in the same commit: say so."""
    if reply.get("coalesced"):
        return "coalesced into"
    return "started" if reply["task"].get("status") == "running" else "queued"


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
        return emit(r, lambda r: waiting.queued_table(r, now_utc()))
    which = ["running"] if active else list(FINAL_NAMES) if finished else None
    emit(call("list", status=which, source=source), lambda r: render.list_text(r, now_utc()))


@command(main, "history", "syncctl history --failed --since 2h")
@click.option("--source", help="only this source")
@click.option("--type", "sync_type", help="only this sync type")
@click.option("--status", "statuses", multiple=True, type=click.Choice(FINAL_NAMES))
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
    rows = waiting.history_summary(r.get("tasks", []))
    emit({"routes": rows, "runs": len(r.get("tasks", []))}, lambda s: waiting.summary_table(rows))
