"""syncctl commands on the routing table and the schedules."""

from __future__ import annotations

import click

from syncd.ctl import render
from syncd.ctl.app import PARAM, call, command, common, emit, main, parse_params


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
