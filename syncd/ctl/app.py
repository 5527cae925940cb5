"""`syncctl`: thin click commands over the socket protocol (SPEC 6 and 7.1).

Each command sends one op and renders its result; `--json` prints the result untouched.
Exit codes: 0 ok, 1 the daemon refused, 2 usage, 3 daemon unreachable, 130 Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import click

from syncd import __version__
from syncd.ctl import render
from syncd.ctl.client import Client, ConfigUnreadable, DaemonError, DaemonUnreachable, locate_socket

F = TypeVar("F", bound=Callable[..., Any])
FINAL = ("completed", "failed", "cancelled")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# -- plumbing ---------------------------------------------------------------------------------


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # ctx.meta is shared by the group and its commands: the last value given wins, so the
    # options work before and after the command name.
    if value not in (None, False):
        ctx.meta[f"syncctl.{param.name}"] = value
    return value


def common(f: F) -> F:
    """--socket, --config and --json, accepted by the group and by every command."""
    kw: dict[str, Any] = {"expose_value": False, "callback": _remember}
    f = click.option("--json", "json_out", is_flag=True, help="print the result as JSON", **kw)(f)
    f = click.option("--config", metavar="PATH", help="read the socket from this config", **kw)(f)
    return click.option("--socket", metavar="PATH", help="daemon socket path", **kw)(f)


def _meta(key: str) -> Any:
    return click.get_current_context().meta.get(f"syncctl.{key}")


def want_json() -> bool:
    return bool(_meta("json_out"))


def client(timeout: float | None = 30.0) -> Client:
    """A client for this invocation (streams get their own, with no request timeout)."""
    ctx = click.get_current_context()
    try:
        path, origin = locate_socket(_meta("socket"), _meta("config"), os.environ)
    except ConfigUnreadable as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    c = Client(path, timeout=timeout, origin=origin)
    ctx.call_on_close(c.close)
    return c


def shared_client() -> Client:
    """The one connection this invocation's requests share."""
    meta = click.get_current_context().meta
    if "syncctl.client" not in meta:
        meta["syncctl.client"] = client()
    c: Client = meta["syncctl.client"]
    return c


def call(op: str, **args: Any) -> Any:
    """One request; args left as None are not sent, so the daemon's defaults apply."""
    return shared_client().call(op, **{k: v for k, v in args.items() if v is not None})


def emit(result: Any, human: str | Callable[[Any], str]) -> None:
    """The result as JSON with --json, else `human` (a render function or a fill template)."""
    if want_json():
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(render.fill(human, result) if isinstance(human, str) else human(result))


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """`K=V` → {"K": "V"}; a bare `K` → {"K": True} (a flag such as `full`)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not key:
            raise click.BadParameter(
                f"{item!r}: expected K=V or a bare flag K", param_hint="--param"
            )
        if key in out:
            raise click.BadParameter(f"{key!r} given twice", param_hint="--param")
        out[key] = value if sep else True
    return out


def since_iso(text: str, now: datetime) -> str:
    """`30m`, `2h`, `7d` (also `s`, `w`) before now, or an ISO 8601 time (naive = UTC)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if m:
        dt = now - timedelta(seconds=float(m.group(1)) * UNITS[m.group(2)])
    else:
        try:
            dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise click.BadParameter(
                f"{text!r}: use ISO 8601 (2025-09-29T15:30:00Z) or a relative 30m, 2h, 7d",
                param_hint="--since",
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class SyncctlGroup(click.Group):
    """Aliases, and the one place errors become messages and exit codes (no tracebacks)."""

    aliases = {"cancel": "cancel-task"}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DaemonUnreachable as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(3)
        except DaemonError as exc:
            click.echo(f"error: {exc.code}: {exc.message}", err=True)
            for line in render.detail_lines(exc.details):
                click.echo(line, err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            ctx.exit(130)
        except BrokenPipeError:
            # `syncctl history | head`: the reader left; say nothing, flush nothing more.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(141)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get("SYNCCTL_DEBUG"):
                raise
            click.echo(f"error: unexpected reply or failure: {exc!r}", err=True)
            ctx.exit(1)


def command(group: click.Group, name: str, example: str, **kw: Any) -> Callable[[F], F]:
    """A subcommand with the common options and a one-line example in its help."""

    def deco(f: F) -> F:
        cmd = group.command(name, epilog=f"Example: {example}", **kw)(common(f))
        return cmd  # type: ignore[return-value]

    return deco


@click.group(cls=SyncctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="syncctl")
@common
def main() -> None:
    """Control a running syncd daemon over its Unix socket."""


# -- pool -------------------------------------------------------------------------------------


@command(main, "ping", "syncctl ping")
def ping() -> None:
    """Daemon version, uptime and pid."""
    emit(call("ping"), render.ping_text)


@command(main, "status", "syncctl status --verbose")
@click.option("--verbose", "-v", is_flag=True, help="list active and queued tasks")
def status(verbose: bool) -> None:
    """Pool state: workers, active, queued, utilization."""
    emit(call("status", verbose=verbose), lambda r: render.status_block(r, now_utc()))


@command(main, "monitor", "syncctl monitor --continuous --interval 5")
@click.option("--continuous", "-c", is_flag=True, help="repeat until Ctrl-C")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True)
def monitor(continuous: bool, interval: float) -> None:
    """The classic `Worker Pool Status` block."""
    while True:
        r = call("status", verbose=True)
        if want_json():
            click.echo(json.dumps(r) if continuous else json.dumps(r, indent=2))
        else:
            click.echo(render.monitor_block(r, datetime.now().astimezone()))
        if not continuous:
            return
        if not want_json():
            click.echo()
        time.sleep(interval)


@command(main, "pause", "syncctl pause")
def pause() -> None:
    """Stop starting tasks (running ones continue)."""
    emit(call("pause"), "dispatching paused; running tasks continue")


@command(main, "resume", "syncctl resume")
def resume() -> None:
    """Start dispatching again."""
    emit(call("resume"), "dispatching resumed")


@command(main, "process-queue", "syncctl process-queue")
def process_queue() -> None:
    """Wake the dispatcher now."""
    emit(call("process_queue"), "started: {started}")


@command(main, "config", "syncctl config --max-workers 4")
@click.option("--max-workers", type=click.IntRange(1, 64), help="set at runtime (persisted)")
@click.option("--reset", is_flag=True, help="drop runtime overrides")
def config(max_workers: int | None, reset: bool) -> None:
    """Effective settings and where each came from.

    Origins: default, file, env or runtime (set with --max-workers)."""
    if max_workers is not None and reset:
        raise click.UsageError("--max-workers and --reset exclude each other")
    if max_workers is not None:
        r = call("config_set", max_workers=max_workers)
    else:
        r = call("config_set", reset=True) if reset else call("config_get")
    emit(r, render.config_table)


@command(main, "reload", "syncctl reload --dry-run")
@click.option("--dry-run", is_flag=True, help="only show what would change")
def reload(dry_run: bool) -> None:
    """Re-read the config; a bad one is rejected and reported."""
    emit(call("reload", dry_run=dry_run), lambda r: render.reload_text(r, dry_run))


@command(main, "prune", "syncctl prune --dry-run")
@click.option("--dry-run", is_flag=True, help="only count what would go")
def prune(dry_run: bool) -> None:
    """Run the history maintenance now."""
    verb = "would delete" if dry_run else "deleted"
    emit(
        call("prune", dry_run=dry_run),
        verb + " {deleted} tasks, kept {kept}, freed {freed_bytes} bytes",
    )


@command(main, "clear-queue", "syncctl clear-queue --source crm")
@click.option("--source", help="only this source")
def clear_queue(source: str | None) -> None:
    """Cancel every queued task."""
    emit(call("clear_queue", source=source), "cancelled {cancelled} queued tasks")


@command(main, "fix-stuck", "syncctl fix-stuck --minutes 10")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), help="stale threshold")
def fix_stuck(minutes: float | None) -> None:
    """Run stale detection and reconcile dead processes now."""
    emit(call("fix_stuck", minutes=minutes), "failed as stale: {failed}; reconciled: {reconciled}")


@command(main, "reset-state", "syncctl reset-state --force")
@click.option("--force", is_flag=True, help="also kill running tasks (they end cancelled)")
def reset_state(force: bool) -> None:
    """Cancel all queued tasks; --force also kills running ones."""
    emit(call("reset_state", force=force), "cancelled {cancelled} queued tasks; killed: {killed}")


@command(main, "completion", "syncctl completion bash > /etc/bash_completion.d/syncctl")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(main, {}, "syncctl", "_SYNCCTL_COMPLETE").source())


# -- tasks ------------------------------------------------------------------------------------

ID = click.argument("task_id", metavar="ID", type=int)
PARAM = click.option("--param", "params", multiple=True, metavar="K=V", help="bare K = flag")


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
        verb = "coalesced into" if r.get("coalesced") else "queued"
        click.echo(f"{verb} task {t['id']} ({render.sync_name(t)})")
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
        if want_json():
            return emit(r, str)
        click.echo(r.get("text", ""), nl=False)
        if r.get("truncated"):
            click.echo(f"(log truncated to its head and tail; {r.get('size')} bytes)", err=True)
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


# -- routes and schedules ---------------------------------------------------------------------


@command(main, "routes", "syncctl routes crm")
@click.argument("source", required=False)
def routes(source: str | None) -> None:
    """The routing table."""
    emit(call("routes", source=source), render.routes_text)


@command(main, "resolve", "syncctl resolve crm deals --param full")
@click.argument("source")
@click.argument("sync_type", metavar="[TYPE]", required=False)
@PARAM
def resolve(source: str, sync_type: str | None, params: tuple[str, ...]) -> None:
    """Which command a submit would run, and why."""
    r = call("resolve", source=source, sync_type=sync_type, params=parse_params(params) or None)
    emit(r, render.resolve_text)


@command(main, "schedules", "syncctl schedules")
def schedules() -> None:
    """Every schedule with its next and last fire."""
    emit(call("schedules"), render.schedules_table)


@main.group("schedule", epilog="Example: syncctl schedule run crm-contacts")
@common
def schedule() -> None:
    """Fire, pause or resume one schedule."""


@command(schedule, "run", "syncctl schedule run crm-contacts")
@click.argument("name")
def schedule_run(name: str) -> None:
    """Fire now (the schedule's overlap rule applies)."""
    emit(call("schedule_run", name=name), lambda r: f"{name}: {render.outcome_text(r['outcome'])}")


@command(schedule, "pause", "syncctl schedule pause crm-contacts")
@click.argument("name")
def schedule_pause(name: str) -> None:
    """Disable at runtime (persisted)."""
    emit(call("schedule_pause", name=name), f"{name}: paused")


@command(schedule, "resume", "syncctl schedule resume crm-contacts --from-now")
@click.argument("name")
@click.option("--from-now", is_flag=True, help="do not catch up the paused period")
def schedule_resume(name: str, from_now: bool) -> None:
    """Enable again."""
    r = call("schedule_resume", name=name, from_now=from_now)
    emit(r, lambda r: f"{name}: resumed, next fire {render.when(r['schedule'].get('next_fire'))}")


# Commands defined in their own module register themselves on `main` when imported.
# ctl_extra: top, show, explain, list-tasks, history and daemon-backed completion.
from syncd.ctl import freshness as _ctl_freshness  # noqa: E402,F401
from syncd.ctl import streams as _ctl_more  # noqa: E402,F401
from syncd.ctl import tasks as _ctl_extra  # noqa: E402,F401
