"""The `syncd` program: the daemon in the foreground, `check` and `demo`. A config or database
problem ends it with exit 78 (EX_CONFIG, which systemd is told not to restart on) and one
clear line, never a traceback."""

from __future__ import annotations

import json
import os
import traceback
from datetime import datetime, timezone
from typing import Any

import click

from syncd import __version__
from syncd.config.load import load_config
from syncd.config.model import ConfigError
from syncd.core.errors import StoreUnusable
from syncd.core.paths import resolve_config_path
from syncd.daemon.check import probe_lines, render_json, render_text, run_check, run_probe

EX_SOFTWARE = 70
EX_CONFIG = 78
CONFIG_HELP = "Config file (default: $SYNCD_CONFIG, else /etc/syncd/syncd.toml)."


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Example: syncd --config /etc/syncd/syncd.toml",
)
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.version_option(__version__, prog_name="syncd")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Run the sync daemon in the foreground (no subcommand), or check a config, or demo."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path
    if ctx.invoked_subcommand is None:
        ctx.exit(run_foreground(config_path))


def run_foreground(config_path: str | None) -> int:
    path = resolve_config_path(config_path, os.environ)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"syncd: config error in {path}: {len(exc.errors)} problem(s)", err=True)
        return EX_CONFIG
    if cfg.daemon.probe_on_start:
        report = run_probe(cfg, os.environ)
        for line in probe_lines(report):
            click.echo(line, err=True)
        if report.problems:
            for problem in report.problems:
                click.echo(str(problem), err=True)
            click.echo(
                f"syncd: config error in {path}: {len(report.problems)} problem(s) found by "
                "the command probe (daemon.probe_on_start)",
                err=True,
            )
            return EX_CONFIG
    try:
        from syncd.daemon.app import run_daemon  # heavy (SQLite, sockets): only when running

        return run_daemon(cfg)
    except StoreUnusable as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        click.echo(f"syncd: database {exc.path}: {exc.problem}{hint}", err=True)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line for the operator, the trace only on request
        if os.environ.get("SYNCD_DEBUG"):
            traceback.print_exc()
        click.echo(f"syncd: internal error: {type(exc).__name__}: {exc}", err=True)
        return EX_SOFTWARE


@main.command(epilog="Example: syncd check --config etc/syncd.toml --strict --probe")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--strict", is_flag=True, help="Count warnings as errors.")
@click.option(
    "--probe",
    is_flag=True,
    help="Also run `<prefix> help --commands` once per manage.py prefix and report every "
    "route whose command it does not list.",
)
@click.pass_context
def check(
    ctx: click.Context, config_path: str | None, as_json: bool, strict: bool, probe: bool
) -> None:
    """Validate a config offline: exit 0 valid, 1 invalid (one problem per line)."""
    path = resolve_config_path(config_path or ctx.obj.get("config"), os.environ)
    result = run_check(path, strict=strict, probe=probe)
    if as_json:
        doc = render_json(result, datetime.now(timezone.utc))
        click.echo(json.dumps(doc, indent=2))
    else:
        for line in render_text(result):
            click.echo(line)
    ctx.exit(0 if result.valid else 1)


@main.group(
    "import",
    epilog="Example: syncd import celery-beat beat.json --config /etc/syncd/syncd.toml",
)
def import_group() -> None:
    """Turn another scheduler's periodic jobs into syncd schedules."""


@import_group.command(
    "celery-beat",
    epilog="Example: python manage.py dumpdata django_celery_beat | "
    "syncd import celery-beat - --map legacy.tasks.crm_all=crm.all > schedules.toml",
)
@click.argument("dump", metavar="[FILE|-]", type=click.File("rb"), default="-")
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="TASK=SOURCE.SYNC_TYPE",
    help="Run this Celery task name as this route (repeatable). Default: the route whose "
    "command is the task name's last part.",
)
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.pass_context
def import_celery_beat(
    ctx: click.Context, dump: Any, maps: tuple[str, ...], config_path: str | None
) -> None:
    """Convert `manage.py dumpdata django_celery_beat` JSON into [[schedules]] TOML.

    The TOML goes to stdout, the report of what was not converted (and why) to stderr.
    Exit 0 all converted, 1 some not converted, 2 unusable input, map or config."""
    from syncd.bridge.celery_import import DumpError, MapError
    from syncd.bridge.celery_import import import_celery_beat as convert

    path = resolve_config_path(config_path or ctx.obj.get("config"), os.environ)
    try:
        cfg = load_config(path)
        config_text = path.read_text(encoding="utf-8")
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise click.UsageError(
            f"config {path} cannot be used: fix it first (syncd check)"
        ) from None
    try:
        text = dump.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.UsageError(f"{dump.name}: not UTF-8 text (byte {exc.start})") from None
    try:
        result = convert(text, cfg, config_text, maps, datetime.now(timezone.utc))
    except MapError as exc:
        raise click.BadParameter(str(exc), param_hint="--map") from None
    except DumpError as exc:
        raise click.UsageError(f"{dump.name}: {exc}") from None
    click.echo(result.toml, nl=False)
    for line in result.report:
        click.echo(line, err=True)
    if result.problems:
        click.echo(f"pasted into {path}, this output would not pass syncd check:", err=True)
        for line in result.problems:
            click.echo(f"  {line}", err=True)
    ctx.exit(result.exit_code)


@main.command(epilog="Example: syncd demo")
@click.option("--duration", type=float, default=None, help="stop after this many seconds")
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="run the simulated syncs N times faster",
)
@click.pass_context
def demo(ctx: click.Context, duration: float | None, speed: float) -> None:
    """Run a throw-away daemon on a demo catalog with a live status view (Ctrl-C ends it)."""
    from syncd.demo import run_demo  # needs the client side only when asked for

    ctx.exit(run_demo(duration=duration, speed=speed))


@main.command(epilog="Example: syncd web --config /etc/syncd/syncd.toml --listen 127.0.0.1:8790")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--listen", metavar="HOST:PORT", help="override [web] listen (port 0: any free)")
@click.option("--socket", "socket_path", metavar="PATH", help="the daemon's control socket")
@click.pass_context
def web(
    ctx: click.Context, config_path: str | None, listen: str | None, socket_path: str | None
) -> None:
    """Serve the dashboard, /metrics and /healthz over HTTP (talks to the daemon's socket)."""
    from syncd.web.app import run_web  # the web stack: only when asked for

    ctx.exit(run_web(config_path or ctx.obj.get("config"), listen, socket_path))


if __name__ == "__main__":
    main()
