"""`syncd web` as a real process over real HTTP (no browser): pages readable without
JavaScript, security headers, the Host allowlist, /metrics, history export, actions with
login, session and CSRF, and the daemon's log line for each."""

from __future__ import annotations

import csv
import io
import json
import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.daemon import wait_for
from tests.helpers.web import TOKEN, Stack

XSS = "<script>alert('x')</script>"


def csrf_of(client: httpx.Client, path: str = "/") -> str:
    page = client.get(path)
    m = re.search(r'name="csrf" content="([^"]+)"', page.text)
    assert m, page.text[:500]
    return m.group(1)


def login(client: httpx.Client) -> None:
    token = csrf_of(client, "/login")
    r = client.post("/login", data={"csrf": token, "token": TOKEN, "next": "/"})
    assert r.status_code == 303, r.text


def test_pages_render_without_javascript_and_escape_everything(stack: Stack) -> None:
    d = stack.daemon
    d.call("pause")
    task = d.call("submit", source="alpha", sync_type="a1", params={"record": XSS})["task"]
    for path in ("/", f"/tasks/{task['id']}", "/history", "/schedules", "/routes", "/freshness"):
        r = stack.web.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        assert "<script>alert" not in r.text, path
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        # No inline script anywhere: only the one external file.
        assert re.findall(r"<script[^>]*>", r.text) == ['<script src="/static/live.js" defer>']
    overview = stack.web.get("/").text
    assert "Paused." in overview and ">available<" in overview
    assert f'href="/tasks/{task["id"]}"' in overview and "paused" in overview  # its reason
    page = stack.web.get(f"/tasks/{task['id']}").text
    assert "record=&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "Waiting: paused." in page
    d.call("cancel", ids=[task["id"]])
    d.call("resume")


def test_freshness_page_goes_from_stale_to_fresh(stack: Stack) -> None:
    def row() -> str:
        page = stack.web.get("/freshness")
        assert page.status_code == 200
        m = re.search(r"<tr><td class=\"route\">gamma\.g1</td>.*?</tr>", page.text, re.S)
        assert m, page.text[:800]
        return m.group(0)

    before = row()
    assert "never completed" in before and "st-stale" in before and "60 min" in before
    assert "alpha.a1" not in stack.web.get("/freshness").text  # no target: not listed
    d = stack.daemon
    done = d.call("submit", source="gamma", sync_type="g1", allow_duplicate=True)["task"]
    d.wait_status(done["id"], {"completed"})
    after = row()
    assert "st-fresh" in after and f'href="/tasks/{done["id"]}"' in after


def test_host_header_must_be_allowed(stack: Stack) -> None:
    bad = stack.web.get("/", headers={"Host": "evil.example:8790"})
    assert bad.status_code == 400 and "not allowed" in bad.text
    assert bad.headers["x-frame-options"] == "DENY"
    port = stack.web.host.split(":")[1]
    assert stack.web.get("/healthz", headers={"Host": f"localhost:{port}"}).status_code == 200


def test_metrics_and_healthz(stack: Stack) -> None:
    d = stack.daemon
    done = d.call("submit", source="alpha", sync_type="a2")["task"]["id"]
    d.wait_status(done, {"completed"})
    r = stack.web.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(r.text)}
    assert {"syncd_tasks_finished", "syncd_workers_max", "syncd_task_duration_seconds"} <= names
    assert 'syncd_tasks_finished_total{source="alpha",status="completed",sync_type="a2"}' in r.text
    health = stack.web.get("/healthz")
    assert health.status_code == 200 and health.json()["daemon"] == "ok"


def test_history_filters_pages_and_exports(stack: Stack) -> None:
    d = stack.daemon
    ids = [d.call("submit", source="beta", sync_type="b2", params={"exit": "4"},
                  allow_duplicate=True)["task"]["id"] for _ in range(3)]  # fmt: skip
    for i in ids:
        d.wait_status(i, {"failed"})
    page = stack.web.get("/history", params={"source": "beta", "status": "failed"})
    assert page.status_code == 200
    shown = [int(x) for x in re.findall(r'<td class="num"><a href="/tasks/(\d+)"', page.text)]
    assert shown == sorted(ids, reverse=True)
    older = stack.web.get("/history", params={"source": "beta", "before": str(ids[-1])})
    shown = [int(x) for x in re.findall(r'<td class="num"><a href="/tasks/(\d+)"', older.text)]
    assert shown == sorted(ids[:-1], reverse=True)
    rows = list(csv.DictReader(io.StringIO(stack.web.get("/history.csv?source=beta").text)))
    assert [int(r["id"]) for r in rows] == sorted(ids, reverse=True)
    assert rows[0]["status"] == "failed" and json.loads(rows[0]["params"]) == {"exit": "4"}
    as_json = stack.web.get("/history.json", params={"source": "beta"}).json()
    assert [t["id"] for t in as_json["tasks"]] == sorted(ids, reverse=True)
    bad = stack.web.get("/history", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and "since:" in bad.text


def test_actions_need_csrf_and_a_session_and_are_logged(stack: Stack) -> None:
    d = stack.daemon
    d.call("pause")
    task_id = d.call("submit", source="alpha", sync_type="a1", allow_duplicate=True)["task"]["id"]
    with stack.web.client() as c:
        token = csrf_of(c)
        no_csrf = c.post("/actions/cancel", data={"id": str(task_id)})
        assert no_csrf.status_code == 403
        no_session = c.post("/actions/cancel", data={"id": str(task_id), "csrf": token})
        assert no_session.status_code == 303 and "/login?next=" in no_session.headers["location"]
        wrong = c.post("/login", data={"csrf": token, "token": "not-it", "next": "/"})
        assert wrong.status_code == 401
        ok = c.post("/login", data={"csrf": token, "token": TOKEN, "next": "//evil.example/"})
        assert ok.status_code == 303 and ok.headers["location"] == "/"  # no open redirect
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert d.task(task_id)["status"] == "queued"
        done = c.post(
            "/actions/cancel", data={"id": str(task_id), "csrf": token, "next": "/history"}
        )
        assert done.status_code == 303 and done.headers["location"] == "/history"
        assert d.task(task_id)["status"] == "cancelled"
        bad = c.post("/actions/max_workers", data={"max_workers": "99", "csrf": token})
        assert bad.status_code == 400 and "max_workers: expected a whole number 1..64" in bad.text
        refused = c.post("/actions/schedule_run", data={"name": "nope", "csrf": token})
        assert refused.status_code == 409 and "unknown_schedule" in refused.text
        c.post("/actions/resume", data={"csrf": token})
    assert d.call("status")["paused"] is False
    wait_for(lambda: "cancel by " in d.stderr(), 10, "the daemon's log line")
    assert re.search(r"cancel by \S+ via web from 127\.0\.0\.1 \(uid", d.stderr())


def source_state_gauge(stack: Stack) -> dict[tuple[str | None, str | None], float]:
    return {
        (s.labels.get("source"), s.labels.get("state")): s.value
        for f in text_string_to_metric_families(stack.web.get("/metrics").text)
        if f.name == "syncd_source_state"
        for s in f.samples
    }


def test_source_pause_and_resume_from_the_overview(stack: Stack) -> None:
    d = stack.daemon
    with stack.web.client() as c:
        login(c)
        token = csrf_of(c)
        assert 'action="/actions/source_pause"' in c.get("/").text
        paused = c.post("/actions/source_pause", data={"name": "beta", "csrf": token})
        assert paused.status_code == 303
        row = {s["name"]: s for s in d.call("sources")["sources"]}["beta"]
        assert row["state"] == "paused"
        gauge = source_state_gauge(stack)
        assert gauge[("beta", "paused")] == 1 and gauge[("beta", "ok")] == 0
        assert 'action="/actions/source_resume"' in c.get("/").text
        c.post("/actions/source_resume", data={"name": "beta", "csrf": token})
    row = {s["name"]: s for s in d.call("sources")["sources"]}["beta"]
    assert row["state"] == "ok"
    metrics = source_state_gauge(stack)
    assert metrics[("beta", "ok")] == 1 and metrics[("beta", "paused")] == 0
    assert {state for (src, state) in metrics if src == "beta"} == {
        "ok",
        "paused",
        "throttled",
        "open",
        "half_open",
    }


def test_submit_and_retry_actions(stack: Stack) -> None:
    d = stack.daemon
    with stack.web.client() as c:
        login(c)
        token = csrf_of(c)
        r = c.post(
            "/actions/submit",
            data={"source": "alpha", "sync_type": "a2", "params": "exit=3", "csrf": token},
        )
        assert r.status_code == 303
        first = d.call("history", source="alpha", limit=1)
        failed = wait_for(
            lambda: [t for t in d.call("history", source="alpha", status=["failed"])["tasks"]
                     if t["params"] == {"exit": "3"}],
            20, "the submitted task to fail",
        )  # fmt: skip
        assert first is not None
        c.post("/actions/retry", data={"id": str(failed[0]["id"]), "csrf": token})
        again = wait_for(
            lambda: len([t for t in d.call("history", source="alpha", status=["failed"])["tasks"]
                         if t["params"] == {"exit": "3"}]) == 2,
            20, "the retried task to fail too",
        )  # fmt: skip
        assert again


def test_actions_disabled_means_no_login_and_no_actions(stack_factory) -> None:
    s = stack_factory(web_table={"actions": False})
    with s.web.client() as c:
        token = csrf_of(c)
        assert c.get("/login").status_code == 404
        assert c.post("/actions/pause", data={"csrf": token}).status_code == 404
        assert "Log in" not in c.get("/").text
    assert s.daemon.call("status")["paused"] is False


def test_base_path_for_a_reverse_proxy(stack_factory) -> None:
    s = stack_factory(web_table={"actions": False, "base_path": "/syncd"})
    assert s.web.url.endswith("/syncd")
    page = s.web.get("/")
    assert page.status_code == 200
    assert 'href="/syncd/static/style.css"' in page.text and 'href="/syncd/history"' in page.text
    assert s.web.get("/static/style.css").status_code == 200
    root = httpx.get(f"http://{s.web.host}/healthz", timeout=10)
    assert root.status_code == 404


def test_task_page_lists_earlier_and_later_attempts(stack: Stack) -> None:
    """A sync that asks to be run later is deferred, and its follow-up too, until
    max_deferrals ends the chain failed: each page links the attempts before and after it."""
    d = stack.daemon
    first = d.call("submit", source="alpha", sync_type="a1", params={"retry-after": "0.05"})["task"]
    chain = [first["id"]]

    def next_or_end() -> str | None:
        got = d.call("get", id=chain[-1])
        if got["followed_by"] is not None:
            chain.append(got["followed_by"]["id"])
            return None
        return got["task"]["status"] if got["task"]["status"] == "failed" else None

    wait_for(next_or_end, 60, "the chain of deferrals to end failed")
    assert len(chain) == 6  # the first and its max_deferrals (5) follow-ups, the last failed
    page = stack.web.get(f"/tasks/{first['id']}").text
    later = page.split("<h2>Later attempts</h2>", 1)[1].split("</ol>", 1)[0]
    assert re.findall(r'href="/tasks/(\d+)"', later) == [str(i) for i in chain[1:]]
    assert later.count("<li>defer: ") == len(chain) - 1
    last = stack.web.get(f"/tasks/{chain[-1]}").text
    assert "<h2>Later attempts</h2>" not in last
    earlier = last.split("<h2>Earlier attempts</h2>", 1)[1].split("</ol>", 1)[0]
    assert re.findall(r'href="/tasks/(\d+)"', earlier) == [str(i) for i in chain[-2::-1]]
