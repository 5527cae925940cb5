"""Waking the dispatch loop never waits for the dispatcher's lock (held across a
finishing task's commit), and the wake still arrives once the lock is free."""

from __future__ import annotations

import threading

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
