"""`syncctl watch`: the daemon's event stream, one line per event (or JSON lines)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from syncd.core.events import EVENT_KINDS
from syncd.ctl.app import client, command, main, want_json


@command(main, "watch", "syncctl watch --events task")
@click.option(
    "--events",
    "kinds",
    multiple=True,
    type=click.Choice(list(EVENT_KINDS)),
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
    if kind == "source" and event.get("message"):
        return f"{at} {event['message']}"  # `source crm opened: 5 consecutive failures, ...`
    return f"{at} {kind}"
