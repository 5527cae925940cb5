"""`syncctl top`: a full-screen dashboard of the pool, fed by the daemon's `watch` stream.

State changes come from events: a task event moves the task between the active list, the
queue and the failures at once, a pool event updates the counts. What events do not carry
is fetched when an event says it changed: the queue in dispatch order with each task's
one-word reason (`list` with `explain`), the paused flag and worker limit (`status`).
Once per refresh tick (<= 2 s) `status verbose` brings CPU%, RSS and progress lines; a
count it reports that differs from ours (e.g. after `clear-queue`, which sends no event)
refreshes the queue too.

The screen is built by pure functions (top_screen: `screen` from a `Model`), so layout is
unit tested; `run_top` is the thin curses loop around them. The terminal is restored on every exit
(curses.wrapper), and a daemon that goes away is shown as such and reconnected to."""

from __future__ import annotations

import contextlib
import curses
import os
import queue
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from syncd.ctl import render
from syncd.ctl.client import Client, DaemonError, DaemonUnreachable
from syncd.ctl.top.screen import FAILURES_KEPT, Line, Model, screen

QUEUE_ROWS = 100
MIN_FETCH_GAP = 0.25  # event-triggered refetches are coalesced to at most 4 a second
FIRES_REFRESH = 30.0
RECONNECT_PAUSE = 1.0
MESSAGE_SECONDS = 5.0


# -- talking to the daemon ----------------------------------------------------------------------


class Watcher(threading.Thread):
    """Reads the watch stream into a queue; reconnects after the daemon goes away.

    Puts ("connected", None) once subscribed, ("event", e) per event and
    ("lost", message) when the stream ends or cannot be opened."""

    def __init__(self, path: Path, out: queue.Queue[tuple[str, Any]]):
        super().__init__(name="syncctl-top-watch", daemon=True)
        self.path = path
        self.out = out
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with Client(self.path, connect_timeout=2.0, timeout=None) as c:
                    events = c.open_stream("watch", {}, idle=0.5)
                    self.out.put(("connected", None))
                    for event in events:
                        if self.stopping.is_set():
                            return
                        if event is not None:
                            self.out.put(("event", event))
                self.out.put(("lost", "the daemon ended the event stream"))
            except (DaemonUnreachable, DaemonError, OSError) as exc:
                self.out.put(("lost", str(exc)))
            self.stopping.wait(RECONNECT_PAUSE)


class Dashboard:
    """The loop's state: the model, what is due to be fetched, and the one request client."""

    def __init__(self, path: Path, origin: str | None, interval: float):
        self.path = path
        self.origin = origin
        self.interval = interval
        self.model = Model()
        self.client = Client(path, connect_timeout=2.0, timeout=5.0, origin=origin)
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.watcher = Watcher(path, self.inbox)
        self.dirty: set[str] = set()
        self.last_fetch = 0.0
        self.next_tick = 0.0
        self.next_fires = 0.0
        self.retry_at = 0.0

    def say(self, text: str) -> None:
        """A one-line message under the header, shown for MESSAGE_SECONDS."""
        self.model.message = text
        self.model.message_until = time.monotonic() + MESSAGE_SECONDS

    def call(self, op: str, **args: Any) -> Any:
        return self.client.call(op, **args)

    def lost(self, why: str, *, retry: bool = True) -> None:
        """The daemon did not answer. retry: refetch everything in RECONNECT_PAUSE (a failed
        request); the watcher's own loss waits for it to subscribe again instead."""
        self.model.connected = False
        self.model.problem = f"reconnecting: {why}"
        self.client.close()
        if retry:
            self.dirty.add("all")
            self.retry_at = time.monotonic() + RECONNECT_PAUSE
        else:
            self.dirty.discard("all")

    def full_refresh(self) -> None:
        m = self.model
        mono = time.monotonic()
        m.apply_ping(self.call("ping"), mono)
        m.apply_status(self.call("status", verbose=True))
        m.apply_queue(self.call("list", status=["queued"], limit=QUEUE_ROWS, explain=True))
        m.apply_failures(self.call("history", status=["failed"], limit=FAILURES_KEPT))
        m.apply_schedules(self.call("schedules"))
        m.connected, m.problem = True, ""
        self.dirty.clear()
        self.next_tick = mono + self.interval
        self.next_fires = mono + FIRES_REFRESH

    def drain(self) -> None:
        """Apply every event waiting; connection changes trigger a full refresh."""
        while True:
            try:
                kind, value = self.inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "connected":
                self.dirty.add("all")
            elif kind == "lost":
                self.lost(str(value), retry=False)
            elif self.model.connected:
                self.dirty |= self.model.apply_event(value)

    def fetch_due(self, mono: float) -> None:
        m = self.model
        if "all" in self.dirty:
            if mono >= self.retry_at:
                self.full_refresh()
            return
        if not m.connected:
            return
        if mono >= self.next_tick:
            self.next_tick = mono + self.interval
            m.apply_ping(self.call("ping"), mono)
            if m.apply_status(self.call("status", verbose=True)):
                self.dirty.add("queue")
            self.dirty.discard("status")
        first_fire = render.parse_time(m.fires[0]["next_fire"]) if m.fires else None
        if mono >= self.next_fires or (first_fire and first_fire <= datetime.now(timezone.utc)):
            self.dirty.add("fires")
        if not self.dirty or mono - self.last_fetch < MIN_FETCH_GAP:
            return
        self.last_fetch = mono
        if "status" in self.dirty:
            m.apply_status(self.call("status"))
        if "queue" in self.dirty:
            m.apply_queue(self.call("list", status=["queued"], limit=QUEUE_ROWS, explain=True))
        if "fires" in self.dirty:
            m.apply_schedules(self.call("schedules"))
            self.next_fires = mono + FIRES_REFRESH
        self.dirty.clear()

    def key(self, ch: int) -> bool:
        """One key press; False to quit."""
        m = self.model
        if m.prompt is not None:
            action, task_id = m.prompt
            m.prompt = None
            if ch in (ord("y"), ord("Y")):
                r = self.call("cancel", ids=[task_id])
                self.say(render.cancel_text(r) or f"task {task_id} not cancelled")
                self.dirty.add("queue")
            else:
                self.say(f"{action} of task {task_id} aborted")
            return True
        if ch in (ord("q"), ord("Q")):
            return False
        if ch in (curses.KEY_UP, ord("k")):
            m.move(-1)
        elif ch in (curses.KEY_DOWN, ord("j")):
            m.move(1)
        elif ch == ord("c"):
            row = m.selected_row()
            if row is None:
                self.say("no task selected")
            else:
                m.selected = row["id"]
                m.prompt = ("cancel", row["id"])
        elif ch in (ord("+"), ord("-")):
            self.reprioritize(-1 if ch == ord("+") else 1)
        elif ch == ord("p"):
            r = self.call("resume" if m.paused else "pause")
            m.paused = bool(r.get("paused"))
            self.say("dispatching paused" if m.paused else "dispatching resumed")
        return True

    def reprioritize(self, step: int) -> None:
        """+ makes the selected queued task more urgent (lower number), - less urgent."""
        m = self.model
        row = m.selected_row()
        if row is None or row.get("status") != "queued":
            self.say("select a queued task to change its priority")
            return
        new = max(0, min(9, int(row.get("priority") or 0) + step))
        r = self.call("set_priority", id=row["id"], priority=new)
        m.selected = row["id"]
        self.say(f"task {row['id']}: priority {r['task']['priority']}")
        self.dirty.add("queue")  # set_priority sends no event: fetch the new order now


# -- curses -------------------------------------------------------------------------------------


def _styles(color: bool) -> dict[str, int]:
    styles = {
        "": curses.A_NORMAL,
        "bold": curses.A_BOLD,
        "dim": curses.A_DIM,
        "sel": curses.A_REVERSE,
        "ok": curses.A_BOLD,
        "warn": curses.A_BOLD,
        "bad": curses.A_BOLD,
    }
    if color and curses.has_colors():
        try:
            curses.start_color()
            curses.use_default_colors()
            background = -1
        except curses.error:
            background = curses.COLOR_BLACK
        for n, (name, fg) in enumerate(
            [("ok", curses.COLOR_GREEN), ("warn", curses.COLOR_YELLOW), ("bad", curses.COLOR_RED)],
            start=1,
        ):
            curses.init_pair(n, fg, background)
            styles[name] = curses.color_pair(n) | curses.A_BOLD
    return styles


def draw(win: Any, lines: list[Line], styles: dict[str, int]) -> None:
    height, width = win.getmaxyx()
    win.erase()
    for y, line in enumerate(lines[:height]):
        x = 0
        for text, style in line:
            # The bottom-right cell cannot be written without scrolling: stop one short.
            room = width - x - (1 if y == height - 1 else 0)
            if room <= 0:
                break
            chunk = text[:room]
            with contextlib.suppress(curses.error):
                win.addstr(y, x, chunk, styles.get(style, curses.A_NORMAL))
            x += len(chunk)
    win.refresh()


def loop(win: Any, dash: Dashboard, color: bool) -> int:
    curses.curs_set(0)
    win.keypad(True)
    win.timeout(100)
    styles = _styles(color)
    dash.watcher.start()
    while True:
        dash.drain()
        try:
            dash.fetch_due(time.monotonic())
        except (DaemonUnreachable, OSError) as exc:
            dash.lost(str(exc))
        except DaemonError as exc:
            dash.say(f"error: {exc.code}: {exc.message}")
        height, width = win.getmaxyx()
        now = datetime.now(timezone.utc)
        draw(win, screen(dash.model, width, height, time.monotonic(), now), styles)
        ch = win.getch()
        if ch == -1:
            continue
        if ch == curses.KEY_RESIZE:
            curses.update_lines_cols()
            continue
        try:
            if not dash.key(ch):
                return 0
        except (DaemonUnreachable, OSError) as exc:
            dash.lost(str(exc))
        except DaemonError as exc:
            dash.say(f"error: {exc.code}: {exc.message}")


def run_top(path: Path, origin: str | None, *, color: bool, interval: float = 2.0) -> int:
    """Run the dashboard until `q` (0) or Ctrl-C (130); the terminal is always restored."""
    dash = Dashboard(path, origin, interval)
    # The terminal's real size, always: with LINES/COLUMNS in the environment (some shells
    # and tools export them) ncurses keeps that size and never follows a resize, and
    # use_env(False) only swaps them for terminfo's fixed size.
    os.environ.pop("LINES", None)
    os.environ.pop("COLUMNS", None)
    try:
        code: int = curses.wrapper(loop, dash, color)
        return code
    except KeyboardInterrupt:
        return 130
    finally:
        dash.watcher.stopping.set()
        dash.client.close()
