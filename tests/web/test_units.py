"""Units of the web: sessions, Host parsing, redirects, params, charts, and how a daemon's
refusal reaches the page (the daemon's own rule is tested against real users elsewhere)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from syncd.config.model import WebSettings
from syncd.ctl.client import DaemonError
from syncd.web import charts
from syncd.web.actions import BadInput, parse_params
from syncd.web.app import create_app
from syncd.web.query import number
from syncd.web.security import (
    SESSION_SECONDS,
    Sessions,
    client_address,
    host_only,
    read_token,
)


def test_host_only() -> None:
    assert host_only("Example.com:8790") == "example.com"
    assert host_only("[::1]:8790") == "[::1]"
    assert host_only("[::1]") == "[::1]"
    assert host_only("localhost") == "localhost"


def test_the_audited_address_is_the_one_our_proxy_appended() -> None:
    """The client writes the leftmost X-Forwarded-For entries itself; the proxy appends."""
    from starlette.requests import Request

    headers = [(b"x-forwarded-for", b"6.6.6.6, 10.1.2.3")]
    scope = {"type": "http", "headers": headers, "client": ("127.0.0.1", 5000)}
    request = Request(scope)
    assert client_address(request, trust_proxy=True) == "10.1.2.3"
    assert client_address(request, trust_proxy=False) == "127.0.0.1"


def test_numbers_are_ascii_digits_that_fit_sqlite() -> None:
    assert [number(t) for t in ("12", " 7 ", "0", None, "", "²", "١٢", "1e3", "-3")] == [
        12, 7, 0, None, None, None, None, None, None,
    ]  # fmt: skip
    assert number("-3", signed=True) == -3 and number("9" * 19) is None


def test_sessions_are_signed_and_expire() -> None:
    s = Sessions("the-token-123", key=b"k" * 32)
    cookie = s.new_session(now=1000.0)
    assert s.valid(cookie, now=1001.0)
    assert not s.valid(cookie, now=1000.0 + SESSION_SECONDS + 1)
    body, _, sig = cookie.rpartition(".")
    forged = body.rsplit(".", 1)[0] + f".{10**12}.{sig}"
    assert not s.valid(forged, now=1001.0)
    assert not Sessions("the-token-123", key=b"j" * 32).valid(cookie, now=1001.0)
    assert s.check_token(" the-token-123\n") and not s.check_token("the-token-12")
    assert not Sessions(None).valid(cookie)


def test_token_file_must_hold_a_real_token(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("short\n")
    with pytest.raises(ValueError, match="at least 8"):
        read_token(tmp_path / "t")
    (tmp_path / "t").write_text("  a-long-enough-token  \nsecond line\n")
    assert read_token(tmp_path / "t") == "a-long-enough-token"


def test_params_text() -> None:
    assert parse_params("since=2025-01-01  full\nbatch-size=5") == {
        "since": "2025-01-01",
        "full": True,
        "batch-size": "5",
    }
    with pytest.raises(BadInput, match="given twice"):
        parse_params("a=1 a=2")
    with pytest.raises(BadInput, match="not K=V"):
        parse_params("=x")


def test_charts_escape_and_scale() -> None:
    series = {
        "buckets": [
            {"start": "2026-01-01T00:00:00Z", "completed": 3, "failed": 1, "cancelled": 0,
             "deferred": 1, "queued": None},
            {"start": "<b>", "completed": 0, "failed": 0, "cancelled": 0, "deferred": 0,
             "queued": 7},
        ]
    }  # fmt: skip
    svg = str(charts.throughput(series))
    assert svg.count('class="bar completed"') == 1 and svg.count('class="bar failed"') == 1
    assert svg.count('class="bar deferred"') == 1
    assert "3 completed, 1 failed, 0 cancelled, 1 deferred" in svg
    assert ">5</text>" in svg  # the axis: 5 finishes in the tallest bar
    depth = str(charts.queue_depth(series))
    assert depth.count('class="bar queued"') == 1 and "&lt;b&gt;" in depth and "<b>" not in depth
    assert "style=" not in svg + depth  # the CSP allows no inline style
    assert charts.totals(series) == {"completed": 3, "failed": 1, "cancelled": 0, "deferred": 1}


@pytest.fixture
def client(tmp_path: Path) -> Any:
    settings = WebSettings(actions=True, allowed_hosts=("testserver",))
    app = create_app(settings, tmp_path / "no.sock", token="the-token-123")
    with TestClient(app, follow_redirects=False) as c:
        yield c, app.state.web


def logged_in(c: Any) -> str:
    page = c.get("/login")
    csrf = re.search(r'name="csrf" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert c.post("/login", data={"csrf": csrf, "token": "the-token-123"}).status_code == 303
    return str(csrf)


def test_a_refusal_by_the_daemon_shows_forbidden(client: Any) -> None:
    c, web = client
    sent: list[tuple[str, str, dict[str, Any]]] = []

    def refuse(op: str, via: str, **args: Any) -> Any:
        sent.append((op, via, args))
        raise DaemonError("forbidden", "pause is reserved to root, the daemon's user")

    web.link.act = refuse
    csrf = logged_in(c)
    r = c.post("/actions/pause", data={"csrf": csrf, "next": "/schedules"})
    assert r.status_code == 403
    assert "forbidden" in r.text and "reserved to root" in r.text
    assert 'href="/schedules"' in r.text
    assert sent == [("pause", "web from testclient", {})]


def test_a_page_says_when_the_daemon_is_down(client: Any) -> None:
    c, _ = client
    r = c.get("/")
    assert r.status_code == 503 and "Daemon unreachable" in r.text and "no such socket" in r.text
    assert c.get("/healthz").json()["daemon"] == "down"
    assert c.get("/events?page=nonsense").status_code == 400


def test_the_schedules_page_says_started_for_a_fire_that_took_a_free_slot(client: Any) -> None:
    c, web = client
    at = "2026-12-04T02:00:00Z"
    rows = [
        {"name": name, "cron": "0 * * * *", "timezone": "UTC", "source": "alpha",
         "sync_type": "a1", "overlap": "skip", "enabled": True, "paused": False,
         "next_fire": at, "last_fire": at,
         "last_outcome": {"kind": "queued", "task_id": task_id, "at": at, **extra}}
        for name, task_id, extra in (("ran", 7, {"started": True}), ("waits", 8, {}))
    ]  # fmt: skip
    web.link.call = lambda op, **args: {"schedules": rows} if op == "schedules" else {}
    page = c.get("/schedules").text
    assert '<span class="oc oc-queued">started</span> <a href="/tasks/7">task 7</a>' in page
    assert '<span class="oc oc-queued">queued</span> <a href="/tasks/8">task 8</a>' in page


class Canned:
    """A daemon link answering `logs` from a canned function of the args."""

    def __init__(self, logs: Any) -> None:
        self.logs = logs

    def call(self, op: str, **args: Any) -> Any:
        assert op == "logs"
        return self.logs(args)


def test_a_live_log_follows_from_where_the_text_shown_ends() -> None:
    """The task page showed text up to a character still half written but followed from
    the output's end: the rest of that character came without its start (a U+FFFD)."""
    from syncd.web.views import log_excerpt

    short = log_excerpt(Canned(lambda a: {"text": "hello ", "size": 6, "end": 8}), 1)  # type: ignore[arg-type]
    assert (short.head, short.size, short.follow_from) == ("hello ", 8, 6)

    def long(args: dict[str, Any]) -> dict[str, Any]:
        if args.get("offset", 0) == 0:
            return {"text": "h" * 70_000, "size": 65_536, "end": 100_002}
        return {"text": "t" * 32_766, "size": 100_000, "end": 100_002}

    excerpt = log_excerpt(Canned(long), 1)  # type: ignore[arg-type]
    assert (excerpt.size, excerpt.follow_from, excerpt.tail) == (100_002, 100_000, "t" * 32_766)
