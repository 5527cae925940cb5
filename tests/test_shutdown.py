"""Shutdown order (issue 11 item 16): the dispatcher's stop returns only once every task it
ran has its end recorded, so the store is closed after the workers' last writes and a task
interrupted by a stop ends as such rather than as "lost" at the next start; the socket's
connections are joined under one deadline, however many are stuck."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from syncd.control.auth import Authorizer
from syncd.control.server import SHUTDOWN_GRACE, Server
from syncd.core.models import Status
from tests.helpers.pool import make, submit, wait_until
from tests.helpers.server import OPS, Conn, FakeHandler

SLEEPER = f'sleeper = {{ argv = ["{sys.executable}", "-c", "import time; time.sleep(600)"] }}'


def test_stop_waits_for_a_task_claimed_by_a_finishing_worker(tmp_path: Path) -> None:
    """The window: a worker's finish has claimed the next task in the same transaction, and
    that task has no thread of its own yet (it runs next in the same worker). A stop in that
    window must still wait for its end to be recorded."""
    # One slot, so the second task is claimed by the first's finish; it sleeps, so the stop
    # surely interrupts it (a task that exits by itself first would end `completed`).
    d = make(tmp_path, SLEEPER, max_workers=1)
    first, _ = submit(d, "ok")
    second, _ = submit(d, "sleeper")
    seen: dict[str, Any] = {}
    stopper = threading.Thread(target=lambda: seen.update(stopped=d.stop(20), at=snapshot()))

    def snapshot() -> tuple[Status, bool]:
        task = d.store.get(second.id)
        assert task is not None
        return task.status, second.id in d.running

    real = d._announce_start

    def announce(rt: Any) -> None:
        real(rt)
        if rt.task.id == second.id:  # in the first task's worker, inside its finish
            stopper.start()
            wait_until(lambda: d.stopping)
            stopper.join(2)  # a stop that does not wait returns at once

    d._announce_start = announce  # type: ignore[method-assign]
    assert d.tick() == [first.id]
    wait_until(lambda: "at" in seen, 30)
    status, still_running = seen["at"]
    assert seen["stopped"] is True
    assert (status, still_running) == (Status.FAILED, False)
    task = d.store.get(second.id)
    assert task is not None and task.error == "interrupted by shutdown"
    d.store.close()


@pytest.fixture
def stuck_server() -> Any:
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="sd"))
    handler = FakeHandler()
    server = Server(folder / "s.sock", 0o600, handler, Authorizer(None), ops=OPS)
    yield server, handler
    handler.release.set()
    shutil.rmtree(folder, ignore_errors=True)


def test_shutdown_joins_all_connections_under_one_deadline(stuck_server: Any) -> None:
    """Eight connections each stuck in a handler that ignores the cut: shutdown waits the
    grace and one cut deadline for all of them, not one second per connection."""
    server, _handler = stuck_server
    server.bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conns = [Conn(server.path) for _ in range(8)]
    for c in conns:
        c.send({"v": 1, "id": 1, "op": "explain", "args": {"id": 1}})  # blocks in the handler
    wait_until(lambda: server.connection_count == 8)
    start = time.monotonic()
    server.shutdown()
    took = time.monotonic() - start
    # One deadline: about SHUTDOWN_GRACE + CUT_GRACE (3 s); per connection it was 2 + 8 s.
    assert took < SHUTDOWN_GRACE + 4, f"shutdown took {took:.1f} s"  # the cut: 1 s, for all
    for c in conns:
        c.close()
