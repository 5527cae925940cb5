"""The Jinja environment: autoescaping everywhere (a param `<script>` renders as text), and
the few filters the pages share: relative times with the exact UTC time on hover, run
times, sizes."""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from syncd.ctl import render


def ago(text: str | None, now: datetime) -> Markup:
    """`<time>` with "3 m ago" (or "in 5 m") and the exact UTC time as its title."""
    dt = render.parse_time(text)
    if dt is None:
        return Markup('<span class="none">—</span>')
    seconds = (now - dt).total_seconds()
    words = _short(abs(seconds))
    label = "just now" if abs(seconds) < 5 else (f"{words} ago" if seconds > 0 else f"in {words}")
    exact = dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup(f'<time datetime="{escape(text)}" title="{escape(exact)}">{escape(label)}</time>')


def _short(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} m"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} m"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def utc(text: str | None) -> str:
    dt = render.parse_time(text)
    return "—" if dt is None else dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def local(text: str | None) -> str:
    dt = render.parse_time(text)
    return "—" if dt is None else dt.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def params_text(params: dict[str, Any] | None) -> str:
    return " ".join(f"{k}={v}" for k, v in (params or {}).items())


def took(task: dict[str, Any]) -> str:
    """How long a task ran (so far, for a running one with elapsed_seconds)."""
    if task.get("elapsed_seconds") is not None:
        return render.duration(task["elapsed_seconds"])
    start, end = (
        render.parse_time(task.get("started_at")),
        render.parse_time(task.get("finished_at")),
    )
    if start is None or end is None:
        return "—"
    return render.duration((end - start).total_seconds())


def environment() -> Environment:
    folder = resources.files("syncd.web") / "templates"
    env = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = lambda s: "—" if s is None else render.duration(s)
    env.filters["mib"] = lambda n: "—" if n is None else render.mib(n)
    env.filters["pct"] = lambda x: "—" if x is None else render.percent(x)
    env.filters["utc"] = utc
    env.filters["local"] = local
    env.filters["params"] = params_text
    env.filters["took"] = took
    env.globals["ago"] = ago
    return env
