"""The `syncctl top` screen as pure functions: a `Model` of what the dashboard knows,
updated by one method per daemon answer or event, and `screen()`, which lays it out as
styled lines for a given terminal size. Nothing here touches curses or the socket, so the
layout is unit tested; top.py is the loop around it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from syncd.core.models import FINAL_NAMES
from syncd.ctl import render

FAILURES_KEPT = 5
KEY_HELP = "arrows select  c cancel  +/- priority  p pause/resume  q quit"

Seg = tuple[str, str]  # (text, style); styles: "" plain, bold, dim, sel, ok, warn, bad
Line = list[Seg]


@dataclass
class Model:
    """What the dashboard knows; every update is a method, every read is `screen`."""

    version: str = "?"
    uptime: float | None = None
    uptime_at: float = 0.0  # monotonic time `uptime` was read
    max_workers: int = 0
    active_count: int = 0
    queued_count: int = 0
    paused: bool = False
    held: list[dict[str, Any]] = field(default_factory=list)  # sources not ok, from `status`
    active: dict[int, dict[str, Any]] = field(default_factory=dict)
    queue: list[dict[str, Any]] = field(default_factory=list)
    failures: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=FAILURES_KEPT))
    fires: list[dict[str, Any]] = field(default_factory=list)
    connected: bool = False
    problem: str = "connecting..."
    message: str = ""
    message_until: float = 0.0  # monotonic time the message is cleared
    selected: int | None = None  # a task id: stable while rows move
    selected_index: int = 0  # where it was: a vanished task's neighbour takes over
    prompt: tuple[str, int] | None = None  # ("cancel", id) while waiting for y/n

    # -- derived --------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """available / busy / overloaded from counts alone, recomputed on every event."""
        if self.active_count < self.max_workers:
            return "available"
        return "overloaded" if self.queued_count else "busy"

    def rows(self) -> list[dict[str, Any]]:
        """The selectable rows: active tasks by id, then the queue in dispatch order."""
        return [self.active[i] for i in sorted(self.active)] + list(self.queue)

    def selected_row(self) -> dict[str, Any] | None:
        rows = self.rows()
        for index, row in enumerate(rows):
            if row["id"] == self.selected:
                self.selected_index = index
                return row
        if not rows:
            return None
        self.selected_index = min(self.selected_index, len(rows) - 1)
        row = rows[self.selected_index]
        self.selected = row["id"]
        return row

    def move(self, step: int) -> None:
        rows = self.rows()
        if not rows:
            self.selected = None
            return
        ids = [r["id"] for r in rows]
        current = self.selected_row()
        index = ids.index(current["id"]) if current is not None else 0
        self.selected_index = max(0, min(len(ids) - 1, index + step))
        self.selected = ids[self.selected_index]

    # -- updates --------------------------------------------------------------------------
    def apply_ping(self, r: dict[str, Any], mono: float) -> None:
        self.version = str(r.get("version", "?"))
        self.uptime = float(r.get("uptime_seconds") or 0.0)
        self.uptime_at = mono

    def apply_status(self, r: dict[str, Any]) -> bool:
        """A `status` reply; True when its counts disagree with ours (refetch the queue)."""
        differs = (r.get("active"), r.get("queued")) != (self.active_count, self.queued_count)
        self.max_workers = int(r.get("max_workers") or 0)
        self.active_count = int(r.get("active") or 0)
        self.queued_count = int(r.get("queued") or 0)
        self.paused = bool(r.get("paused"))
        self.held = list(r.get("sources") or [])
        if "active_tasks" in r:
            fresh = {t["id"]: t for t in r["active_tasks"]}
            self.active = fresh
        return differs

    def apply_queue(self, r: dict[str, Any]) -> None:
        self.queue = [t for t in r.get("tasks", []) if t.get("status") == "queued"]
        self.queued_count = int(r.get("total") or len(self.queue))

    def apply_failures(self, r: dict[str, Any]) -> None:
        self.failures.clear()
        self.failures.extend(r.get("tasks", [])[:FAILURES_KEPT])

    def apply_schedules(self, r: dict[str, Any]) -> None:
        rows = [s for s in r.get("schedules", []) if s.get("next_fire")]
        self.fires = sorted(rows, key=lambda s: str(s["next_fire"]))

    def apply_event(self, event: dict[str, Any]) -> set[str]:
        """One watch event; returns what must be fetched because of it ("queue", "status")."""
        kind = event.get("event")
        if kind == "pool":
            counts = event.get("status") or {}
            self.active_count = int(counts.get("running", self.active_count))
            self.queued_count = int(counts.get("queued", self.queued_count))
            return {"queue", "status"}  # pause/resume and submit_many only send this
        if kind == "source":  # a source paused, throttled, opened...: its line in the header
            return {"status"}
        if kind == "config":
            return {"status", "fires"}
        if kind != "task" or not isinstance(event.get("task"), dict):
            return {"queue"} if kind == "task" else set()
        task: dict[str, Any] = event["task"]
        status = task.get("status")
        task_id = task["id"]
        if status == "running":
            old = self.active.get(task_id, {})
            self.active[task_id] = {**old, **task}
            self.queue = [t for t in self.queue if t["id"] != task_id]
        elif status in FINAL_NAMES:
            self.active.pop(task_id, None)
            self.queue = [t for t in self.queue if t["id"] != task_id]
            if status == "failed":
                self.failures.appendleft(task)
        return {"queue"}


# -- the screen, as text ------------------------------------------------------------------------


def fit(text: str, width: int) -> str:
    """Exactly `width` characters: clipped with a `~` marker, or padded."""
    if width <= 0:
        return ""
    if len(text) > width:
        return text[: width - 1] + "~" if width > 1 else text[:width]
    return text.ljust(width)


def columns(values: list[Any], widths: list[int], total: int) -> str:
    """Cells in fixed widths; the last cell takes what is left of `total`."""
    cells = []
    used = 0
    for i, value in enumerate(values):
        text = render.cell(value)
        w = widths[i] if i < len(widths) else max(0, total - used)
        cells.append(fit(text, w))
        used += w + 1
    return fit(" ".join(cells), total)


def bar(fraction: float, width: int) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


STATE_STYLE = {"available": "ok", "busy": "warn", "overloaded": "bad"}
ACTIVE_W = [7, 24, 8, 5, 9]
QUEUE_W = [7, 24, 3, 8]
FAIL_W = [7, 24, 9]
FIRE_W = [20, 24]


def header(m: Model, width: int, mono: float, now: datetime) -> list[Line]:
    uptime = None if m.uptime is None else m.uptime + (mono - m.uptime_at)
    first = (
        f"syncd {m.version}  up {render.duration(uptime)}  max workers {m.max_workers}"
        f"  {now.astimezone().strftime('%H:%M:%S %Z')}"
    )
    util = m.active_count / m.max_workers if m.max_workers else 0.0
    left = f"{bar(util, 20)} {util * 100:3.0f}%  "
    state = m.state.upper()
    counts = f"  active {m.active_count}/{m.max_workers}  queued {m.queued_count}"
    second: Line = [(left, ""), (state, STATE_STYLE[m.state]), (counts, "")]
    if m.paused:
        second.append(("  PAUSED", "bad"))
    for s in m.held:  # sources held back: `crm OPEN`
        second.append((f"  {s['name']} {str(s['state']).upper()}", "warn"))
    used = sum(len(t) for t, _ in second)
    second.append((" " * max(0, width - used), ""))
    if not m.connected:
        third: Line = [(fit(f"! {m.problem} (last known state below)", width), "bad")]
    else:
        third = [(fit(m.message if mono < m.message_until else "", width), "dim")]
    return [[(fit(first, width), "bold")], clip_line(second, width), third]


def clip_line(line: Line, width: int) -> Line:
    out: Line = []
    left = width
    for text, style in line:
        if left <= 0:
            break
        out.append((text[:left], style))
        left -= len(text[:left])
    return out


def section(title: str, head: str, rows: list[Line], room: int, width: int) -> list[Line]:
    """A title line, a column header and as many rows as fit in `room` lines."""
    if room < 2:
        return []
    out: list[Line] = [[(fit(title, width), "bold")], [(fit(head, width), "dim")]]
    space = room - 2
    if len(rows) > space:
        shown = rows[: max(0, space - 1)]
        more = len(rows) - len(shown)
        return out + shown + [[(fit(f"  ... and {more} more", width), "dim")]]
    return out + rows


def task_rows(m: Model, width: int, now: datetime) -> tuple[list[Line], list[Line]]:
    chosen = m.selected_row()
    sel = chosen["id"] if chosen is not None else None

    def line(task_id: int, text: str) -> Line:
        mark = ">" if task_id == sel else " "
        return [(fit(mark + text, width), "sel" if task_id == sel else "")]

    active = []
    for t in (m.active[i] for i in sorted(m.active)):
        # From started_at, not the elapsed_seconds of the last status tick: it keeps counting.
        took = render.since(t.get("started_at"), now)
        took = render.running_for(t, now) if took is None else took
        values = [
            t["id"],
            f"{t.get('source')}.{t.get('route')}",
            render.duration(took),
            render.percent(t.get("cpu_percent")),
            render.mib(t.get("rss_bytes")),
            t.get("progress") or "",
        ]
        active.append(line(t["id"], columns(values, ACTIVE_W, width - 1)))
    queued = []
    for t in m.queue:
        values = [
            t["id"],
            f"{t.get('source')}.{t.get('route')}",
            t.get("priority"),
            render.duration(render.since(t.get("submitted_at"), now)),
            t.get("reason") or "",
        ]
        queued.append(line(t["id"], columns(values, QUEUE_W, width - 1)))
    return active, queued


def other_rows(m: Model, width: int) -> tuple[list[Line], list[Line]]:
    fails = []
    for t in m.failures:
        finished = render.parse_time(t.get("finished_at"))
        values = [
            t["id"],
            f"{t.get('source')}.{t.get('route')}",
            finished.astimezone().strftime("%H:%M:%S") if finished else "-",
            t.get("error") or "",
        ]
        fails.append([(" " + columns(values, FAIL_W, width - 1), "")])
    fires = []
    for s in m.fires:
        values = [s.get("name"), render.when(s.get("next_fire")), f"{s['source']}.{s['sync_type']}"]
        fires.append([(" " + columns(values, FIRE_W, width - 1), "")])
    return fails, fires


def screen(m: Model, width: int, height: int, mono: float, now: datetime) -> list[Line]:
    """The whole screen, at most `height` lines of at most `width` characters."""
    lines = header(m, width, mono, now)
    active, queued = task_rows(m, width, now)
    fails, fires = other_rows(m, width)
    room = max(0, height - len(lines) - 1)  # the footer takes the last line
    # Fixed shares first (each section shows at least a few rows), the queue takes the rest.
    want_active = 2 + max(1, len(active))
    want_fail = 2 + min(3, max(1, len(fails)))
    want_fire = 2 + min(3, max(1, len(fires)))
    active_room = min(want_active, max(3, room - 3 - want_fail - want_fire))
    rest = room - active_room
    fail_room = min(want_fail, max(0, rest - 3 - want_fire))
    fire_room = min(want_fire, max(0, rest - 3 - fail_room))
    queue_room = max(0, rest - fail_room - fire_room)
    spare = queue_room - (2 + max(1, len(queued)))
    if spare > 0:  # a short queue lends its lines to the failures
        extra = min(spare, 2 + len(fails) - fail_room)
        if extra > 0:
            queue_room, fail_room = queue_room - extra, fail_room + extra
    none: list[Line] = [[(fit("  none", width), "dim")]]
    a_head = " " + columns(["ID", "SYNC", "ELAPSED", "CPU", "RSS", "PROGRESS"], ACTIVE_W, width - 1)
    q_head = " " + columns(["ID", "SYNC", "PRI", "WAITING", "WHY"], QUEUE_W, width - 1)
    f_head = " " + columns(["ID", "SYNC", "FINISHED", "ERROR"], FAIL_W, width - 1)
    s_head = " " + columns(["SCHEDULE", "NEXT FIRE", "SYNC"], FIRE_W, width - 1)
    lines += section(f"ACTIVE ({m.active_count})", a_head, active or none, active_room, width)
    title = f"QUEUE ({m.queued_count}, dispatch order)"
    lines += section(title, q_head, queued or none, queue_room, width)
    lines += section("LAST FAILURES", f_head, fails or none, fail_room, width)
    lines += section("NEXT SCHEDULE FIRES", s_head, fires or none, fire_room, width)
    lines = lines[: max(0, height - 1)]
    while len(lines) < height - 1:
        lines.append([(" " * width, "")])
    lines.append(footer(m, width))
    return lines[:height]


def footer(m: Model, width: int) -> Line:
    if m.prompt is not None:
        action, task_id = m.prompt
        row = next((r for r in m.rows() if r["id"] == task_id), None)
        what = f" ({row['source']}.{row['route']}, {row['status']})" if row else ""
        return [(fit(f"{action} task {task_id}{what}? y/n", width), "bad")]
    return [(fit(KEY_HELP, width), "dim")]
