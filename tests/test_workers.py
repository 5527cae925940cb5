"""Worker threads park between task chains and take the next task handed to them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from syncd.pool.workers import Workers

DEADLINE = 20.0


def wait_until(cond: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


class Recorder:
    """Runs items: records which thread ran each; an item may wait for a gate first."""

    def __init__(self) -> None:
        self.ran: dict[str, int] = {}
        self.gates: dict[str, threading.Event] = {}
        self.threads: set[threading.Thread] = set()

    def __call__(self, item: str) -> None:
        self.threads.add(threading.current_thread())
        gate = self.gates.get(item)
        if gate is not None:
            assert gate.wait(DEADLINE)
        self.ran[item] = threading.get_ident()


def workers(rec: Recorder, max_parked: int = 2, park_seconds: float = 60.0) -> Workers[str]:
    return Workers(
        rec, lambda: max_parked, name=lambda item: f"w-{item}", park_seconds=park_seconds
    )


def test_the_next_task_runs_on_the_parked_thread_of_the_last() -> None:
    rec = Recorder()
    pool = workers(rec)
    try:
        assert pool.hand_off("a") is False  # nothing parked: nothing started either
        assert rec.ran == {}
        pool.launch("a")
        wait_until(lambda: pool.parked() == 1, "the thread to park")
        assert pool.hand_off("b") is True
        wait_until(lambda: "b" in rec.ran, "b to run")
        assert rec.ran["b"] == rec.ran["a"]  # no thread started for b
        assert len(rec.threads) == 1
    finally:
        pool.stop()


def test_no_more_threads_park_than_allowed() -> None:
    rec = Recorder()
    pool = workers(rec, max_parked=1)
    rec.gates = {"a": threading.Event(), "b": threading.Event()}
    try:
        pool.launch("a")
        pool.launch("b")  # a runs: b gets a thread of its own
        wait_until(lambda: len(rec.threads) == 2, "both to start")
        rec.gates["a"].set()
        rec.gates["b"].set()
        wait_until(lambda: len(rec.ran) == 2, "both to run")
        wait_until(lambda: sum(t.is_alive() for t in rec.threads) == 1, "one thread to end")
        assert pool.parked() == 1
    finally:
        pool.stop()


def test_a_parked_thread_ends_after_its_idle_time() -> None:
    rec = Recorder()
    pool = workers(rec, park_seconds=0.05)
    pool.launch("a")
    wait_until(lambda: "a" in rec.ran, "a to run")
    (thread,) = rec.threads
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert pool.parked() == 0
    assert pool.hand_off("b") is False


def test_stop_ends_the_parked_threads_and_parks_no_more() -> None:
    rec = Recorder()
    pool = workers(rec)
    rec.gates = {"b": threading.Event()}
    pool.launch("a")
    wait_until(lambda: pool.parked() == 1, "a's thread to park")
    parked = next(iter(rec.threads))
    pool.launch("b")  # runs on the parked thread
    pool.launch("c")  # a new thread
    wait_until(lambda: "c" in rec.ran and pool.parked() == 1, "c's thread to park")
    pool.stop()
    rec.gates["b"].set()  # b's thread ends with its chain instead of parking
    for thread in rec.threads:
        thread.join(DEADLINE)
        assert not thread.is_alive()
    assert rec.ran["b"] == parked.ident
    assert pool.parked() == 0


def test_lowering_the_bound_ends_the_threads_parked_beyond_it_at_once() -> None:
    rec = Recorder()
    bound = [3]
    pool: Workers[str] = Workers(rec, lambda: bound[0], name=lambda item: f"w-{item}")
    try:
        gates = {item: threading.Event() for item in ("a", "b", "c")}
        rec.gates.update(gates)
        for item in gates:  # all three running at once: three threads
            pool.launch(item)
        for gate in gates.values():
            gate.set()
        wait_until(lambda: pool.parked() == 3, "three threads to park")
        assert len(rec.threads) == 3
        bound[0] = 1
        pool.trim()
        assert pool.parked() == 1
        wait_until(lambda: sum(t.is_alive() for t in rec.threads) == 1, "two threads to end")
        assert pool.hand_off("d") is True  # the one left still takes work
        wait_until(lambda: "d" in rec.ran, "d to run")
    finally:
        pool.stop()
