"""Every change to a task reaches `watch`, whichever op made it: the bulk cancels and the
priority change go through the same service as a submit, so a watcher (top, the web page,
the metrics) never misses one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.helpers.daemon import Conn, DaemonProc


def task_events(conn: Conn, until: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """Read the watch stream until `until(events)` holds (the socket's timeout bounds it)."""
    seen: list[dict[str, Any]] = []
    while not until(seen):
        reply = conn.read_reply()
        assert reply["ok"], reply
        event = reply["result"]
        if event and event.get("event") == "task":
            seen.append(event)
    return seen


def watcher(d: DaemonProc) -> Conn:
    conn = Conn(d.socket, timeout=20)
    conn.send_raw(b'{"v":1,"id":"w","op":"watch","args":{"events":["task"]}}\n')
    return conn


def queue(d: DaemonProc, n: int, source: str = "alpha") -> list[int]:
    sync_type = "a1" if source == "alpha" else "b1"
    items = [
        {
            "source": source,
            "sync_type": sync_type,
            "params": {"record": f"t{i}"},
            "allow_duplicate": True,
        }
        for i in range(n)
    ]
    return [r["id"] for r in d.call("submit_many", items=items)["results"]]


def cancelled_ids(events: list[dict[str, Any]]) -> set[int]:
    return {e["task"]["id"] for e in events if e["status"] == "cancelled"}


def test_watch_sees_every_task_clear_queue_cancels(make_daemon: Callable[..., DaemonProc]) -> None:
    d = make_daemon({"alpha": {"routes": {"a1": "a1"}}, "beta": {"routes": {"b1": "b1"}}})
    d.call("pause")
    ids = queue(d, 40)
    other = queue(d, 3, source="beta")
    conn = watcher(d)
    try:
        assert d.call("clear_queue", source="alpha") == {"cancelled": 40}
        events = task_events(conn, lambda seen: cancelled_ids(seen) >= set(ids))
        assert cancelled_ids(events) == set(ids)
        assert all(e["task"]["finished_at"] for e in events)
    finally:
        conn.close()
    assert {d.task(i)["status"] for i in other} == {"queued"}  # the other source is untouched


def test_watch_sees_reset_state_and_priority_changes(
    make_daemon: Callable[..., DaemonProc],
) -> None:
    d = make_daemon()
    d.call("pause")
    ids = queue(d, 5)
    conn = watcher(d)
    try:
        d.call("set_priority", id=ids[0], priority=1)
        first = task_events(conn, lambda seen: len(seen) >= 1)
        assert first[0]["task"]["id"] == ids[0]
        assert first[0]["task"]["priority"] == 1
        assert d.call("reset_state") == {"cancelled": 5, "killed": []}
        events = task_events(conn, lambda seen: cancelled_ids(seen) >= set(ids))
        assert cancelled_ids(events) == set(ids)
    finally:
        conn.close()


def test_source_filters_are_normalised_like_submit(make_daemon: Callable[..., DaemonProc]) -> None:
    """submit stores "Alpha " as alpha; the filters compared the raw text, so `clear-queue
    --source Alpha` cancelled nothing and said "cancelled 0" with exit 0, and list and
    history showed nothing; a source that is not configured is an error, not an empty queue."""
    d = make_daemon({"alpha": {"routes": {"a1": "a1"}}})
    d.call("pause")
    task = d.call("submit", source="Alpha ", sync_type=" A1")["task"]
    assert (task["source"], task["sync_type"]) == ("alpha", "a1")
    assert [t["id"] for t in d.call("list", source="ALPHA")["tasks"]] == [task["id"]]
    refused = d.request("clear_queue", source="alpah")
    assert refused["error"]["code"] == "unknown_source" and "alpha" in refused["error"]["message"]
    assert d.call("clear_queue", source=" Alpha") == {"cancelled": 1}
    found = d.call("history", source="ALPHA", sync_type="A1")["tasks"]
    assert [(t["id"], t["status"]) for t in found] == [(task["id"], "cancelled")]
