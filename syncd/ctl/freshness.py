"""`syncctl freshness`: how long ago each route last completed, against its target; with
`--check`, a monitoring probe (exit 1 and the stale routes when any is stale)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click

from syncd.ctl import render
from syncd.ctl.app import call, command, main, want_json

Row = Mapping[str, Any]


def state(row: Row) -> str:
    if row["target_minutes"] is None:
        return "-"
    if not row["stale"]:
        return "fresh"
    return "STALE (never completed)" if row["last_success"] is None else "STALE"


def freshness_table(rows: Sequence[Row]) -> str:
    if not rows:
        return "no route has a freshness_minutes target"
    return render.table(
        ["ROUTE", "TARGET", "LAST SUCCESS (started)", "AGE", "STATE"],
        [
            [
                f"{r['source']}.{r['sync_type']}",
                None if r["target_minutes"] is None else render.duration(r["target_minutes"] * 60),
                render.when((r["last_success"] or {}).get("started_at")),
                render.duration(r["age_seconds"]),
                state(r),
            ]
            for r in rows
        ],
    )


def stale_line(row: Row) -> str:
    target = render.duration(row["target_minutes"] * 60)
    name = f"{row['source']}.{row['sync_type']}"
    if row["last_success"] is None:
        return f"STALE {name}: never completed (target {target})"
    ago = render.duration(row["age_seconds"])
    return f"STALE {name}: last success started {ago} ago (target {target})"


@command(main, "freshness", "syncctl freshness --check")
@click.option("--check", is_flag=True, help="exit 1 and list the stale routes if any is stale")
@click.option("--all", "all_routes", is_flag=True, help="also routes without a target")
@click.pass_context
def freshness(ctx: click.Context, check: bool, all_routes: bool) -> None:
    """Each route's last success against its freshness_minutes target."""
    result = call("freshness", all=all_routes or None)
    rows = result["routes"]
    stale = [r for r in rows if r["stale"]]
    if want_json():
        click.echo(json.dumps(result, indent=2))
    elif not check:
        click.echo(freshness_table(rows))
    elif stale:
        click.echo("\n".join(stale_line(r) for r in stale))
    else:
        targets = sum(1 for r in rows if r["target_minutes"] is not None)
        click.echo(f"fresh: all {targets} route(s) with a target")
    if check and stale:
        ctx.exit(1)
