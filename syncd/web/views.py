"""What each page shows, gathered from the daemon in a few bounded reads: nothing here ever
asks for more than a page of tasks, whatever the depth of the queue or the history."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from syncd.core.models import FOLLOW_UP_KINDS
from syncd.ctl.client import DaemonError
from syncd.web import charts
from syncd.web.link import DaemonLink

PAGE = 50
LOG_CHUNK = 32 * 1024  # head and tail shown of a longer log
CHAIN_LIMIT = 20
_PARENT = re.compile(rf"({'|'.join(FOLLOW_UP_KINDS)}):(\d+)")
STATUSES = ("completed", "failed", "cancelled", "deferred")


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def overview(link: DaemonLink, queue_after: int | None = None) -> dict[str, Any]:
    # The reads are independent: sent at once on separate connections, the page waits for
    # the slowest rather than their sum.
    calls: dict[str, tuple[str, dict[str, Any] | None]] = {
        "status": ("status", {"verbose": True}),
        "queue": ("list", {"status": ["queued"], "limit": PAGE, "explain": True,
                           "after_id": queue_after}),
        "finished": ("history", {"limit": PAGE}),
        "routes": ("routes", {}),
        "metrics": ("metrics", {}),
        "series": ("series", {}),
        "sources": ("sources", None),  # optional: a daemon without per-source states
    }  # fmt: skip
    got = link.many(calls)
    status, queue, metrics, series = got["status"], got["queue"], got["metrics"], got["series"]
    finished = got["finished"]["tasks"]
    routes = got["routes"]["sources"]
    return {
        "status": status,
        "running": status.get("active_tasks", []),
        "queue": queue["tasks"],
        "queue_total": queue["total"],
        "queue_after": queue_after,
        "queue_next": queue["tasks"][-1]["id"] if len(queue["tasks"]) == PAGE else None,
        "finished": finished,
        "sources": source_rows(routes, status, metrics, got["sources"]),
        "throughput": charts.throughput(series),
        "depth": charts.queue_depth(series),
        "totals": charts.totals(series),
        "now": now_utc(),
    }


def source_rows(
    routes: list[dict[str, Any]],
    status: dict[str, Any],
    metrics: dict[str, Any],
    sources: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """One row per source: its limit, running and queued counts, and (where the daemon has
    per-source states) last success, last failure and breaker/throttle state."""
    running = Counter(t["source"] for t in status.get("active_tasks", []))
    queued_family = metrics.get("gauges", {}).get("syncd_tasks_queued", {})
    queued = {s["labels"]["source"]: int(s["value"]) for s in queued_family.get("samples", [])}
    states = {s["name"]: s for s in (sources or {}).get("sources", [])}
    rows = []
    for src in routes:
        name = src["name"]
        state = states.get(name, {})
        rows.append(
            {
                "name": name,
                "max_concurrent": src.get("max_concurrent"),
                "routes": len(src.get("routes", [])),
                "running": running.get(name, 0),
                "queued": queued.get(name, 0),
                "state": state.get("state"),
                "until": state.get("until"),
                "reason": state.get("reason"),
                "last_success": state.get("last_success"),
                "last_failure": state.get("last_failure"),
            }
        )
    return rows


def task_page(link: DaemonLink, task_id: int, with_log: bool = True) -> dict[str, Any]:
    """The task page; its live section (`with_log` False) needs no log read."""
    found = link.call("get", id=task_id)
    task = found["task"]
    explain = link.call("explain", id=task_id) if task["status"] == "queued" else None
    excerpt = log_excerpt(link, task_id) if with_log else LogExcerpt("", None, 0, 0)
    route = None
    try:
        sources = link.call("routes", source=task["source"])["sources"]
    except DaemonError:  # the source left the config since this task ran
        sources = []
    for src in sources:
        for r in src.get("routes", []):
            if r["sync_type"] == task["route"]:
                route = r
    return {
        "task": task,
        "explain": explain,
        "log_head": excerpt.head,
        "log_tail": excerpt.tail,
        "log_size": excerpt.size,
        "log_follow_from": excerpt.follow_from,
        "chain": chain(link, task),
        "later": later(link, found.get("followed_by")),
        "route": route,
        "now": now_utc(),
    }


@dataclass(frozen=True)
class LogExcerpt:
    """What the task page shows of a log: the whole of a short one, else its head and
    tail; `size` is the output's length, `follow_from` where the text shown ends (a live
    follow starts there: before a character still half written, if any)."""

    head: str
    tail: str | None
    size: int
    follow_from: int


def log_excerpt(link: DaemonLink, task_id: int) -> LogExcerpt:
    first = link.call("logs", id=task_id, limit=2 * LOG_CHUNK)
    end = int(first.get("end", 0))
    if end <= 2 * LOG_CHUNK:
        return LogExcerpt(first.get("text", ""), None, end, int(first.get("size", 0)))
    tail = link.call("logs", id=task_id, offset=end - LOG_CHUNK, limit=LOG_CHUNK)
    head = first.get("text", "")[:LOG_CHUNK]
    return LogExcerpt(head, tail.get("text", ""), end, int(tail.get("size", 0)))


def chain(link: DaemonLink, task: dict[str, Any]) -> list[dict[str, Any]]:
    """The attempts this one follows (retry, requeue, defer), newest first."""
    out = []
    current = task
    for _ in range(CHAIN_LIMIT):
        m = _PARENT.fullmatch(current.get("trigger") or "")
        if m is None:
            break
        try:
            current = link.call("get", id=int(m.group(2)))["task"]
        except Exception:  # pruned from history: the link ends here
            out.append({"id": int(m.group(2)), "missing": True, "kind": m.group(1)})
            break
        out.append({**current, "kind": m.group(1)})
    return out


def later(link: DaemonLink, follow: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The attempts that followed this one (its retry, requeue or defer, then theirs),
    oldest first."""
    out: list[dict[str, Any]] = []
    while follow is not None and len(out) < CHAIN_LIMIT:
        m = _PARENT.fullmatch(follow.get("trigger") or "")
        out.append({**follow, "kind": m.group(1) if m else follow.get("trigger")})
        follow = link.call("get", id=follow["id"]).get("followed_by")
    return out


def schedules_page(link: DaemonLink) -> dict[str, Any]:
    return {"schedules": link.call("schedules")["schedules"], "now": now_utc()}


def freshness_page(link: DaemonLink) -> dict[str, Any]:
    """Every route with a target, stale ones first (what an operator looks for)."""
    rows = link.call("freshness")["routes"]
    rows.sort(key=lambda r: (not r["stale"], r["source"], r["sync_type"]))
    return {"routes": rows, "now": now_utc()}


def routes_page(link: DaemonLink) -> dict[str, Any]:
    return {"sources": link.call("routes")["sources"], "now": now_utc()}
