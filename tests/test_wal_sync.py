"""The WAL's fsync taken out of the COMMIT (syncd/store/durable.py): the next batch commits
while a flush is in flight, yet no caller is answered, and no read shows a commit, before a
flush that started after that commit has returned; a failed flush is never forgotten."""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd.core.errors import StoreError
from syncd.core.models import ErrorCode
from syncd.store.durable import WalSync
from syncd.store.facade import Store
from tests.helpers.writes import DEADLINE, counting_flushes, in_thread, new, wait_until


class HeldFlush:
    """Holds each flush of the store's WAL until released; counts them."""

    def __init__(self, sync: WalSync) -> None:
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self.count = 0
        real = sync.flush

        def flush(fd: int) -> None:
            self.count += 1
            self.started.release()
            assert self.release.wait(DEADLINE)
            real(fd)

        sync.flush = flush  # type: ignore[method-assign]

    def wait_started(self) -> None:
        assert self.started.acquire(timeout=DEADLINE), "no flush started"


def committed_ids(db: Path) -> set[int]:
    """What another connection sees: committed rows, durable or not."""
    with sqlite3.connect(db) as other:
        return {row[0] for row in other.execute("SELECT id FROM tasks")}


def enqueue_in_thread(store: Store, route: str, out: dict[str, Any]) -> threading.Thread:
    return in_thread(lambda: store.enqueue(new(route))[0].id, out, route)


def test_a_write_is_answered_only_after_a_flush_that_followed_its_commit(store: Store) -> None:
    held = HeldFlush(store._wal_sync)
    out: dict[str, Any] = {}
    thread = enqueue_in_thread(store, "a", out)
    held.wait_started()
    assert len(committed_ids(store.path)) == 1  # committed: another connection sees it
    assert "a" not in out and thread.is_alive()  # but not answered while the flush runs
    held.release.set()
    thread.join(DEADLINE)
    assert isinstance(out["a"], int) and held.count == 1


def test_the_next_batch_commits_while_a_flush_is_in_flight(store: Store) -> None:
    """The point of it: a finish (here a submit) behind another commit waits for that
    commit's COMMIT, not its fsync. It needs a flush of its own, since the one in flight
    started before it committed."""
    held = HeldFlush(store._wal_sync)
    out: dict[str, Any] = {}
    first = enqueue_in_thread(store, "a", out)
    held.wait_started()
    second = enqueue_in_thread(store, "b", out)
    wait_until(lambda: len(committed_ids(store.path)) == 2, "the second commit")
    assert not out and first.is_alive() and second.is_alive()
    held.release.set()
    for thread in (first, second):
        thread.join(DEADLINE)
    assert isinstance(out["a"], int) and isinstance(out["b"], int)
    assert held.count == 2


def test_a_read_does_not_show_a_commit_before_it_is_flushed(store: Store) -> None:
    held = HeldFlush(store._wal_sync)
    out: dict[str, Any] = {}
    writer = enqueue_in_thread(store, "a", out)
    held.wait_started()
    (task_id,) = committed_ids(store.path)
    reader = in_thread(lambda: store.get(task_id), out, "read")
    reader.join(0.2)  # a bounded look: under load it can only be less far along
    assert reader.is_alive() and "read" not in out  # it waits for the flush in flight
    held.release.set()
    for thread in (writer, reader):
        thread.join(DEADLINE)
    assert out["read"] is not None and out["read"].id == task_id
    assert held.count == 1  # the writer's flush covered the reader too


def test_one_flush_covers_every_commit_made_before_it_started(tmp_path: Path) -> None:
    sync = WalSync(tmp_path / "x.db-wal")
    (tmp_path / "x.db-wal").write_bytes(b"")
    flushes: list[int] = []
    sync.flush = lambda fd: flushes.append(fd)  # type: ignore[method-assign]
    seqs = [sync.after_commit(True) for _ in range(3)]
    sync.wait(seqs[0])
    assert len(flushes) == 1
    sync.wait(seqs[2])
    sync.wait()
    assert len(flushes) == 1  # the first flush started after all three commits
    sync.wait(sync.after_commit(True))
    assert len(flushes) == 2
    sync.close()


def test_waiters_of_one_flush_share_it(tmp_path: Path) -> None:
    sync = WalSync(tmp_path / "x.db-wal")
    (tmp_path / "x.db-wal").write_bytes(b"")
    held = HeldFlush(sync)
    seq = sync.after_commit(True)
    out: dict[str, Any] = {}
    threads = [in_thread(lambda: sync.wait(seq), out, f"w{i}") for i in range(4)]
    held.wait_started()
    held.release.set()
    for thread in threads:
        thread.join(DEADLINE)
    assert held.count == 1 and out == {f"w{i}": None for i in range(4)}


def failing_flush(store: Store) -> Callable[[], int]:
    calls = [0]

    def flush(fd: int) -> None:
        calls[0] += 1
        raise OSError(errno.EIO, "Input/output error")

    store._wal_sync.flush = flush  # type: ignore[method-assign]
    return lambda: calls[0]


def test_a_failed_flush_fails_its_caller_and_everything_after_it(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """After a failed fsync Linux may have dropped the pages it could not write: retrying
    could report success for lost data. The store refuses from then on, loudly."""
    done = store.enqueue(new("before"))[0]
    calls = failing_flush(store)
    with caplog.at_level(logging.CRITICAL), pytest.raises(StoreError) as failed:
        store.enqueue(new("a"))
    assert failed.value.code == ErrorCode.STORAGE_ERROR
    assert "Input/output error" in failed.value.message and "restart syncd" in failed.value.message
    assert any("could not flush" in r.getMessage() for r in caplog.records)
    for later in (lambda: store.enqueue(new("b")), lambda: store.get(done.id)):
        with pytest.raises(StoreError) as again:
            later()
        assert again.value.code == ErrorCode.STORAGE_ERROR
    assert calls() == 1  # never retried


def test_writes_of_this_boot_only_never_wait_for_a_flush(store: Store) -> None:
    task = store.enqueue(new())[0]
    calls = failing_flush(store)
    store.heartbeat([(task.id, "beat", "half")])  # would raise if it waited for a flush
    assert calls() == 0


def test_a_caller_answered_after_the_close_finds_its_commit_synced(tmp_path: Path) -> None:
    """The close flushes every commit made so far before it closes the connection (and
    SQLite deletes the WAL): a late waiter neither syncs nor fails."""
    db = tmp_path / "syncd.db"
    store = Store.open(db)
    seq = store._wal_sync.after_commit(True)  # as if a batch committed just before the close
    store.close()
    assert not Path(f"{db}-wal").exists()
    store._wal_sync.wait(seq)  # no error, nothing to flush
    reopened = Store.open(db)
    reopened.close()


def test_a_database_behind_a_symlink_has_its_wal_flushed(tmp_path: Path) -> None:
    """SQLite keeps the WAL beside the file the link names: the one beside the link would
    never exist (and a missing WAL is an error while the store is open, never "synced")."""
    disk = tmp_path / "disk"
    disk.mkdir()
    Store.open(disk / "syncd.db").close()
    link = tmp_path / "syncd.db"
    link.symlink_to(disk / "syncd.db")
    store = Store.open(link)
    flushes = counting_flushes(store)
    store.enqueue(new("a"))
    assert len(flushes) == 1
    assert Path(f"{disk / 'syncd.db'}-wal").exists() and not Path(f"{link}-wal").exists()
    store.close()


def test_after_a_failed_flush_nothing_more_commits_and_the_close_does_not_checkpoint(
    tmp_path: Path,
) -> None:
    """What may be lost must not be built on: later writes are refused before their
    transaction, and the close leaves the WAL for the restart's recovery, which checks
    every frame, instead of copying pages the kernel may have dropped into the database."""
    db = tmp_path / "syncd.db"
    store = Store.open(db)
    store.enqueue(new("before"))
    failing_flush(store)
    with pytest.raises(StoreError):
        store.enqueue(new("a"))  # committed, then its flush failed
    with pytest.raises(StoreError):
        store.enqueue(new("b"))  # refused before it commits
    with pytest.raises(StoreError):
        store.set_setting("paused", "1")  # the locked path too
    assert committed_ids(db) == {1, 2}
    assert store.durability_lost() is not None
    store.close()
    assert Path(f"{db}-wal").exists()  # not checkpointed away


def test_a_write_that_changed_nothing_waits_for_what_it_saw_without_a_flush(
    store: Store,
) -> None:
    """A coalesced submit writes no row, so it needs no flush of its own, but it answers
    with a task whose commit may still be in flight: it waits for that one."""
    held = HeldFlush(store._wal_sync)
    out: dict[str, Any] = {}
    first = enqueue_in_thread(store, "a", out)
    held.wait_started()
    again = in_thread(lambda: store.enqueue(new("a"))[0].id, out, "again")
    again.join(0.2)  # a bounded look: under load it can only be less far along
    assert again.is_alive() and not out
    held.release.set()
    for thread in (first, again):
        thread.join(DEADLINE)
    assert out["again"] == out["a"] and held.count == 1


def test_the_store_tells_its_owner_once_when_a_flush_fails(store: Store) -> None:
    told: list[str] = []
    store.on_durability_lost(told.append)
    failing_flush(store)
    for route in ("a", "b"):
        with pytest.raises(StoreError):
            store.enqueue(new(route))
    assert len(told) == 1 and "could not flush" in told[0]
