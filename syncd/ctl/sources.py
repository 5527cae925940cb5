"""syncctl commands on the sources' protection: the table of sources, and pause, resume and
reset of one source."""

from __future__ import annotations

import re
from typing import Any

import click

from syncd.ctl import render
from syncd.ctl.app import call, command, common, emit, main

DURATION_RE = re.compile(r"(?:([0-9]+(?:\.[0-9]+)?)([smhd]))")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `2h`, `1d`, `1h30m`; a bare number is minutes."""
    raw = text.strip().lower()
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", raw):
        seconds = float(raw) * 60
    elif raw and DURATION_RE.sub("", raw) == "":
        seconds = sum(float(n) * UNIT_SECONDS[u] for n, u in DURATION_RE.findall(raw))
    else:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 90s, 30m, 2h, 1h30m)")
    if seconds <= 0:
        raise click.BadParameter(f"{text!r} must be longer than zero")
    return seconds


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    return None if value is None else parse_duration(value)


@command(main, "sources", "syncctl sources --json")
def sources() -> None:
    """Each source: limits, use, and state (ok, paused, throttled, open, half_open)."""
    emit(call("sources"), render.sources_table)


@main.group("source", epilog="Example: syncctl source pause crm --for 30m")
@common
def source() -> None:
    """Pause, resume or reset one source."""


def _done(r: dict[str, Any]) -> str:
    return render.source_line(r["source"])


@command(source, "pause", "syncctl source pause crm --for 30m")
@click.argument("source_name", metavar="NAME")
@click.option(
    "--for",
    "for_",
    metavar="DURATION",
    callback=_duration,
    help="how long (90s, 30m, 2h); default: until resumed",
)
def source_pause(source_name: str, for_: float | None) -> None:
    """Hold back every task of the source (running ones go on)."""
    emit(call("source_pause", name=source_name, seconds=for_), _done)


@command(source, "resume", "syncctl source resume crm")
@click.argument("source_name", metavar="NAME")
def source_resume(source_name: str) -> None:
    """End the source's pause."""
    emit(call("source_resume", name=source_name), _done)


@command(source, "reset", "syncctl source reset crm")
@click.argument("source_name", metavar="NAME")
def source_reset(source_name: str) -> None:
    """Close the source's breaker and clear its throttle."""
    emit(call("source_reset", name=source_name), _done)
