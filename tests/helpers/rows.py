"""Task rows as the daemon sends them, for render and CLI tests."""

from __future__ import annotations

from typing import Any


def task(id: int, source: str, sync_type: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": id,
        "source": source,
        "sync_type": sync_type,
        "route": sync_type,
        "argv": ["python", "manage.py", f"sync_{source}_{sync_type}"],
        "params": {},
        "priority": 5,
        "status": "queued",
        "trigger": "manual",
        "attempt": 1,
        "submitted_at": "2025-09-29T15:00:00.000000Z",
        "started_at": None,
        "finished_at": None,
        "last_heartbeat": None,
        "pid": None,
        "exit_code": None,
        "error": None,
        "requested_by": "ops",
        "not_before": None,
        "progress": None,
    }
    base.update(kw)
    return base


STATUS = {
    "max_workers": 2,
    "active": 1,
    "queued": 2,
    "available": 1,
    "utilization": 0.5,
    "state": "available",
    "paused": False,
    "active_tasks": [
        task(
            812,
            "genius",
            "all",
            status="running",
            started_at="2025-09-29T15:28:30.000000Z",
            elapsed_seconds=135.4,
            cpu_percent=12.5,
            rss_bytes=50 * 1024 * 1024,
            progress="page 3/10",
        )
    ],
    "queued_tasks": [task(813, "five9", "contacts"), task(814, "hubspot", "deals", priority=3)],
}
