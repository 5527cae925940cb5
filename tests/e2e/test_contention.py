"""Every control path at once against a real daemon: claims are decided inside the store's
write transaction under the pool's lock, so the limits must hold and nothing may deadlock
while submits, cancels, priority changes, pauses, worker-count changes and source pauses
race with finishing tasks."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import defaultdict
from typing import Any

from syncd.core.clock import parse_iso
from tests.helpers.daemon import DaemonProc, wait_for

SECONDS = 6.0
SOURCES = {
    "alpha": {"routes": {"a1": "a1", "a2": "a2", "a3": "a3"}},
    "beta": {"max_concurrent": 1, "routes": {"b1": "b1", "b2": "b2"}},
}


def _loop(d: DaemonProc, until: float, errors: list[str], step: Any) -> None:
    conn = d.conn()
    rng = random.Random(threading.get_ident())
    try:
        while time.monotonic() < until:
            step(conn, rng)
    except Exception as exc:  # a failed call is the test's failure, reported below
        errors.append(repr(exc))
    finally:
        conn.close()


def test_racing_control_paths_keep_the_limits_and_never_stall(make_daemon):
    d = make_daemon(SOURCES, daemon={"max_workers": 3})
    until = time.monotonic() + SECONDS
    errors: list[str] = []
    ids: list[int] = []
    counter = iter(range(10**9))

    def submit(conn: Any, rng: random.Random) -> None:
        time.sleep(0.03)  # ~200 tasks in all: each is a Python process on two cores
        source = rng.choice(["alpha", "beta"])
        route = rng.choice(sorted(SOURCES[source]["routes"]))  # type: ignore[index]
        params = {"sleep": f"{rng.random() * 0.05:.3f}", "progress": f"n{next(counter)}"}
        task = conn.call("submit", source=source, sync_type=route, params=params)["task"]
        ids.append(task["id"])

    def meddle(conn: Any, rng: random.Random) -> None:
        if ids:
            victim = rng.choice(ids[-20:])
            conn.request("cancel", ids=[victim])
            conn.request("set_priority", id=rng.choice(ids[-20:]), priority=rng.randint(0, 9))
        time.sleep(0.005)

    def settings(conn: Any, rng: random.Random) -> None:
        conn.call(rng.choice(["pause", "resume", "resume"]))
        conn.call("config_set", max_workers=rng.randint(1, 4))
        conn.call(rng.choice(["source_pause", "source_resume"]), name="beta")
        time.sleep(0.01)

    def watch(conn: Any, rng: random.Random) -> None:
        status = conn.call("status", verbose=True)
        conn.call("list", explain=True, limit=50)
        conn.call("sources")
        active = status["active_tasks"]
        beta = [t["id"] for t in active if t["source"] == "beta"]
        if len(beta) > 1:
            errors.append(f"beta over its limit: {beta}")
        keys = [(t["source"], t["route"]) for t in active]
        if len(keys) != len(set(keys)):
            errors.append(f"one route twice at once: {keys}")

    steps = [submit, submit, meddle, settings, watch]
    threads = [
        threading.Thread(target=_loop, args=(d, until, errors, step), daemon=True) for step in steps
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 60)
    assert not [t for t in threads if t.is_alive()], "a client is stuck: the daemon stalled"
    assert not errors, errors[:5]
    d.call("resume")
    d.call("source_resume", name="beta")
    d.call("config_set", max_workers=3)

    def settled() -> bool:
        status = d.call("status")
        return status["queued"] == 0 and status["active"] == 0

    wait_for(settled, 60, "every task to end")
    history = d.call("history", limit=10000)["tasks"]
    assert {t["id"] for t in history} >= set(ids)  # each submit ended (ran or cancelled)
    spans: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    beta: list[tuple[float, float]] = []
    for t in history:
        if t["started_at"] is None:
            continue  # cancelled while queued
        start, end = parse_iso(t["started_at"]), parse_iso(t["finished_at"])
        assert start is not None and end is not None
        span = (start.timestamp(), end.timestamp())
        spans[(t["source"], t["route"])].append(span)
        if t["source"] == "beta":
            beta.append(span)
    # The rows' own times: no two runs of a route, nor of beta (max_concurrent 1), overlap.
    for runs in [*spans.values(), beta]:
        runs.sort()
        for (_, end), (start, _) in itertools.pairwise(runs):
            assert start >= end, runs
    assert len(history) > 50, len(history)
    assert "Traceback" not in d.stderr()
