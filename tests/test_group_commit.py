"""Group commit in the store: the hot writes of many threads share one transaction and one
fsync, a failing write rolls back alone, and no caller is answered before the commit that
holds its write (also across a kill -9). The fsync outside the COMMIT: test_wal_sync.py."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd.core.errors import StoreError
from syncd.core.models import ErrorCode, Status
from syncd.store.facade import Store
from tests.helpers.writes import DEADLINE, counting_flushes, in_thread, new, wait_until

REPO = Path(__file__).resolve().parents[1]


class Gate:
    """Holds the writer's first commit until released, so the writes that arrive meanwhile
    gather into the next batch; counts the commits and traces the statements."""

    def __init__(self, store: Store) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.commits = 0
        self.sql: list[str] = []
        real = store._writer.commit

        def commit(conn: sqlite3.Connection) -> None:
            self.commits += 1
            if self.commits == 1:
                self.entered.set()
                assert self.release.wait(DEADLINE)
            real(conn)

        store._writer.commit = commit  # type: ignore[method-assign]
        store._conn.set_trace_callback(self.sql.append)


def gathered(store: Store, gate: Gate, calls: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run `first` alone (its commit held), queue the other calls behind it, then let
    everything through; returns each call's result or exception."""
    out: dict[str, Any] = {}
    threads = [in_thread(calls.pop("first"), out, "first")]
    assert gate.entered.wait(DEADLINE)
    threads += [in_thread(fn, out, key) for key, fn in calls.items()]
    wait_until(lambda: store._writer.pending() == len(calls), "the batch to gather")
    gate.release.set()
    for t in threads:
        t.join(DEADLINE)
        assert not t.is_alive()
    return out


def test_writes_of_several_threads_share_one_commit(store: Store) -> None:
    running = store.enqueue(new("run"))[0]
    claimed = store.transition(running.id, Status.QUEUED, Status.RUNNING, started_at="t")
    assert claimed is not None
    gate = Gate(store)
    calls: dict[str, Callable[[], Any]] = {"first": lambda: store.enqueue(new("a"))}
    calls.update({f"e{i}": (lambda i=i: store.enqueue(new(f"b{i}"))) for i in range(4)})
    calls["pid"] = lambda: store.set_running_fields(running.id, pid=42)
    calls["beat"] = lambda: store.heartbeat([(running.id, "beat", "half")])
    out = gathered(store, gate, calls)
    assert gate.commits == 2  # the first alone, then the six gathered behind it together
    assert [s for s in gate.sql if s == "COMMIT"] == ["COMMIT", "COMMIT"]
    assert out["pid"] is True
    ids = [out[f"e{i}"][0].id for i in range(4)]
    assert len(set(ids)) == 4 and all(store.get(i) is not None for i in ids)
    got = store.get(running.id)
    assert got is not None and (got.pid, got.progress) == (42, "half")
    assert "synchronous" not in " ".join(gate.sql)  # the flush is WalSync's (test_wal_sync)


def test_a_batch_of_only_pid_and_heartbeat_writes_skips_the_fsync(store: Store) -> None:
    task = store.enqueue(new())[0]
    assert store.transition(task.id, Status.QUEUED, Status.RUNNING, started_at="t")
    gate = Gate(store)
    flushes = counting_flushes(store)
    calls: dict[str, Callable[[], Any]] = {
        "first": lambda: store.enqueue(new("a")),
        "pid": lambda: store.set_running_fields(task.id, pid=7),
        "beat": lambda: store.heartbeat([(task.id, "beat", None)]),
    }
    gathered(store, gate, calls)
    assert gate.commits == 2 and len(flushes) == 1  # the enqueue's; the second batch none
    got = store.get(task.id)  # a read flushes only what is durable: nothing left
    assert got is not None and got.pid == 7 and len(flushes) == 1


def test_a_failing_write_rolls_back_alone_and_the_others_commit(store: Store) -> None:
    gate = Gate(store)

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO settings (name, value) VALUES ('half', 'written')")
        raise RuntimeError("boom")

    def twice(conn: sqlite3.Connection) -> None:
        for _ in range(2):  # the second breaks the primary key
            conn.execute("INSERT INTO settings (name, value) VALUES ('dup', 'x')")

    calls: dict[str, Callable[[], Any]] = {
        "first": lambda: store.enqueue(new("a")),
        "before": lambda: store.enqueue(new("b")),
        "bad": lambda: store._group("bad", bad),
        "constraint": lambda: store._group("constraint", twice),
        "after": lambda: store.enqueue(new("c")),
    }
    out = gathered(store, gate, calls)
    assert gate.commits == 2
    assert isinstance(out["bad"], RuntimeError) and str(out["bad"]) == "boom"
    assert isinstance(out["constraint"], sqlite3.IntegrityError)
    assert store.get_setting("half") is None  # their statements before the error rolled back
    assert store.get_setting("dup") is None
    for key in ("first", "before", "after"):
        task = out[key][0]
        assert store.get(task.id) == task
    assert store.counts()["queued"] == 3


def test_a_write_that_fills_the_disk_fails_alone(store: Store) -> None:
    """A full disk may make SQLite roll back the whole transaction: the other writes of
    the batch are run again in a new one, and only the one that did not fit fails."""
    pages = int(store._read("PRAGMA page_count")[0][0])
    store._read(f"PRAGMA max_page_count = {pages + 4}")
    gate = Gate(store)
    huge = [(new(f"h{i}", argv=["y" * 2000]), False) for i in range(300)]
    calls: dict[str, Callable[[], Any]] = {
        "first": lambda: store.enqueue(new("a")),
        "before": lambda: store.enqueue(new("b")),
        "huge": lambda: store.enqueue_many(huge),
        "after": lambda: store.enqueue(new("c")),
    }
    out = gathered(store, gate, calls)
    assert isinstance(out["huge"], StoreError)
    assert out["huge"].code is ErrorCode.STORAGE_ERROR
    assert store.counts()["queued"] == 3
    for key in ("first", "before", "after"):
        assert store.get(out[key][0].id) == out[key][0]
    assert store.quick_check() == "ok"


def test_a_write_that_catches_a_full_disk_itself_still_fails_alone(store: Store) -> None:
    """SQLite may roll the whole transaction back on a full disk, under a write that
    catches the error itself (a best-effort save inside a claim): the writes after it must
    not each commit on their own outside the batch, and none of their callers may be told
    they failed while their rows are on disk."""
    gate = Gate(store)

    def swallows(conn: sqlite3.Connection) -> None:
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        conn.execute(f"PRAGMA max_page_count = {pages + 1}")
        try:
            rows = [(f"k{i}", "y" * 3000) for i in range(20)]
            conn.executemany("INSERT INTO settings (name, value) VALUES (?, ?)", rows)
        except sqlite3.Error:
            pass  # logged and forgotten, as a best-effort write would
        finally:
            conn.execute("PRAGMA max_page_count = 1073741823")

    calls: dict[str, Callable[[], Any]] = {
        "first": lambda: store.enqueue(new("a")),
        "before": lambda: store.enqueue(new("b")),
        "swallows": lambda: store._group("swallows", swallows),
        "after": lambda: store.enqueue(new("c")),
    }
    out = gathered(store, gate, calls)
    assert isinstance(out["swallows"], StoreError), out["swallows"]
    assert out["swallows"].code is ErrorCode.STORAGE_ERROR
    assert "rolled back the transaction during swallows" in out["swallows"].message
    for key in ("first", "before", "after"):
        assert isinstance(out[key], tuple), (key, out[key])
        assert store.get(out[key][0].id) == out[key][0]
    assert store.counts()["queued"] == 3
    assert [s for s in gate.sql if s == "COMMIT"] == ["COMMIT", "COMMIT"]  # no stray commit
    assert store.get_setting("k0") is None


def test_no_caller_returns_before_the_commit_holding_its_write(tmp_path: Path) -> None:
    """Commits are slowed down; each caller, as soon as it returns, looks for its row from
    another connection, which sees committed data only."""
    db = tmp_path / "syncd.db"
    store = Store.open(db)
    real = store._writer.commit
    commits: list[float] = []

    def slow_commit(conn: sqlite3.Connection) -> None:
        time.sleep(0.05)
        real(conn)
        commits.append(time.monotonic())

    store._writer.commit = slow_commit  # type: ignore[method-assign]
    missing: list[int] = []
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        reader = sqlite3.connect(db)
        try:
            for j in range(5):
                task = store.enqueue(new(f"w{k}-{j}"))[0]
                returned = time.monotonic()
                if not reader.execute("SELECT 1 FROM tasks WHERE id = ?", (task.id,)).fetchall():
                    missing.append(task.id)
                if not any(c <= returned for c in commits):
                    missing.append(-task.id)
        except BaseException as exc:
            errors.append(exc)
        finally:
            reader.close()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE * 2)
    store.close()
    assert not errors and not missing
    assert len(commits) < 30  # 30 writes: some shared a commit


CRASH_CHILD = """
import sys, threading
from syncd.core.models import NewTask
from syncd.store.facade import Store
from tests.helpers.writes import DEADLINE, counting_flushes, in_thread, new, wait_until
store = Store.open(sys.argv[1])
lock = threading.Lock()
def run(k):
    for j in range(100000):
        task = store.enqueue(NewTask(source="s", route=f"r{k}", sync_type="x", argv=["true"],
                                     params={"j": j}, priority=5, trigger="manual"))[0]
        with lock:
            print(task.id, flush=True)
for k in range(4):
    threading.Thread(target=run, args=(k,), daemon=True).start()
threading.Event().wait()
"""


def test_kill9_never_loses_an_acknowledged_write(tmp_path: Path) -> None:
    """Four threads enqueue in a child and print each id once its call returned; the child
    is killed with SIGKILL at a varying point. Every printed id is in the file after."""
    db = tmp_path / "syncd.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_no in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CRASH_CHILD, str(db)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert child.stdout is not None
        acked: list[int] = []
        end = time.monotonic() + DEADLINE
        while len(acked) < 50 + 70 * round_no and time.monotonic() < end:
            line = child.stdout.readline()
            if not line:
                break
            acked.append(int(line))
        child.send_signal(signal.SIGKILL)
        acked += [int(x) for x in child.stdout.read().split()]  # printed before the kill
        child.wait(DEADLINE)
        assert len(acked) >= 50, f"round {round_no}: only {len(acked)} writes acknowledged"
        store = Store.open(db)
        try:
            assert store.missing_ids(acked) == set()
            assert store.quick_check() == "ok"
        finally:
            store.close()


def test_a_pid_record_not_waited_for_commits_before_the_finish_queued_after_it(
    store: Store,
) -> None:
    """The task thread queues its pid record and goes on to wait for the child; the finish
    it queues later commits with the record or after it, never before."""
    task = store.enqueue(new())[0]
    assert store.transition(task.id, Status.QUEUED, Status.RUNNING, started_at="t")
    gate = Gate(store)
    out: dict[str, Any] = {}
    first = in_thread(lambda: store.enqueue(new("a")), out, "first")
    assert gate.entered.wait(DEADLINE)
    # The writer is held in a commit: a waiting write could not return now; this one does.
    assert store.set_running_fields(task.id, wait=False, pid=99) is True
    assert store._writer.pending() == 1
    finish = in_thread(
        lambda: store.finish(task.id, Status.COMPLETED, finished_at="f", exit_code=0, error=None),
        out,
        "finish",
    )
    wait_until(lambda: store._writer.pending() == 2, "the finish to queue")
    gate.release.set()
    for t in (first, finish):
        t.join(DEADLINE)
    done = store.get(task.id)
    assert done is not None and (done.status, done.pid) == (Status.COMPLETED, 99)


def test_a_failed_pid_record_not_waited_for_is_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    task = store.enqueue(new())[0]
    assert store.transition(task.id, Status.QUEUED, Status.RUNNING, started_at="t")
    store._writer.post("update", lambda conn: conn.execute("UPDATE nowhere SET x = 1"))
    store.set_running_fields(task.id, pid=5)  # queued after it: done means it has run
    assert any("update failed" in r.getMessage() for r in caplog.records)
    got = store.get(task.id)
    assert got is not None and got.pid == 5


def test_a_hot_write_inside_a_locked_write_joins_its_transaction(store: Store) -> None:
    """A store method that writes under the store lock and calls a hot write must not wait
    for the writer thread (which waits for that lock): the write joins the transaction."""
    with pytest.raises(RuntimeError), store._write("outer"):
        store.enqueue(new("inner"))
        raise RuntimeError("the outer write fails")
    assert store.counts()["queued"] == 0  # rolled back with the outer transaction
    with store._write("outer"):
        task = store.enqueue(new("inner"))[0]
    assert store.get(task.id) == task
    with store._lock:  # held outside any transaction: the write takes one of its own
        task = store.enqueue(new("locked"))[0]
    assert store.get(task.id) == task


def test_a_write_finding_the_writer_idle_runs_in_its_callers_thread(store: Store) -> None:
    """No hand-off to the writer thread and back when nobody else writes (two thread
    wake-ups per write); under contention the writer thread gathers, as above."""
    ran_in: list[int] = []
    store._group("probe", lambda conn: ran_in.append(threading.get_ident()))
    assert ran_in == [threading.get_ident()]


def test_a_posted_write_rides_with_the_next_write_in_its_callers_thread(store: Store) -> None:
    task = store.enqueue(new())[0]
    assert store.transition(task.id, Status.QUEUED, Status.RUNNING, started_at="t")
    gate = Gate(store)
    gate.release.set()
    store.set_running_fields(task.id, wait=False, pid=31)
    store.enqueue(new("b"))
    assert gate.commits == 1  # the posted pid record and the enqueue: one commit
    got = store.get(task.id)
    assert got is not None and got.pid == 31


def test_close_waits_for_a_batch_running_in_a_callers_thread(store: Store) -> None:
    """The connection is closed only after the batch a caller runs itself is committed."""
    gate = Gate(store)
    out: dict[str, Any] = {}
    writer = in_thread(lambda: store.enqueue(new("a")), out, "first")
    assert gate.entered.wait(DEADLINE)
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # held by the caller's batch, not closing under it
    gate.release.set()
    writer.join(DEADLINE)
    closer.join(DEADLINE)
    assert not closer.is_alive()
    assert not isinstance(out["first"], BaseException)
    reopened = Store.open(store.path)
    try:
        assert reopened.get(out["first"][0].id) is not None
    finally:
        reopened.close()


def test_posted_writes_nobody_waits_for_commit_by_themselves(tmp_path: Path) -> None:
    """The writer thread is woken by the first posted write only (it then wakes by itself
    when that write's gather ends); every later one still commits, with it or after."""
    db = tmp_path / "syncd.db"
    store = Store.open(db)
    reader = sqlite3.connect(db)
    try:

        def put(name: str) -> Callable[[sqlite3.Connection], object]:
            return lambda conn: conn.execute(
                "INSERT INTO settings (name, value) VALUES (?, 'x')", (name,)
            )

        for round_no in range(3):
            names = [f"p{round_no}-{i}" for i in range(5)]
            for name in names:
                store._writer.post("update", put(name))
            wait_until(
                lambda names=names: (
                    len(
                        reader.execute(
                            f"SELECT name FROM settings WHERE name IN ({','.join('?' * 5)})", names
                        ).fetchall()
                    )
                    == 5
                ),
                f"round {round_no}'s posted writes to commit",
            )
            wait_until(lambda: store._writer.pending() == 0, "the queue to empty")
    finally:
        reader.close()
        store.close()
