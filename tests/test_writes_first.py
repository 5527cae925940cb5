"""A stream of reads cannot starve the writes: while a write waits for the store lock, new
reads wait behind it (the lock itself is not fair), so a local client looping `history`
on many connections cannot get submits refused `busy` or finishes left unrecorded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from syncd.core.models import NewTask
from syncd.store.facade import Store
from syncd.store.gate import WritesFirst

DEADLINE = 20.0


def new(route: str) -> NewTask:
    return NewTask("s", route, route, ["true"], {}, 5, "manual")


def wait_until(cond: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_reads_in_a_loop_let_a_waiting_write_in_after_the_reads_under_way(
    store: Store,
) -> None:
    """Readers loop as fast as they can (a client looping `history` on several
    connections); a write arrives: only the reads already under way finish before it,
    where the lock alone let them go on and on."""
    for i in range(300):
        store.enqueue(new(f"r{i}"))
    stop = threading.Event()
    reads = [0]
    count = threading.Lock()

    def reader() -> None:
        while not stop.is_set():
            store._read("SELECT count(*), max(length(argv)) FROM tasks")
            with count:
                reads[0] += 1

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for r in readers:
        r.start()
    wait_until(lambda: reads[0] > 20, "the readers to loop")
    before: list[int] = []
    gate = store._writes_first
    real = gate.writing

    @contextmanager
    def writing() -> Iterator[None]:  # the moment the write starts to wait for the lock
        before.append(reads[0])
        with real():
            yield

    gate.writing = writing  # type: ignore[method-assign]
    try:
        store.enqueue(new("w"), allow_duplicate=True)
    finally:
        gate.writing = real  # type: ignore[method-assign]
    after = reads[0]
    stop.set()
    for t in readers:
        t.join(DEADLINE)
        assert not t.is_alive()
    assert len(before) == 1, before
    # Each reader may finish the read it had under way, and one more that ended just
    # before the write arrived but was counted after: without the gate it was dozens.
    assert after - before[0] <= 2 * len(readers), (before, after)


def test_a_read_inside_a_write_does_not_wait_for_the_writes_behind_it(store: Store) -> None:
    """The lock's owner reads in its own transaction: waiting for the writes queued behind
    it would wait for itself."""
    inside, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def write_then_read() -> None:
        with store._write("outer"):
            inside.set()
            assert release.wait(DEADLINE)
            seen.append(store.counts().get("queued", 0))

    outer = threading.Thread(target=write_then_read)
    outer.start()
    assert inside.wait(DEADLINE)
    other = threading.Thread(target=lambda: store.enqueue(new("later")))
    other.start()
    wait_until(lambda: store._writes_first.waiting() == 1, "the other write to wait")
    release.set()
    outer.join(DEADLINE)
    other.join(DEADLINE)
    assert not outer.is_alive() and not other.is_alive()
    assert seen == [0]


def test_a_read_gives_up_busy_if_writes_wait_longer_than_its_timeout() -> None:
    gate = WritesFirst()
    with gate.writing():
        assert gate.let_writes_first(0.05) is False
    assert gate.let_writes_first(0.05) is True
