"""/healthz follows the daemon: up 200, stopped 503, hung (SIGSTOP) 503 within 2 s."""

from __future__ import annotations

import os
import signal
import time

from tests.helpers.web import Stack


def test_healthz_up_hung_and_down(stack_factory) -> None:
    s: Stack = stack_factory(web_table={"actions": False})
    up = s.web.get("/healthz")
    assert up.status_code == 200
    body = up.json()
    assert body["daemon"] == "ok" and body["pid"] == s.daemon.proc.pid
    assert up.headers["cache-control"] == "no-store"

    pid = s.daemon.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        hung = s.web.get("/healthz")
        elapsed = time.monotonic() - started
        assert hung.status_code == 503
        assert hung.json()["daemon"] == "down" and "not answering" in hung.json()["reason"]
        assert elapsed < 2.0, elapsed
        # The pages say so too, without a traceback.
        page = s.web.get("/")
        assert page.status_code == 503 and "Daemon unreachable" in page.text
    finally:
        os.kill(pid, signal.SIGCONT)
    assert s.web.get("/healthz").status_code == 200

    s.daemon.stop()
    down = s.web.get("/healthz")
    assert down.status_code == 503
    assert down.json()["daemon"] == "down" and "no such socket file" in down.json()["reason"]
    assert s.web.get("/metrics").status_code == 503
    assert s.web.proc.poll() is None  # the web outlives its daemon
