"""Waking the dispatch loop never waits for the dispatcher's lock (held across a
finishing task's commit), and the wake still arrives once the lock is free."""

from __future__ import annotations

import threading

import pytest

from syncd.pool.waker import Waker

DEADLINE = 20.0


def test_a_wake_while_the_lock_is_held_returns_at_once_and_arrives_after() -> None:
    cond = threading.Condition()
    waker = Waker(cond, idle=0.05)
    waiting, hold, holding, release = (threading.Event() for _ in range(4))
    woke: list[bool] = []

    def waiter() -> None:
        with cond:
            waiting.set()
            woke.append(cond.wait(DEADLINE))

    def holder() -> None:
        hold.wait(DEADLINE)
        with cond:
            holding.set()
            release.wait(DEADLINE)

    threads = [threading.Thread(target=waiter), threading.Thread(target=holder)]
    for t in threads:
        t.start()
    assert waiting.wait(DEADLINE)
    hold.set()
    assert holding.wait(DEADLINE)
    waker.wake()  # would block until `release` if it waited for the lock
    assert not woke and threads[1].is_alive()
    release.set()
    for t in threads:
        t.join(DEADLINE)
    assert woke == [True]  # notified, not timed out


def test_the_helper_thread_ends_when_idle_and_comes_back() -> None:
    cond = threading.Condition()
    waker = Waker(cond, idle=0.01)
    for _ in range(2):
        with cond:  # held by this thread: wake() from another thread defers
            t = threading.Thread(target=waker.wake)
            t.start()
            t.join(DEADLINE)
            helper = waker._thread
            assert helper is not None
        helper.join(DEADLINE)  # delivered, idle, gone
        assert not helper.is_alive() and waker._thread is None


def test_a_wake_while_nobody_waits_is_kept_until_the_loop_takes_it() -> None:
    """The loop is busy (in its tick) when the wake comes: the notify reaches nobody, so
    the loop must see the wake before it waits, or it sleeps to its next deadline with a
    claimed task not started (seen: a task claimed by a submit, heartbeat 600 s)."""
    cond = threading.Condition()
    waker = Waker(cond, idle=0.01)
    with cond:
        assert not waker.take()  # nothing asked yet: the loop may wait
    waker.wake()  # cond is free and nobody waits: the notify is lost, the wake is not
    with cond:
        assert waker.take()
        assert not waker.take()  # taken once
        waker.wake_held()
        assert waker.take()


def test_a_wake_that_cannot_start_its_helper_thread_stays_pending_and_never_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Callers wake the loop right after a commit that claimed tasks: an exception there
    (no threads left to start) stranded those tasks. The wake is kept for the loop's
    next turn instead, and the next wake starts the helper again."""
    cond = threading.Condition()
    waker = Waker(cond, idle=0.01)
    go, done = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def caller() -> None:  # started before Thread.start breaks
        assert go.wait(DEADLINE)
        try:
            waker.wake()
        except BaseException as exc:
            failures.append(exc)
        done.set()

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    t = threading.Thread(target=caller)
    t.start()
    with cond:  # held: the caller's wake() must hand the notify to a helper thread
        monkeypatch.setattr(threading.Thread, "start", no_thread)
        go.set()
        assert done.wait(DEADLINE)
        monkeypatch.undo()
        assert failures == [] and waker._thread is None
        assert waker.take()  # the loop still sees the wake before it waits
        again = threading.Thread(target=waker.wake)
        again.start()
        again.join(DEADLINE)
        helper = waker._thread
        assert helper is not None
    t.join(DEADLINE)
    helper.join(DEADLINE)
    assert not helper.is_alive()
