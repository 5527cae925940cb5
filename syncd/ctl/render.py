"""Human output of syncctl: pure functions from protocol results to text.

Kept apart from the commands so every format, the operators' monitor block above all,
is unit tested character for character."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

Row = Mapping[str, Any]
TASK_ORDER = [
    *("id", "source", "sync_type", "route", "status", "priority", "trigger", "attempt"),
    *("argv", "params", "submitted_at", "started_at", "finished_at", "last_heartbeat"),
    *("not_before", "pid", "exit_code", "error", "requested_by", "progress"),
    *("elapsed_seconds", "cpu_percent", "rss_bytes"),
]


def duration(seconds: float | None) -> str:
    """`45s`, `2m 15s`, `1h 02m`, `3d 04h`: the old system's running-for format."""
    if seconds is None:
        return "-"
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def mib(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / (1024 * 1024):.1f} MiB"


def percent(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}%"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def when(text: str | None) -> str:
    """A protocol timestamp (UTC) in the operator's local time, to the second, zone named:
    people read their own clock; `--json` keeps the UTC value as stored."""
    dt = parse_time(text)
    return "-" if dt is None else dt.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def since(text: str | None, now: datetime) -> float | None:
    dt = parse_time(text)
    return None if dt is None else (now - dt).total_seconds()


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    body = [[cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [headers, *body]
    ]
    return "\n".join(lines)


def sync_name(task: Row) -> str:
    name = f"{task.get('source')}.{task.get('sync_type')}"
    route = task.get("route")
    return name if route in (None, task.get("sync_type")) else f"{name} (route {route})"


def running_for(task: Row, now: datetime) -> float | None:
    if task.get("elapsed_seconds") is not None:
        return float(task["elapsed_seconds"])
    return since(task.get("started_at"), now)


def monitor_block(status: Row, now: datetime) -> str:
    """The old system's `Worker Pool Status` block, exactly: scripts that read it keep working."""
    lines = [
        f"[{now.strftime('%Y-%m-%d %H:%M:%S')}] Worker Pool Status:",
        f"  Max Workers: {status.get('max_workers')}",
        f"  Active: {status.get('active')} tasks",
        f"  Queued: {status.get('queued')} tasks",
    ]
    held = held_sources(status)
    if held:
        lines += ["", "Sources Held Back:", *(f"  - {line}" for line in held)]
    active = status.get("active_tasks") or []
    if active:
        lines += ["", "Active Tasks:"]
        for t in active:
            lines.append(
                f"  - Task {t['id']}: {t['source']}.{t['sync_type']}"
                f" (running for {duration(running_for(t, now))})"
            )
    queued = status.get("queued_tasks") or []
    if queued:
        lines += ["", "Queued Tasks:"]
        for t in queued:
            lines.append(
                f"  - Task {t['id']}: {t['source']}.{t['sync_type']} (priority: {t['priority']})"
            )
        more = int(status.get("queued") or 0) - len(queued)
        if more > 0:
            lines.append(f"  ... and {more} more")
    return "\n".join(lines)


def status_block(status: Row, now: datetime) -> str:
    state = str(status.get("state"))
    lines = [
        f"State:        {state}{' (paused)' if status.get('paused') else ''}",
        f"Max workers:  {status.get('max_workers')}",
        f"Active:       {status.get('active')}",
        f"Queued:       {status.get('queued')}",
        f"Available:    {status.get('available')}",
        f"Utilization:  {percent(float(status.get('utilization') or 0) * 100)}",
        f"Paused:       {cell(bool(status.get('paused')))}",
    ]
    held = held_sources(status)
    if held:
        lines += ["", "Sources held back:", *(f"  {line}" for line in held)]
    rows: list[tuple[Any, ...]]
    if "active_tasks" in status:
        rows = [
            (
                t["id"],
                sync_name(t),
                duration(running_for(t, now)),
                percent(t.get("cpu_percent")),
                mib(t.get("rss_bytes")),
                t.get("progress"),
            )
            for t in status["active_tasks"]
        ]
        lines += ["", "Active tasks:"]
        headers = ["ID", "SYNC", "ELAPSED", "CPU", "RSS", "PROGRESS"]
        lines.append(indent(table(headers, rows)) if rows else "  none")
    if "queued_tasks" in status:
        rows = [
            (
                t["id"],
                sync_name(t),
                t.get("priority"),
                duration(since(t.get("submitted_at"), now)),
                t.get("trigger"),
            )
            for t in status["queued_tasks"]
        ]
        lines += ["", "Queued tasks:"]
        headers = ["ID", "SYNC", "PRIORITY", "WAITING", "TRIGGER"]
        lines.append(indent(table(headers, rows)) if rows else "  none")
    return "\n".join(lines)


def held_sources(status: Row) -> list[str]:
    """`source crm: open until ... (5 consecutive failures)` per source not ok."""
    out = []
    for s in status.get("sources") or []:
        until = f" until {when(s['until'])}" if s.get("until") else ""
        why = f" ({s['reason']})" if s.get("reason") else ""
        out.append(f"{s['name']}: {s['state']}{until}{why}")
    return out


def source_line(s: Row) -> str:
    until = f" until {when(s['until'])}" if s.get("until") else ""
    why = f" ({s['reason']})" if s.get("reason") else ""
    return f"source {s['name']}: {s['state']}{until}{why}"


def sources_table(r: Row) -> str:
    """`sources`: limits, use of them, and the state with until-when and why."""
    rows = []
    for s in r.get("sources") or []:
        rate = f"{s['starts_in_window']} of {s['rate']}" if s.get("rate") else "-"
        b = s.get("breaker")
        breaker = f"{s['consecutive_failures']}/{b['failures']}" if b else "-"
        rows.append((
            s["name"], s.get("state"), cell(s.get("max_concurrent")), rate, breaker,
            s.get("running"), s.get("queued"), when(s.get("until")) if s.get("until") else "-",
            s.get("reason"), when(s.get("last_success")) if s.get("last_success") else "-",
            when(s.get("last_failure")) if s.get("last_failure") else "-",
        ))  # fmt: skip
    if not rows:
        return "no sources"
    headers = ["SOURCE", "STATE", "MAX", "RATE", "FAILS", "RUNNING", "QUEUED", "UNTIL",
               "WHY", "LAST SUCCESS", "LAST FAILURE"]  # fmt: skip
    return table(headers, rows)


def indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def task_table(tasks: Sequence[Row], now: datetime) -> str:
    """The live view and history: one line per task, newest information last."""
    rows = []
    for t in tasks:
        status = t.get("status")
        if status == "running":
            took = running_for(t, now)
        else:
            start, end = parse_time(t.get("started_at")), parse_time(t.get("finished_at"))
            took = (end - start).total_seconds() if start and end else None
        note = t.get("error") or t.get("progress")
        rows.append(
            (
                t["id"],
                status,
                t.get("priority"),
                sync_name(t),
                t.get("trigger"),
                when(t.get("submitted_at")),
                duration(took) if took is not None else "-",
                t.get("exit_code"),
                note,
            )
        )
    headers = ["ID", "STATUS", "PRI", "SYNC", "TRIGGER", "SUBMITTED", "TOOK", "EXIT", "NOTE"]
    return table(headers, rows)


def task_detail(task: Row) -> str:
    """`show`: every field of the task, one per line, in a stable order."""
    keys = [k for k in TASK_ORDER if k in task] + [k for k in task if k not in TASK_ORDER]
    width = max(len(k) for k in keys) if keys else 0
    lines = []
    for k in keys:
        v = task[k]
        if k == "argv" and isinstance(v, list):
            text = shlex.join(str(a) for a in v)
        elif k.endswith("_at") or k in ("last_heartbeat", "not_before"):
            text = when(v) if v else "-"
        elif k == "rss_bytes":
            text = mib(v)
        else:
            text = cell(v)
        lines.append(f"{k.ljust(width)}  {text}")
    return "\n".join(lines)


def routes_text(result: Row) -> str:
    blocks = []
    for src in result.get("sources", []):
        head = (
            f"{src['name']}  (fallback: {cell(src.get('fallback'))},"
            f" max_concurrent: {cell(src.get('max_concurrent'))})"
        )
        rows = [
            (
                r["sync_type"],
                shlex.join(str(a) for a in r.get("argv", [])),
                r.get("timeout_minutes"),
                r.get("priority"),
                r.get("retries"),
                r.get("allowed_params"),
            )
            for r in src.get("routes", [])
        ]
        headers = ["SYNC TYPE", "ARGV", "TIMEOUT MIN", "PRI", "RETRIES", "PARAMS"]
        blocks.append(head + "\n" + indent(table(headers, rows)))
    return "\n\n".join(blocks) if blocks else "no routes"


def resolve_text(r: Row) -> str:
    rule = r.get("rule")
    why = "exact route" if rule == "exact" else f"{rule}: no route for {r.get('sync_type')!r}"
    lines = [
        f"{r.get('source')}.{r.get('sync_type')} -> route {r.get('route')} ({why})",
        f"  argv:            {shlex.join(str(a) for a in r.get('argv', []))}",
        f"  cwd:             {cell(r.get('cwd'))}",
        f"  timeout:         {cell(r.get('timeout_minutes'))} min",
        f"  priority:        {cell(r.get('priority'))}",
        f"  max_concurrent:  {cell(r.get('max_concurrent'))}",
    ]
    mark = r.get("watermark")
    if mark:  # the argv above is what the next run would get now
        last = mark.get("last_success")
        source = (
            f"last success: task {last['task_id']} started {last['started_at']}"
            if last
            else f"no success yet: watermark_default {mark.get('default')!r}"
        )
        lines.insert(2, f"  argv template:   {shlex.join(str(a) for a in r['argv_template'])}")
        lines.insert(3, f"  watermark:       {source}")
    return "\n".join(lines)


def outcome_text(o: Row | None) -> str:
    if not o:
        return "-"
    task = f" task {o['task_id']}" if o.get("task_id") is not None else ""
    kind = "started" if o.get("kind") == "queued" and o.get("started") else o.get("kind")
    return f"{kind}{task}"


def schedules_table(result: Row) -> str:
    rows = [
        (
            s["name"],
            s.get("cron"),
            s.get("timezone"),
            f"{s.get('source')}.{s.get('sync_type')}",
            s.get("overlap"),
            when(s.get("next_fire")) if s.get("next_fire") else "-",
            when(s.get("last_fire")) if s.get("last_fire") else "-",
            outcome_text(s.get("last_outcome")),
            "paused" if s.get("paused") else cell(s.get("enabled")),
        )
        for s in result.get("schedules", [])
    ]
    headers = ["NAME", "CRON", "TZ", "SYNC", "OVERLAP", "NEXT", "LAST", "OUTCOME", "ENABLED"]
    return table(headers, rows)


def config_table(result: Row) -> str:
    settings = result.get("settings", {})
    rows = [(k, v.get("value"), v.get("origin")) for k, v in settings.items()]
    return table(["SETTING", "VALUE", "ORIGIN"], rows)


def detail_lines(details: Mapping[str, Any] | None) -> list[str]:
    """An error's structured extras, one fact per line (config problems one per line)."""
    out: list[str] = []
    for key, value in (details or {}).items():
        if key == "problems" and isinstance(value, list):
            for p in value:
                if isinstance(p, dict):
                    sev = "warning: " if p.get("severity") == "warning" else ""
                    out.append(f"  {sev}{p.get('path')}: {p.get('message')}")
                else:
                    out.append(f"  {p}")
        else:
            out.append(f"  {key}: {cell(value)}")
    return out


def changes_text(changes: Mapping[str, Any]) -> str:
    parts = []
    for kind in ("added", "removed", "changed"):
        value = changes.get(kind)
        if isinstance(value, list):
            parts.append(f"{kind} {len(value)}" + (f" ({cell(value)})" if value else ""))
        elif value is not None:
            parts.append(f"{kind} {cell(value)}")
    return ", ".join(parts) or "no changes"


def fill(template: str, result: Mapping[str, Any]) -> str:
    """A one-line reply: `{field}` placeholders filled with the result's cells."""

    class Cells(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "-"

    return template.format_map(Cells({k: cell(v) for k, v in result.items()}))


def ping_text(r: Row) -> str:
    return (
        f"syncd {r.get('version')}, pid {r.get('pid')}, up {duration(r.get('uptime_seconds'))}"
        f" (since {when(r.get('started_at'))})"
    )


def task_line(t: Row) -> str:
    """One state of a followed task: `task 812: failed (exit 2): boom`."""
    code = f" (exit {t['exit_code']})" if t.get("exit_code") is not None else ""
    error = f": {t['error']}" if t.get("error") else ""
    return f"task {t['id']}: {t['status']}{code}{error}"


def list_text(r: Row, now: datetime) -> str:
    tasks = r.get("tasks") or []
    more = int(r.get("total") or len(tasks)) - len(tasks)
    text = task_table(tasks, now) if tasks else "no tasks"
    return text + (f"\n({more} more not shown)" if more > 0 else "")


def cancel_text(r: Row) -> str:
    lines = [f"cancelled task {i}" for i in r.get("cancelled", [])]
    lines += [f"task {s['id']} already {s['status']}, not cancelled" for s in r.get("skipped", [])]
    return "\n".join(lines)


def reload_text(r: Row, dry_run: bool) -> str:
    head = "config reloaded" if r.get("applied") and not dry_run else "would change"
    text = f"{head}: {changes_text(r.get('changes') or {})}"
    if r.get("affected_queued"):
        text += f"\nqueued tasks affected: {cell(r['affected_queued'])}"
    if r.get("restart_required"):
        keys = ", ".join(r["restart_required"])
        text += f"\nnot applied, needs a restart: {keys}"
    return text
