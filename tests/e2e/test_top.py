"""`syncctl top`: the screen model (pure) and the real dashboard in a real terminal (tmux)
against a real daemon: counts, event-driven updates, cancel with confirmation, priority,
pause, the daemon going away and coming back, and a clean exit."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from syncd.ctl.top import screen as top_screen
from tests.helpers.daemon import (
    DaemonProc,
    syncctl_script,
    wait_for,
)
from tests.helpers.rows import task

NOW = datetime(2025, 9, 29, 15, 30, 45, tzinfo=timezone.utc)


# -- the model and the screen, without a terminal ----------------------------------------------


def model(active: int = 2, queued: int = 3, max_workers: int = 2) -> top_screen.Model:
    m = top_screen.Model(version="0.1.0", uptime=3725.0, max_workers=max_workers, connected=True)
    for i in range(1, active + 1):
        m.active[i] = task(i, "crm", f"r{i}", status="running", started_at="2025-09-29T15:28:45Z")
        m.active[i].update(cpu_percent=12.0, rss_bytes=50 * 1024 * 1024, progress=f"page {i}")
    m.queue = [
        dict(task(100 + i, "crm", f"q{i}", priority=i % 10), reason="pool_full")
        for i in range(queued)
    ]
    m.active_count, m.queued_count = active, queued
    return m


def text(lines: list[top_screen.Line]) -> list[str]:
    return ["".join(t for t, _ in line) for line in lines]


def test_screen_fits_80x24_and_shows_every_part() -> None:
    m = model()
    m.failures.append(
        task(7, "crm", "r7", status="failed", finished_at="2025-09-29T15:20:00Z", error="boom")
    )
    m.fires = [
        {
            "name": "crm-nightly",
            "next_fire": "2025-09-30T02:00:00Z",
            "source": "crm",
            "sync_type": "all",
        }
    ]
    lines = top_screen.screen(m, 80, 24, 0.0, NOW)
    rows = text(lines)
    assert len(rows) == 24 and all(len(r) <= 80 for r in rows)
    assert rows[0].startswith("syncd 0.1.0  up 1h 02m  max workers 2")
    assert "OVERLOADED  active 2/2  queued 3" in rows[1]
    assert "[####################] 100%" in rows[1]
    assert any("crm.r1" in r and "2m 00s" in r and "12%" in r and "page 1" in r for r in rows)
    assert any(
        r.split()[:2] == ["100", "crm.q0"] and r.rstrip().endswith("pool_full") for r in rows
    )
    assert any("crm.r7" in r and "15:20:00" in r and "boom" in r for r in rows)
    assert any("crm-nightly" in r and "2025-09-30 02:00:00 UTC" in r for r in rows)
    assert rows[-1].startswith("arrows select  c cancel")
    state = [seg for seg in lines[1] if seg[0] == "OVERLOADED"]
    assert state == [("OVERLOADED", "bad")]  # red when colour is on


@pytest.mark.parametrize(
    ("active", "queued", "state", "style"),
    [(1, 0, "AVAILABLE", "ok"), (2, 0, "BUSY", "warn"), (2, 4, "OVERLOADED", "bad")],
)
def test_state_indicator(active: int, queued: int, state: str, style: str) -> None:
    lines = top_screen.screen(model(active, queued), 80, 24, 0.0, NOW)
    assert (state, style) in lines[1]


def test_long_queue_is_clipped_with_a_count_and_small_screens_do_not_break() -> None:
    m = model(queued=40)
    rows = text(top_screen.screen(m, 80, 24, 0.0, NOW))
    assert len(rows) == 24
    shown = [r for r in rows if r[1:].split()[:1] and r[1:].split()[0].startswith("1")]
    more = [r for r in rows if "... and" in r]
    assert len(more) == 1
    assert int(more[0].split()[2]) + len([r for r in shown if "crm.q" in r]) == 40
    for width, height in [(40, 10), (20, 5), (80, 3), (200, 60)]:
        rows = text(top_screen.screen(m, width, height, 0.0, NOW))
        assert len(rows) == height and all(len(r) <= width for r in rows)


def test_paused_and_disconnected_are_shown() -> None:
    m = model()
    m.paused = True
    m.connected, m.problem = False, "reconnecting: no daemon at /x.sock"
    rows = text(top_screen.screen(m, 80, 24, 0.0, NOW))
    assert rows[1].rstrip().endswith("PAUSED")
    assert rows[2].startswith("! reconnecting: no daemon at /x.sock")


def test_events_move_tasks_and_ask_for_what_they_do_not_carry() -> None:
    m = model(active=1, queued=2)
    started = dict(m.queue[0], status="running")
    assert m.apply_event({"event": "task", "task": started}) == {"queue"}
    assert 100 in m.active and [t["id"] for t in m.queue] == [101]
    failed = dict(started, status="failed", error="exit code 2")
    m.apply_event({"event": "task", "task": failed})
    assert 100 not in m.active and m.failures[0]["error"] == "exit code 2"
    assert m.apply_event({"event": "pool", "status": {"running": 2, "queued": 0}}) == {
        "queue",
        "status",
    }
    assert (m.active_count, m.queued_count, m.state) == (2, 0, "busy")


def test_selection_follows_the_task_and_falls_to_a_neighbour() -> None:
    m = model(active=2, queued=3)
    m.move(3)
    assert m.selected == 101
    m.queue = [t for t in m.queue if t["id"] != 101]  # it started or was cancelled
    row = m.selected_row()
    assert row is not None and row["id"] == 102
    m.move(-10)
    assert m.selected == 1


# -- the real thing in tmux ---------------------------------------------------------------------


class Tmux:
    """A private tmux server (its own socket) running one 80x24 session."""

    def __init__(self, folder: Path):
        self.sock = folder / "tmux.sock"

    def run(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-S", str(self.sock), *args], capture_output=True, text=True, timeout=10
        )
        return out.stdout

    def start(self, command: str) -> None:
        self.run("new-session", "-d", "-x", "80", "-y", "24", "-s", "top", command)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "top", *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-J", "-t", "top")

    def resize(self, width: int, height: int) -> None:
        self.run("resize-window", "-t", "top", "-x", str(width), "-y", str(height))

    def wait(self, predicate: Callable[[str], bool], what: str, timeout: float = 20) -> str:
        def check() -> str:
            screen = self.screen()
            return screen if predicate(screen) else ""

        try:
            result: str = wait_for(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{self.screen()}") from None
        return result

    def close(self) -> None:
        self.run("kill-server")


@pytest.fixture
def tmux(workdir: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (CI installs it: .ci/run)")
    t = Tmux(workdir)
    yield t
    t.close()


def row_of(screen: str, task_id: int) -> str:
    return next((r for r in screen.splitlines() if r[1:].split()[:1] == [str(task_id)]), "")


def test_top_in_a_real_terminal(
    make_daemon: Callable[..., DaemonProc],
    workdir: Path,
    tmux: Tmux,
) -> None:
    routes = {f"a{i}": f"a{i}" for i in range(1, 7)}
    d = make_daemon({"alpha": {"routes": routes}}, daemon={"max_workers": 2})
    long = {"sleep": "120", "progress": "working"}
    ids = [
        d.call("submit", source="alpha", sync_type=f"a{i}", params=long)["task"]["id"]
        for i in range(1, 6)
    ]
    d.wait_status(ids[0], {"running"})
    d.wait_status(ids[1], {"running"})
    script = syncctl_script(workdir)
    tmux.start(f"{script} top --socket {d.socket}; echo EXIT=$?; sleep 120")

    screen = tmux.wait(lambda s: "active 2/2  queued 3" in s, "the counts")
    assert "OVERLOADED" in screen and "working" in row_of(screen, ids[0])
    assert row_of(screen, ids[2]).rstrip().endswith("pool_full")

    # A submit made elsewhere appears through the event stream.
    extra = d.call("submit", source="alpha", sync_type="a6", params=long)["task"]["id"]
    tmux.wait(lambda s: "queued 4" in s and row_of(s, extra) != "", "the new task")

    # Select the second running task, cancel it: y/n first, then the daemon ends it.
    tmux.keys("Down", "c")
    screen = tmux.wait(lambda s: f"cancel task {ids[1]}" in s, "the confirmation")
    assert d.task(ids[1])["status"] == "running"  # nothing happens before `y`
    tmux.keys("y")
    assert d.wait_status(ids[1], {"cancelled"})["status"] == "cancelled"
    tmux.wait(lambda s: row_of(s, ids[1]) == "" and "queued 3" in s, "the slot refilled")

    # `-` makes the selected queued task less urgent: it moves to the end of the queue.
    queued_first = d.call("list", status=["queued"])["tasks"][0]["id"]
    tmux.keys("Up", "Up", "Down", "Down")  # back to the top, then the first queued row
    tmux.wait(lambda s: row_of(s, queued_first).startswith(">"), "the first queued row")
    tmux.keys("-")
    wait_for(lambda: d.task(queued_first)["priority"] == 6, 10, "priority 6")
    tmux.wait(lambda s: s.index(f"\n>{queued_first} ") > s.index(f"\n {extra} "), "reorder")

    # p pauses dispatching (and shows it), p again resumes.
    tmux.keys("p")
    tmux.wait(lambda s: "PAUSED" in s.splitlines()[1], "PAUSED")
    assert d.call("status")["paused"] is True
    tmux.keys("p")
    tmux.wait(lambda s: "PAUSED" not in s.splitlines()[1], "resumed")
    assert d.call("status")["paused"] is False

    # The daemon goes away: said so; it comes back: reconnected, fresh state.
    d.stop()
    tmux.wait(lambda s: "! reconnecting: no daemon at" in s, "the daemon gone")
    d.start()
    tmux.wait(lambda s: re.match(r"syncd \S+  up \ds ", s) is not None and "!" not in s, "back")

    tmux.keys("q")
    screen = tmux.wait(lambda s: "EXIT=0" in s, "a clean exit")
    assert "ACTIVE" not in screen  # the normal screen is back (curses left it)


def start_top(tmux: Tmux, folder: Path, d: DaemonProc, env: str = "", after: str = "") -> None:
    """`syncctl top` in the tmux session, without colour; then `after`, then a long sleep
    so the pane stays readable. Returns once the dashboard is drawn."""
    script = syncctl_script(folder)
    then = f"{after}; " if after else ""
    tmux.start(f"{env} NO_COLOR=1 {script} top --socket {d.socket}; echo EXIT=$?; {then}sleep 60")
    tmux.wait(lambda s: "AVAILABLE" in s, "the dashboard")


def test_ctrl_c_restores_the_terminal(
    make_daemon: Callable[..., DaemonProc],
    workdir: Path,
    tmux: Tmux,
) -> None:
    start_top(tmux, workdir, make_daemon(), after="stty -a; echo STTY-END")
    tmux.keys("C-c")
    screen = tmux.wait(lambda s: "EXIT=130" in s and "STTY-END" in s, "exit 130 and stty")
    settings = " ".join(screen.split())
    assert " echo " in f" {settings} " and " icanon " in f" {settings} "  # cooked mode again


def test_resizing_the_terminal_redraws_at_the_new_size(
    make_daemon: Callable[..., DaemonProc],
    workdir: Path,
    tmux: Tmux,
) -> None:
    # LINES/COLUMNS exported, as some shells do: ncurses would pin the size to them.
    start_top(tmux, workdir, make_daemon(), env="LINES=24 COLUMNS=80")

    def footer_on(row: int, width: int) -> Callable[[str], bool]:
        def check(screen: str) -> bool:
            lines = screen.split("\n")
            return (
                len(lines) > row
                and lines[row].startswith("arrows select")
                and all(len(line) <= width for line in lines)
            )

        return check

    tmux.wait(footer_on(23, 80), "the footer on row 24 of 80x24")
    tmux.resize(120, 40)
    tmux.wait(footer_on(39, 120), "the footer on row 40 after growing to 120x40")
    tmux.resize(60, 15)
    tmux.wait(footer_on(14, 60), "the footer on row 15 after shrinking to 60x15")
    tmux.keys("q")
    tmux.wait(lambda s: "EXIT=0" in s, "a clean exit")


def test_unreachable_daemon_is_shown_not_a_crash(workdir: Path, tmux: Tmux) -> None:
    script = syncctl_script(workdir)
    tmux.start(f"{script} top --socket {workdir}/none.sock; echo EXIT=$?; sleep 60")
    tmux.wait(lambda s: "! reconnecting: no daemon at" in s, "the message")
    tmux.keys("q")
    tmux.wait(lambda s: "EXIT=0" in s, "a clean exit")


def test_top_refuses_json() -> None:
    from click.testing import CliRunner

    from syncd.ctl.main import main

    result = CliRunner().invoke(main, ["top", "--json", "--socket", "/nope.sock"])
    assert result.exit_code == 2 and "interactive" in result.output
