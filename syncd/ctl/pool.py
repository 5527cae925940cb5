"""syncctl commands for the pool and the daemon: liveness, status, monitor, pause, workers,
reload, maintenance and repairs, and the full-screen `top`."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime

import click

from syncd.ctl import render
from syncd.ctl.app import call, client, command, emit, main, now_utc, want_json


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
