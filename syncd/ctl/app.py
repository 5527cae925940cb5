"""`syncctl`'s plumbing: the click group, the shared options, the client, rendering and the
exit codes every command module uses.

Each command sends one op and renders its result; `--json` prints the result untouched.
Exit codes: 0 ok, 1 the daemon refused, 2 usage, 3 daemon unreachable, 130 Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import click

from syncd import __version__
from syncd.ctl import render
from syncd.ctl.client import Client, ConfigUnreadable, DaemonError, DaemonUnreachable, locate_socket

F = TypeVar("F", bound=Callable[..., Any])
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Ops whose work grows with the store: clear_queue of 1,000,000 queued tasks takes over a
# minute, so a request timeout would report a failure while the daemon goes on and succeeds.
# They wait until the reply; a daemon that dies closes the connection, which ends the wait.
LONG_OPS = frozenset({"clear_queue", "reset_state", "prune"})


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
    """One request; args left as None are not sent, so the daemon's defaults apply. An op
    in LONG_OPS has no reply timeout (the others keep the client's)."""
    c = shared_client()
    sent = {k: v for k, v in args.items() if v is not None}
    return c.request(op, sent, None if op in LONG_OPS else c.timeout)


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
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*", text.lower())
    try:
        return _utc(_since(text, m, now))
    except OverflowError:  # 99999999999d, or an offset that moves year 1 before year 1
        raise click.BadParameter(f"{text!r}: out of range", param_hint="--since") from None


def _since(text: str, m: re.Match[str] | None, now: datetime) -> datetime:
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
    return dt


def _utc(dt: datetime) -> str:
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


ID = click.argument("task_id", metavar="ID", type=int)
PARAM = click.option("--param", "params", multiple=True, metavar="K=V", help="bare K = flag")
