"""syncctl commands for the ops with no SPEC 6 command of their own: `submit-many`, `watch`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from syncd.ctl.app import call, client, command, emit, main, want_json

# Every op of the protocol and the syncctl command that sends it (a test binds the two).
OP_COMMANDS = {
    "ping": "ping",
    "status": "status",
    "list": "list-tasks",
    "get": "show",
    "submit": "submit",
    "submit_many": "submit-many",
    "cancel": "cancel-task",
    "set_priority": "priority",
    "history": "history",
    "logs": "logs",
    "routes": "routes",
    "resolve": "resolve",
    "schedules": "schedules",
    "schedule_run": "schedule run",
    "schedule_pause": "schedule pause",
    "schedule_resume": "schedule resume",
    "config_get": "config",
    "config_set": "config",
    "pause": "pause",
    "resume": "resume",
    "process_queue": "process-queue",
    "clear_queue": "clear-queue",
    "fix_stuck": "fix-stuck",
    "reset_state": "reset-state",
    "reload": "reload",
    "explain": "explain",
    "prune": "prune",
    "watch": "watch",
    "metrics": "metrics",
    "series": "metrics",
}


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


@command(main, "watch", "syncctl watch --events task")
@click.option(
    "--events",
    "kinds",
    multiple=True,
    type=click.Choice(["task", "pool", "schedule", "config"]),
    help="only these event kinds (repeatable); default all",
)
def watch(kinds: tuple[str, ...]) -> None:
    """Stream the daemon's events until Ctrl-C (one line each; JSON with --json)."""
    args: dict[str, Any] = {"events": list(kinds)} if kinds else {}
    for event in client(timeout=None).stream("watch", **args):
        if want_json():
            click.echo(json.dumps(event))
        else:
            click.echo(_event_line(event))
        sys.stdout.flush()


def _event_line(event: dict[str, Any]) -> str:
    at = event.get("at", "")
    kind = event.get("event", "?")
    task = event.get("task")
    if kind == "task" and task:
        return f"{at} task {task['id']} {task['source']}.{task['route']} {task['status']}"
    if kind == "pool" and event.get("status"):
        s = event["status"]
        return f"{at} pool running={s.get('running')} queued={s.get('queued')}"
    return f"{at} {kind}"


@command(main, "metrics", "syncctl metrics > /var/lib/node_exporter/textfile/syncd.prom")
@click.option("--series", is_flag=True, help="the 24 h chart data instead (JSON)")
def metrics(series: bool) -> None:
    """The daemon's metrics in the Prometheus text format (node_exporter's textfile
    collector reads it); --json prints the op's JSON."""
    if series:
        click.echo(json.dumps(call("series"), indent=2))
        return
    result = call("metrics")
    if want_json():
        click.echo(json.dumps(result, indent=2))
        return
    from syncd.ctl.metrics import exposition  # prometheus_client: only for this command

    sys.stdout.write(exposition(result).decode())
