"""`syncd web` against what a careless or hostile client sends, and against large things: query
values that look like numbers and are not, a bulk cancel's hundred rows that share one
finish time, a log bigger than one reply, browsers that leave a live log, and a browser that
reconnects to one. A real daemon and a real `syncd web` process each time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers.daemon import wait_for
from tests.helpers.web import Stack

LOG_EVENT_SECONDS = 20.0


def test_number_like_query_values_are_a_400_not_a_crash(stack: Stack) -> None:
    """`"²".isdigit()` is True and `int("²")` raises: each was a 500 with a traceback."""
    web = stack.web
    for path, params in [
        ("/", {"queue_after": "²"}),
        ("/history", {"before": "²"}),
        ("/history", {"since": "99999999999d"}),
        ("/history.csv", {"since": "99999999999d"}),
        ("/events", {"page": "task", "id": "²"}),
    ]:
        r = web.get(path, params=params)
        assert r.status_code in (200, 400), (path, params, r.status_code)
    assert web.get("/history", params={"since": "99999999999d"}).status_code == 400
    assert "out of range" in web.get("/history", params={"since": "99999999999d"}).text
    assert web.get("/events", params={"page": "task", "id": "²"}).status_code == 400
    assert "Traceback" not in web.log.read_text()


def test_history_exports_only_csv_and_json(stack: Stack) -> None:
    """The path's extension became the download's file name: anything went, quotes too."""
    for path in ("/history.xyz", '/history.x";%20filename="evil.html'):
        r = stack.web.get(path)
        assert r.status_code == 404, path
        assert "evil" not in r.headers.get("content-disposition", "")
    assert stack.web.get("/history.json").status_code == 200


def test_a_bulk_cancel_is_counted_and_every_row_of_it_is_reachable_in_history(
    stack: Stack,
) -> None:
    """A bulk cancel gives its rows one finish time: paging by time then id in the web lost
    all but about a hundred of them; and with no browser watching, the metrics counted none."""
    d = stack.daemon
    d.call("pause")
    try:
        n = 130
        d.call("submit_many", items=[{"source": "gamma", "sync_type": "g1",
                                      "allow_duplicate": True}] * n)  # fmt: skip
        assert d.call("clear_queue", source="gamma")["cancelled"] == n
    finally:
        d.call("resume")
    seen: list[int] = []
    url = "/history?source=gamma&status=cancelled"
    for _ in range(10):
        page = stack.web.get(url)
        assert page.status_code == 200
        seen += [int(x) for x in _ids(page.text)]
        nxt = _older_link(page.text)
        if nxt is None:
            break
        url = nxt
    assert len(seen) == n and len(set(seen)) == n and seen == sorted(seen, reverse=True)
    metrics = stack.web.get("/metrics").text
    line = 'syncd_tasks_finished_total{source="gamma",status="cancelled",sync_type="g1"}'
    assert f"{line} {float(n)}" in metrics


def _ids(html: str) -> list[str]:
    import re

    return re.findall(r'<td class="num"><a href="/tasks/(\d+)"', html)


def _older_link(html: str) -> str | None:
    import re

    m = re.search(r'href="([^"]*)">Older', html)
    return m.group(1).replace("&amp;", "&") if m else None


def test_a_log_longer_than_one_reply_shows_its_real_end(stack: Stack) -> None:
    """The page asked for the tail from where the first reply (1 MiB at most) ended, so a
    3 MB log showed its middle as its end, and said it was 1 MiB long."""
    d = stack.daemon
    task = d.call("submit", source="alpha", sync_type="a2", params={"output-bytes": "3000000"},
                  allow_duplicate=True)["task"]  # fmt: skip
    d.wait_status(task["id"], {"completed"}, timeout=60)
    page = stack.web.get(f"/tasks/{task['id']}")
    assert page.status_code == 200
    assert "LAST-LINE" in page.text and "FIRST-LINE" in page.text
    assert len(page.content) < 300_000  # a head and a tail, not a megabyte of the middle
    whole = d.call("logs", id=task["id"], offset=0, limit=4)
    assert whole["end"] > 2_900_000 and (whole["size"], whole["text"]) == (4, "job ")


class LogStream:
    """One browser's event stream of a task page, read in a thread: the `log` frames."""

    def __init__(self, stack: Stack, task_id: int, headers: dict[str, str] | None = None):
        self.frames: list[tuple[str | None, str]] = []  # (event id, data)
        self.got = threading.Event()
        self.paused = threading.Event()  # told its log is not followed
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=None))
        url = stack.web.url.rstrip("/") + "/events"
        params = {"page": "task", "id": str(task_id), "log_offset": "0"}
        self._cm = self._client.stream("GET", url, params=params, headers=headers or {})
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with self._cm as r:
                event, ident = None, None
                for line in r.iter_lines():
                    if line.startswith("id: "):
                        ident = line[4:]
                    elif line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "log":
                        self.frames.append((ident, line[6:]))
                        self.got.set()
                    elif line.startswith("data: ") and event == "log_paused":
                        self.paused.set()
                    elif not line:
                        event, ident = None, None
        except (httpx.HTTPError, RuntimeError):
            pass

    def close(self) -> None:
        self._client.close()


@pytest.fixture
def streams() -> Iterator[list[LogStream]]:
    opened: list[LogStream] = []
    yield opened
    for s in opened:
        s.close()


def test_browsers_that_leave_a_live_log_leave_nothing_behind(
    stack: Stack, streams: list[LogStream]
) -> None:
    """Each live log held a thread of a shared pool of six until its task ended: after six
    browsers had come and gone, no page got a live log any more."""
    d = stack.daemon
    task = d.call("submit", source="alpha", sync_type="a1", params={"sleep": "120"},
                  allow_duplicate=True)["task"]  # fmt: skip
    d.wait_status(task["id"], {"running"})
    web = psutil.Process(stack.web.proc.pid)
    before = web.num_threads()
    try:
        for _ in range(12):
            s = LogStream(stack, task["id"])
            streams.append(s)
            assert s.got.wait(LOG_EVENT_SECONDS), "no live log for this browser"
            assert "job a1 starting" in s.frames[0][1]
            s.close()
        wait_for(lambda: web.num_threads() <= before + 1, 30, "the live logs' threads to end")
    finally:
        d.call("cancel", ids=[task["id"]])
        d.wait_status(task["id"], {"cancelled"})


def test_a_browser_that_reconnects_resumes_its_log_where_it_was(
    stack: Stack, streams: list[LogStream], tmp_path: Path
) -> None:
    """Each log frame's event id is the offset after it; a reconnecting browser sends it
    back (Last-Event-ID) and got the whole log again, appended twice on the page."""
    d = stack.daemon
    gate = tmp_path / "gate"
    task = d.call("submit", source="alpha", sync_type="a1", params={"gate": str(gate)},
                  allow_duplicate=True)["task"]  # fmt: skip
    first = LogStream(stack, task["id"])
    streams.append(first)
    assert first.got.wait(LOG_EVENT_SECONDS)
    ident, data = first.frames[0]
    assert "job a1 starting" in data and ident is not None and int(ident) > 0
    first.close()
    again = LogStream(stack, task["id"], headers={"Last-Event-ID": ident})
    streams.append(again)
    gate.touch()

    def told() -> str | None:
        text = "".join(data for _, data in again.frames)
        return text if "job a1 done" in text else None

    text = wait_for(told, LOG_EVENT_SECONDS, "the rest of the log on the reconnected stream")
    assert "job a1 starting" not in text, again.frames
    d.wait_status(task["id"], {"completed"})


def test_live_logs_are_capped_below_the_daemons_per_user_connections(
    stack: Stack, streams: list[LogStream]
) -> None:
    """Each live log holds a daemon connection and the daemon allows a user 64: past the
    cap a browser is told its log is not followed, and the web's own reads still work."""
    from syncd.web.app import MAX_LIVE_LOGS

    d = stack.daemon
    task = d.call("submit", source="alpha", sync_type="a1", params={"sleep": "120"},
                  allow_duplicate=True)["task"]  # fmt: skip
    d.wait_status(task["id"], {"running"})
    try:
        for _ in range(MAX_LIVE_LOGS):
            s = LogStream(stack, task["id"])
            streams.append(s)
            assert s.got.wait(LOG_EVENT_SECONDS)
        over = LogStream(stack, task["id"])
        streams.append(over)
        assert over.paused.wait(LOG_EVENT_SECONDS), "the browser over the cap was not told"
        assert over.frames == []
        assert stack.web.get(f"/tasks/{task['id']}").status_code == 200
        for s in streams[:-1]:
            s.close()

        def reload() -> bool | None:  # slots come back as browsers leave (within a second)
            again = LogStream(stack, task["id"])
            streams.append(again)
            told = wait_for(lambda: again.got.is_set() or again.paused.is_set() or None,
                            LOG_EVENT_SECONDS, "a live log or its refusal")  # fmt: skip
            return (told and again.got.is_set()) or None

        assert wait_for(reload, 30, "a live log slot to come back")
    finally:
        d.call("cancel", ids=[task["id"]])
        d.wait_status(task["id"], {"cancelled"})
