"""Shell completion: the `completion` command, and completers that ask the daemon for task
ids, sources, sync types and schedule names (silent when it cannot be reached)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

from syncd.ctl import render
from syncd.ctl.app import command, main
from syncd.ctl.client import Client, locate_socket

COMPLETE_TIMEOUT = 2.0


@command(main, "completion", "syncctl completion bash > /etc/bash_completion.d/syncctl")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(main, {}, "syncctl", "_SYNCCTL_COMPLETE").source())


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
    "source_name": complete_sources,
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
