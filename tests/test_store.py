"""Contract suite for the SQLite store, on a real file database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from itertools import product
from pathlib import Path
from typing import Any

import pytest

from syncd.core.clock import FakeClock, iso
from syncd.core.errors import StoreError, StoreUnusable, SyncdError
from syncd.core.models import FINAL, TASK_FIELDS, TRANSITIONS, ErrorCode, NewTask, Status, Task
from syncd.store import migrations
from syncd.store.facade import Store
from syncd.store.requests import Ending, Pick
from tests.helpers.writes import counting_flushes

T0 = datetime(2025, 9, 29, 15, 30, 45, 123456, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[1]


def at(seconds: float) -> str:
    text = iso(T0 + timedelta(seconds=seconds))
    assert text is not None
    return text


DEADLINE = 20.0


def new(source: str = "hubspot", route: str = "contacts", priority: int = 5, **kw: Any) -> NewTask:
    fields: dict[str, Any] = {
        "sync_type": route,
        "argv": ["python", "manage.py", f"sync_{source}_{route}"],
        "params": {},
        "trigger": "manual",
    }
    fields.update(kw)
    return NewTask(source=source, route=route, priority=priority, **fields)


def queued(store: Store, *items: NewTask) -> list[Task]:
    return [store.enqueue(n, allow_duplicate=True)[0] for n in items]


def running(store: Store, item: NewTask | None = None, **fields: Any) -> Task:
    task = queued(store, item or new())[0]
    started = store.transition(task.id, Status.QUEUED, Status.RUNNING, started_at=at(1), **fields)
    assert started is not None
    return started


def in_status(store: Store, status: Status, item: NewTask | None = None) -> Task:
    if status is Status.QUEUED:
        return queued(store, item or new())[0]
    task = running(store, item)
    if status is Status.RUNNING:
        return task
    done = store.transition(task.id, Status.RUNNING, status, exit_code=0, finished_at=at(2))
    assert done is not None
    return done


def raw(store: Store, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return store._conn.execute(sql, params).fetchall()


def dispatch_order(store: Store, now: str | None = None) -> list[int]:
    """Claim everything claimable, in order, the way the dispatcher would."""
    out = []
    while (task := store.next_queued(now or at(0))) is not None:
        store.transition(task.id, Status.QUEUED, Status.RUNNING)
        out.append(task.id)
    return out


# -- enqueue, get, ids ---------------------------------------------------------------------


def test_enqueue_get_round_trip_every_field(store: Store, clock: FakeClock) -> None:
    item = new(
        sync_type="Contacts",
        argv=["python", "manage.py", "sync", "--since=2025-01-01", "--full"],
        params={"since": "2025-01-01", "full": True, "ünï": "cødé"},
        priority=3,
        trigger="schedule:hubspot-contacts",
        attempt=2,
        requested_by="alice",
        not_before=at(60),
        lost_count=1,
    )
    task, coalesced = store.enqueue(item)
    assert coalesced is False
    expected = {
        "id": task.id, "source": "hubspot", "sync_type": "Contacts", "route": "contacts",
        "argv": item.argv, "params": item.params, "priority": 3, "status": "queued",
        "trigger": "schedule:hubspot-contacts", "attempt": 2, "submitted_at": at(0),
        "started_at": None, "finished_at": None, "last_heartbeat": None, "pid": None,
        "exit_code": None, "error": None, "requested_by": "alice", "not_before": at(60),
        "progress": None,
    }  # fmt: skip
    assert set(expected) == set(TASK_FIELDS)
    assert task.to_dict() == expected
    got = store.get(task.id)
    assert got is not None
    assert got.to_dict() == expected
    assert got.internal == {
        "queue_order": task.id, "lost_count": 1, "proc_starttime": None, "boot_id": None,
        "argv_template": None,
        "cancel_requested": 0,
    }  # fmt: skip
    assert task.internal == got.internal
    # canonical params: sorted keys, no spaces
    assert raw(store, "SELECT params FROM tasks")[0][0] == (
        '{"full":true,"since":"2025-01-01","ünï":"cødé"}'
    )

    clock.advance(5)
    started = store.transition(
        task.id, Status.QUEUED, Status.RUNNING,
        started_at=at(5), pid=4242, proc_starttime=987654, boot_id="b00t",
        argv=["python", "manage.py", "sync", "--full"],
    )  # fmt: skip
    assert started is not None
    store.heartbeat([(task.id, at(6), "50%")])
    done, follow = store.finish(
        task.id, Status.FAILED, finished_at=at(7), exit_code=3, error="exit 3"
    )
    assert follow is None
    assert done is not None
    assert done.to_dict() == expected | {
        "status": "failed", "argv": ["python", "manage.py", "sync", "--full"],
        "started_at": at(5), "finished_at": at(7), "last_heartbeat": at(6), "pid": 4242,
        "exit_code": 3, "error": "exit 3", "progress": "50%",
    }  # fmt: skip
    assert done.internal == {
        "queue_order": task.id, "lost_count": 1, "proc_starttime": 987654, "boot_id": "b00t",
        "argv_template": None,
        "cancel_requested": 0,
    }  # fmt: skip
    assert store.get(task.id) == done
    assert store.get(task.id + 1000) is None


def test_ids_are_never_reused(store: Store) -> None:
    tasks = queued(store, new(), new(), new())
    assert [t.id for t in tasks] == [1, 2, 3]
    store.cancel_queued([1, 2, 3], finished_at=at(1))
    deleted, _ = store.prune(older_than=at(100), keep_completed=0, keep_failed=0)
    assert deleted == [1, 2, 3]
    assert raw(store, "SELECT count(*) FROM tasks") == [(0,)]
    assert store.max_id() == 3
    assert queued(store, new())[0].id == 4
    batch = store.enqueue_many([(new(route="a"), False), (new(route="b"), False)])
    assert [t.id for t, _ in batch] == [5, 6]


def test_queued_tasks_a_reload_would_strand(store: Store) -> None:
    """Only queued rows of the routes rejected, without reading every queued row."""
    kept = queued(store, new(route="a"), new(route="b"))
    gone = queued(store, new(route="c", params={"x": "1"}), new(route="c", params={"x": "2"}))
    in_status(store, Status.FAILED, new(route="c"))  # finished: nothing to strand
    other = queued(store, new(source="zendesk", route="c"))
    found = store.queued_ids_of_routes_not_in(lambda source, route: route != "c")
    assert sorted(found) == sorted(t.id for t in [*gone, *other])
    keep_all = store.queued_ids_of_routes_not_in(lambda source, route: True)
    assert keep_all == [] and len(kept) == 2


def test_missing_ids_are_those_without_a_row(store: Store) -> None:
    a, b, c = (t.id for t in queued(store, new(route="a"), new(route="b"), new(route="c")))
    raw(store, "DELETE FROM tasks WHERE id = ?", (b,))
    assert store.missing_ids([a, b, c, c + 1]) == {b, c + 1}
    assert store.missing_ids([]) == set()


def test_ids_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "syncd.db"
    s = Store.open(path)
    queued(s, new(), new())
    s.cancel_queued([1, 2], finished_at=at(1))
    s.prune(older_than=at(100), keep_completed=0, keep_failed=0)
    s.close()
    s = Store.open(path)
    assert queued(s, new())[0].id == 3
    s.close()


# -- dispatch order ------------------------------------------------------------------------


def test_claim_order_priority_then_fifo(store: Store) -> None:
    ids = [t.id for t in queued(store, new(priority=5), new(priority=1), new(priority=5),
                                 new(priority=0), new(priority=1))]  # fmt: skip
    assert dispatch_order(store) == [ids[3], ids[1], ids[4], ids[0], ids[2]]


def test_claim_respects_not_before_and_exclusions(store: Store) -> None:
    later = queued(store, new("a", "x", priority=0, not_before=at(60)))[0]
    a_y = queued(store, new("a", "y", priority=1))[0]
    b_x = queued(store, new("b", "x", priority=2))[0]
    b_y = queued(store, new("b", "y", priority=3))[0]
    now = at(0)
    assert store.next_queued(now) == a_y
    assert store.next_queued(at(60)) == later  # due exactly at not_before
    assert store.next_queued(now, exclude_sources={"a"}) == b_x
    assert store.next_queued(now, exclude_routes=[("a", "y"), ("b", "x")]) == b_y
    assert store.next_queued(now, exclude_sources=["a"], exclude_routes=[("b", "x")]) == b_y
    assert store.next_queued(now, exclude_sources=["a", "b"]) is None
    assert store.next_not_before() == at(60)  # the store's clock is "now"
    assert store.next_not_before(at(60)) is None  # not in the future any more
    store.cancel_queued([later.id], finished_at=now)
    assert store.next_not_before() is None


def test_front_goes_ahead_of_its_priority_only(store: Store) -> None:
    a, b = queued(store, new(route="a"), new(route="b"))
    urgent = queued(store, new(route="u", priority=1))[0]
    c = store.enqueue(new(route="c", front=True))[0]
    d = store.enqueue(new(route="d", front=True))[0]
    e = queued(store, new(route="e"))[0]
    empty = store.enqueue(new(route="f", priority=7, front=True))[0]
    assert empty.internal["queue_order"] == empty.id - 1
    assert [t.id for t in store.tasks_with_status(Status.QUEUED)] == [
        urgent.id, d.id, c.id, a.id, b.id, e.id, empty.id,
    ]  # fmt: skip
    assert store.queued_ids() == dispatch_order(store)


def test_front_in_enqueue_many_sees_earlier_items(store: Store) -> None:
    a = queued(store, new(route="a"))[0]
    results = store.enqueue_many([(new(route="b"), False), (new(route="c", front=True), False)])
    b, c = (t for t, _ in results)
    assert store.queued_ids() == [c.id, a.id, b.id]


# -- coalescing ----------------------------------------------------------------------------


def test_coalescing_rules(store: Store) -> None:
    first, coalesced = store.enqueue(new(priority=5, params={"full": True}, not_before=at(50)))
    assert not coalesced
    again, coalesced = store.enqueue(new(priority=7, params={"full": True}, not_before=at(90)))
    assert coalesced and again.id == first.id
    assert (again.priority, again.not_before) == (5, at(50))
    again, coalesced = store.enqueue(new(priority=2, params={"full": True}, not_before=at(10)))
    assert coalesced and (again.priority, again.not_before) == (2, at(10))
    again, coalesced = store.enqueue(new(priority=9, params={"full": True}))
    assert coalesced and (again.priority, again.not_before) == (2, None)  # None is earliest
    stored = store.get(first.id)
    assert stored is not None and (stored.priority, stored.not_before) == (2, None)
    assert store.next_queued(at(0)) == stored  # the raised priority reorders dispatch

    other_params, coalesced = store.enqueue(new(params={"full": False}))
    assert not coalesced and other_params.id != first.id
    other_route, coalesced = store.enqueue(new(route="deals", params={"full": True}))
    assert not coalesced
    dup, coalesced = store.enqueue(new(params={"full": True}), allow_duplicate=True)
    assert not coalesced and dup.id not in (first.id, other_params.id, other_route.id)
    assert store.counts()["queued"] == 4


def test_running_does_not_coalesce_but_its_follow_up_does(store: Store) -> None:
    run = running(store)
    follow, coalesced = store.enqueue(new())
    assert not coalesced and follow.id != run.id
    again, coalesced = store.enqueue(new(priority=1))
    assert coalesced and again.id == follow.id and again.priority == 1
    assert store.active_for("hubspot", "contacts", {}) == store.get(run.id)
    store.finish(run.id, Status.COMPLETED, finished_at=at(3), exit_code=0, error=None)
    assert store.active_for("hubspot", "contacts", {}) == store.get(follow.id)
    assert store.active_for("hubspot", "deals", {}) is None


def test_enqueue_many_coalesces_within_the_batch(store: Store) -> None:
    existing = queued(store, new(route="old", priority=6))[0]
    results = store.enqueue_many(
        [
            (new(route="a", priority=5), False),
            (new(route="a", priority=3), False),
            (new(route="b"), False),
            (new(route="old", priority=2), False),
            (new(route="a"), True),
            (new(route="a", priority=1), False),
            (new(route="c", params={"x": 1}), False),
            (new(route="c", params={"x": 2}), False),
        ]
    )
    ids = [t.id for t, _ in results]
    flags = [c for _, c in results]
    assert flags == [False, True, False, True, False, True, False, False]
    a, b, dup, c1, c2 = ids[0], ids[2], ids[4], ids[6], ids[7]
    assert ids[1] == ids[5] == a and ids[3] == existing.id
    assert len({a, b, dup, c1, c2, existing.id}) == 6
    assert a < b < dup < c1 < c2  # item order
    stored = {t.id: t for t in store.tasks_with_status(Status.QUEUED)}
    assert stored[a].priority == 1 and stored[existing.id].priority == 2
    assert results[0][0].to_dict() == stored[a].to_dict()
    assert results[3][0].to_dict() == stored[existing.id].to_dict()
    assert store.counts() == {"queued": 6, "running": 0}
    assert store.enqueue_many([]) == []


def test_fifty_threads_enqueueing_the_same_item_make_one_task(store: Store) -> None:
    barrier = threading.Barrier(50)
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            barrier.wait(timeout=10)
            task, coalesced = store.enqueue(new(params={"since": "2025-01-01"}))
            results.append((task.id, coalesced))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(results) == 50
    assert len({task_id for task_id, _ in results}) == 1
    assert sorted(c for _, c in results) == [False] + [True] * 49
    assert raw(store, "SELECT count(*) FROM tasks") == [(1,)]


# -- transitions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "target"), list(product(Status, Status)))
def test_every_transition_against_the_table(store: Store, old: Status, target: Status) -> None:
    task = in_status(store, old)
    if target in TRANSITIONS[old]:
        moved = store.transition(task.id, old, target, error="why")
        assert moved is not None and moved.status is target and moved.error == "why"
        if target in FINAL:
            assert moved.finished_at == at(0)  # defaulted from the store's clock
        # the same event again is a late event: the CAS refuses it
        assert store.transition(task.id, old, target) is None
    else:
        with pytest.raises(ValueError):
            store.transition(task.id, old, target)
    for wrong in Status:
        if wrong is not old and target in TRANSITIONS[wrong]:
            stale = in_status(store, old)
            assert store.transition(stale.id, wrong, target) is None
            assert store.get(stale.id) == stale


def test_late_event_cannot_overwrite_a_final_state(store: Store) -> None:
    task = running(store)
    done, _ = store.finish(task.id, Status.CANCELLED, finished_at=at(3), exit_code=-15,
                           error="cancelled")  # fmt: skip
    assert done is not None and done.status is Status.CANCELLED
    assert store.transition(task.id, Status.RUNNING, Status.FAILED) is None
    late = store.finish(task.id, Status.COMPLETED, finished_at=at(4), exit_code=0, error=None)
    assert late == (None, None)
    assert store.get(task.id) == done
    with pytest.raises(ValueError):
        store.finish(task.id, Status.QUEUED, finished_at=at(4), exit_code=0, error=None)
    with pytest.raises(ValueError):
        store.transition(task.id, Status.RUNNING, Status.FAILED, status="queued")


def test_set_running_fields_only_touches_running_tasks(store: Store) -> None:
    task = running(store)
    assert store.set_running_fields(task.id, pid=77, proc_starttime=5, boot_id="b")
    updated = store.get(task.id)
    assert updated is not None and updated.pid == 77 and updated.internal["boot_id"] == "b"
    other = queued(store, new(route="other"))[0]
    assert store.set_running_fields(other.id, pid=1) is False
    assert store.get(other.id) == other
    with pytest.raises(ValueError):
        store.set_running_fields(task.id, priority=1)


# -- finish, retries, requeues -------------------------------------------------------------


def test_finish_with_retry_is_atomic_and_idempotent(store: Store) -> None:
    task = running(store, new(priority=4, requested_by="bob"))
    retry = new(priority=4, trigger=f"retry:{task.id}", attempt=2, not_before=at(120),
                requested_by="bob")  # fmt: skip
    done, follow = store.finish(
        task.id, Status.FAILED, finished_at=at(3), exit_code=1, error="exit 1", retry=retry
    )
    assert done is not None and done.status is Status.FAILED and done.error == "exit 1"
    assert follow is not None
    assert (follow.status, follow.trigger, follow.attempt, follow.not_before) == (
        Status.QUEUED, f"retry:{task.id}", 2, at(120),
    )  # fmt: skip
    assert store.get(follow.id) == follow
    # a second finish (late event) neither changes the task nor adds a retry
    assert store.finish(task.id, Status.FAILED, finished_at=at(4), exit_code=1, error="x",
                        retry=retry) == (None, None)  # fmt: skip
    assert raw(store, 'SELECT count(*) FROM tasks WHERE "trigger" = ?', (f"retry:{task.id}",)) == [
        (1,)
    ]
    # the retry bypasses coalescing: it is a new row even with a queued twin
    twin_parent = running(store, new(route="twin"))
    twin = queued(store, new(route="twin"))[0]
    _, follow = store.finish(
        twin_parent.id, Status.FAILED, finished_at=at(5), exit_code=1, error="x",
        retry=new(route="twin", trigger=f"retry:{twin_parent.id}", attempt=2),
    )  # fmt: skip
    assert follow is not None and follow.id != twin.id


def test_finish_never_creates_a_follow_up_twice(store: Store) -> None:
    task = running(store)
    existing = queued(store, new(trigger=f"requeue:{task.id}"))[0]
    requeue = new(trigger=f"requeue:{task.id}", front=True)
    done, follow = store.finish(task.id, Status.FAILED, finished_at=at(3), exit_code=None,
                                error="lost: daemon restarted", requeue=requeue)  # fmt: skip
    assert done is not None and follow is None
    assert store.queued_ids() == [existing.id]


def test_finish_rejects_a_follow_up_for_another_task(store: Store) -> None:
    task = running(store)
    with pytest.raises(ValueError):
        store.finish(task.id, Status.FAILED, finished_at=at(3), exit_code=1, error="x",
                     retry=new(trigger="retry:999"))  # fmt: skip
    with pytest.raises(ValueError):
        store.finish(task.id, Status.FAILED, finished_at=at(3), exit_code=1, error="x",
                     retry=new(trigger=f"retry:{task.id}"),
                     requeue=new(trigger=f"requeue:{task.id}"))  # fmt: skip
    assert store.get(task.id) == task


def test_requeue_goes_to_the_front_and_keeps_lost_count(store: Store) -> None:
    waiting = queued(store, new(route="a"), new(route="b"))
    task = running(store, new(route="c"))
    requeue = new(route="c", trigger=f"requeue:{task.id}", front=True, lost_count=2)
    _, follow = store.finish(task.id, Status.FAILED, finished_at=at(3), exit_code=None,
                             error="interrupted by shutdown", requeue=requeue)  # fmt: skip
    assert follow is not None and follow.internal["lost_count"] == 2
    assert store.queued_ids() == [follow.id, waiting[0].id, waiting[1].id]
    assert store.get(follow.id) == follow


FAILPOINT_CHILD = """
import sys
from pathlib import Path
from syncd.core.models import Status
from syncd.store.facade import Store
from syncd.store.requests import Ending, Pick
from syncd.core.models import NewTask
from syncd.pool.sources import SourceState

store = Store.open(Path(sys.argv[1]))
task_id = int(sys.argv[2])
end = dict(finished_at="2025-01-01T00:00:00.000000Z", exit_code=1, error="exit 1",
           retry=NewTask("s", "t", "r", ["x"], {}, 5, f"retry:{task_id}", attempt=2))
if task_id and len(sys.argv) > 3:
    state = ("s", lambda: SourceState(failures=1, last_failure=end["finished_at"]).row())
    ending = Ending(Status.FAILED, **end, source_state=state)
    store.finish_and_claim(task_id, ending, Pick(sys.argv[3]), sys.argv[3])
elif task_id:
    store.finish(task_id, Status.FAILED, **end)
else:
    store.enqueue(NewTask("s", "t", "r", ["x"], {"k": 1}, 5, "manual"))
print("no failpoint fired")
"""


def run_child(
    path: Path, task_id: int, failpoint: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SYNCD_FAILPOINT=failpoint, PYTHONPATH=str(REPO))
    argv = [sys.executable, "-c", FAILPOINT_CHILD, str(path), str(task_id), *extra]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("point", ["finish_before_commit", "finish_after_commit"])
def test_crash_inside_finish_leaves_all_or_nothing(store: Store, point: str) -> None:
    task = running(store)
    child = run_child(store.path, task.id, point)
    assert child.returncode == 99, child.stderr
    retries = raw(store, 'SELECT id FROM tasks WHERE "trigger" = ?', (f"retry:{task.id}",))
    after = store.get(task.id)
    assert after is not None
    if point == "finish_before_commit":
        assert after.status is Status.RUNNING and retries == []
    else:
        assert after.status is Status.FAILED and len(retries) == 1
    assert store.quick_check() == "ok"


@pytest.mark.parametrize("point", ["finish_before_commit", "finish_after_commit"])
def test_crash_inside_finish_and_claim_leaves_all_or_nothing(store: Store, point: str) -> None:
    task = running(store)
    waiting = queued(store, new(route="other"))[0]
    child = run_child(store.path, task.id, point, at(5))
    assert child.returncode == 99, child.stderr
    after, claimed = store.get(task.id), store.get(waiting.id)
    assert after is not None and claimed is not None
    source = store.source_states().get("s")  # the source's breaker count commits with it
    if point == "finish_before_commit":
        assert (after.status, claimed.status) == (Status.RUNNING, Status.QUEUED)
        assert source is None
    else:
        assert (after.status, claimed.status) == (Status.FAILED, Status.RUNNING)
        assert claimed.started_at == at(5)
        assert source is not None and source["failures"] == 1
        assert source["last_failure"] == "2025-01-01T00:00:00.000000Z"
    assert store.quick_check() == "ok"


def test_finish_and_claim_takes_what_next_queued_would(store: Store) -> None:
    task = running(store, new("a", "x"))
    later = queued(store, new("a", "y", priority=0, not_before=at(60)))[0]
    busy = queued(store, new("b", "x", priority=1))[0]
    free = queued(store, new("b", "y", priority=2))[0]
    pick = Pick(at(10), exclude_routes=[("b", "x")])
    assert store.next_queued(pick.now, exclude_routes=pick.exclude_routes) == free
    ending = Ending(Status.COMPLETED, at(10), 0, None)
    done, follow, claimed = store.finish_and_claim(task.id, ending, pick, at(10))
    assert done is not None and done.status is Status.COMPLETED and follow is None
    assert claimed is not None and claimed.id == free.id
    assert claimed.status is Status.RUNNING and claimed.started_at == at(10)
    assert store.get(free.id) == claimed
    assert [t.id for t in store.tasks_with_status(Status.QUEUED)] == [later.id, busy.id]
    # Nothing fits: the finish still lands, and nothing is claimed.
    ending = Ending(Status.FAILED, at(11), 1, "exit code 1")
    done, _, claimed = store.finish_and_claim(free.id, ending, Pick(at(11), ["b"]), at(11))
    assert done is not None and done.status is Status.FAILED and claimed is None
    assert store.counts().get("running", 0) == 0


def test_crash_after_enqueue_commit_keeps_the_task(store: Store) -> None:
    child = run_child(store.path, 0, "enqueue_after_commit")
    assert child.returncode == 99, child.stderr
    assert [t.params for t in store.tasks_with_status(Status.QUEUED)] == [{"k": 1}]
    assert store.counts()["queued"] == 1


# -- cancel, heartbeat, priority -----------------------------------------------------------


def test_cancel_queued_only_cancels_queued(store: Store) -> None:
    a, b = queued(store, new(route="a"), new(route="b"))
    run = running(store, new(route="c"))
    done = store.cancel_queued([b.id, run.id, a.id, 999, b.id], finished_at=at(9))
    assert [t.id for t in done] == [b.id, a.id]
    assert all(t.status is Status.CANCELLED for t in done)
    cancelled = store.get(a.id)
    assert cancelled is not None
    assert (cancelled.status, cancelled.finished_at) == (Status.CANCELLED, at(9))
    assert store.get(run.id) == run
    assert store.cancel_queued([a.id], finished_at=at(10)) == []
    assert store.counts() == {"queued": 0, "running": 1}


def test_heartbeat_batch_updates_running_tasks_only(store: Store) -> None:
    r1 = running(store, new(route="a"))
    r2 = running(store, new(route="b"))
    q = queued(store, new(route="c"))[0]
    store.heartbeat([(r1.id, at(5), "10%"), (r2.id, at(5), None), (q.id, at(5), "no")])
    store.heartbeat([(r1.id, at(10), None)])
    store.heartbeat([])
    t1, t2, tq = store.get(r1.id), store.get(r2.id), store.get(q.id)
    assert t1 is not None and (t1.last_heartbeat, t1.progress) == (at(10), "10%")
    assert t2 is not None and (t2.last_heartbeat, t2.progress) == (at(5), None)
    assert tq == q


def test_set_priority(store: Store) -> None:
    a, b = queued(store, new(route="a", priority=5), new(route="b", priority=5))
    moved = store.set_priority(b.id, 1)
    assert moved.priority == 1 and store.queued_ids() == [b.id, a.id]
    with pytest.raises(SyncdError) as unknown:
        store.set_priority(999, 1)
    assert unknown.value.code is ErrorCode.UNKNOWN_TASK
    run = running(store, new(route="c"))
    with pytest.raises(SyncdError) as not_queued:
        store.set_priority(run.id, 1)
    assert not_queued.value.code is ErrorCode.NOT_QUEUED
    assert store.get(run.id) == run


# -- list, history -------------------------------------------------------------------------


def finished(store: Store, route: str, status: Status, when: float, **kw: Any) -> Task:
    task = running(store, new(route=route, **kw))
    done, _ = store.finish(task.id, status, finished_at=at(when), exit_code=0, error=None)
    assert done is not None
    return done


def test_list_tasks_order_filters_and_paging(store: Store) -> None:
    old = finished(store, "f0", Status.COMPLETED, 10)
    f1 = finished(store, "f1", Status.FAILED, 300)
    f2 = finished(store, "f2", Status.COMPLETED, 200)
    f3 = finished(store, "f3", Status.CANCELLED, 300, source="other")
    r1 = running(store, new(route="r1"))
    r2 = running(store, new(route="r2", source="other"))
    q1, q2, q3 = queued(store, new(route="q1", priority=6), new(route="q2", priority=2),
                        new(route="q3", priority=6))  # fmt: skip
    q0 = store.enqueue(new(route="q0", priority=6, front=True))[0]
    every = list(Status)
    expected = [r1, r2, q2, q0, q1, q3, f3, f1, f2]  # finished: newest first, ties by id desc
    tasks, total = store.list_tasks(statuses=every, finished_since=at(100))
    assert [t.id for t in tasks] == [t.id for t in expected]
    assert total == len(expected)
    tasks, total = store.list_tasks(statuses=every)
    assert [t.id for t in tasks][-1] == old.id and total == 10

    pages: list[int] = []
    after: int | None = None
    while True:
        page, total = store.list_tasks(statuses=every, finished_since=at(100), limit=2,
                                       after_id=after)  # fmt: skip
        assert total == len(expected) and len(page) <= 2
        if not page:
            break
        pages += [t.id for t in page]
        after = page[-1].id
    assert pages == [t.id for t in expected]

    tasks, total = store.list_tasks(statuses=every, source="other", finished_since=at(100))
    assert [t.id for t in tasks] == [r2.id, f3.id] and total == 2
    tasks, total = store.list_tasks(statuses=[Status.QUEUED], limit=2)
    assert [t.id for t in tasks] == [q2.id, q0.id] and total == 4
    tasks, _ = store.list_tasks(statuses=[Status.QUEUED, Status.FAILED], after_id=q3.id)
    assert [t.id for t in tasks] == [f1.id]
    assert store.list_tasks(statuses=every, after_id=9999) == ([], 10)
    assert [t.id for t in store.tasks_with_status(Status.RUNNING, limit=1)] == [r1.id]
    assert store.queued_ids("other") == []
    assert store.queued_ids("hubspot") == [q2.id, q0.id, q1.id, q3.id]


def test_history_filters(store: Store) -> None:
    a = finished(store, "contacts", Status.COMPLETED, 10)
    b = finished(store, "contacts", Status.FAILED, 20, trigger="schedule:hs")
    c = finished(store, "deals", Status.COMPLETED, 30, source="other", trigger="retry:1")
    d = finished(store, "deals", Status.CANCELLED, 30, trigger="schedule:hs_2")
    running(store, new(route="busy"))
    queued(store, new(route="waiting"))

    def ids(**kw: Any) -> list[int]:
        return [t.id for t in store.history(**kw)]

    assert ids() == [d.id, c.id, b.id, a.id]
    assert ids(limit=2) == [d.id, c.id]
    assert ids(source="other") == [c.id]
    assert ids(sync_type="contacts") == [b.id, a.id]
    assert ids(statuses=[Status.COMPLETED]) == [c.id, a.id]
    assert ids(statuses=[Status.QUEUED, Status.RUNNING]) == []
    assert ids(trigger="schedule:hs") == [b.id]
    assert ids(trigger="schedule") == [d.id, b.id]
    assert ids(trigger="manual") == [a.id]
    assert ids(trigger="sched%") == []
    assert ids(since=at(20)) == [d.id, c.id, b.id]
    assert ids(until=at(20)) == [b.id, a.id]
    assert ids(since=at(15), until=at(25), statuses=[Status.FAILED]) == [b.id]


# -- settings, schedule state --------------------------------------------------------------


def test_settings(store: Store) -> None:
    assert store.get_setting("max_workers") is None
    store.set_setting("max_workers", "4")
    store.set_setting("max_workers", "6")
    store.set_setting("paused", "1")
    assert (store.get_setting("max_workers"), store.get_setting("paused")) == ("6", "1")
    store.set_setting("max_workers", None)
    store.set_setting("never_set", None)
    assert store.get_setting("max_workers") is None and store.get_setting("paused") == "1"


def test_schedule_state(store: Store) -> None:
    assert store.get_schedule_state("hs") is None
    store.put_schedule_state("hs", last_fire=at(0))
    assert store.get_schedule_state("hs") == {
        "last_fire": at(0), "last_outcome": None, "paused": False, "paused_at": None,
    }  # fmt: skip
    outcome = {"kind": "queued", "task_id": 7, "at": at(1)}
    store.put_schedule_state("hs", last_outcome=outcome, paused=True, paused_at=at(2))
    store.put_schedule_state("a-first", paused=False)
    store.put_schedule_state("empty")
    assert store.get_schedule_state("hs") == {
        "last_fire": at(0), "last_outcome": outcome, "paused": True, "paused_at": at(2),
    }  # fmt: skip
    assert store.schedule_state_names() == ["a-first", "empty", "hs"]
    store.delete_schedule_state("hs")
    assert store.get_schedule_state("hs") is None
    assert store.schedule_state_names() == ["a-first", "empty"]
    with pytest.raises(ValueError):
        store.put_schedule_state("hs", next_fire=at(3))


# -- prune, vacuum, counts -----------------------------------------------------------------


def test_prune_keeps_per_route_floors(store: Store) -> None:
    completed = [finished(store, "a", Status.COMPLETED, t) for t in (1, 2, 3, 4, 5)]
    failed = [finished(store, "a", Status.FAILED, t) for t in (1, 2)]
    cancelled = [finished(store, "a", Status.CANCELLED, t) for t in (1, 2)]
    other_source = finished(store, "a", Status.COMPLETED, 1, source="other")
    recent = [finished(store, "b", Status.COMPLETED, t) for t in (1, 2, 3, 500, 600, 700)]
    live = [running(store, new(route="c")), queued(store, new(route="d"))[0]]
    expected = sorted(
        [t.id for t in completed[:2] + failed[:1] + cancelled] + [t.id for t in recent[:3]]
    )
    before = raw(store, "SELECT count(*) FROM tasks")
    plan = store.prune(older_than=at(100), dry_run=True)
    assert plan == (expected, 5)  # 3 completed + 1 failed of a, and other's single one
    assert raw(store, "SELECT count(*) FROM tasks") == before
    assert store.prune(older_than=at(100)) == plan
    remaining = {t for (t,) in raw(store, "SELECT id FROM tasks")}
    assert remaining.isdisjoint(expected)
    assert {completed[4].id, failed[1].id, other_source.id, *(t.id for t in live)} <= remaining
    assert store.prune(older_than=at(100)) == ([], 5)
    assert store.counts() == {"queued": 1, "running": 1}


def test_incremental_vacuum_returns_freed_bytes(store: Store) -> None:
    big = ["x" * 2000]
    ids = [t.id for t, _ in store.enqueue_many(
        [(new(route=f"r{i}", argv=big), False) for i in range(300)])]  # fmt: skip
    store.cancel_queued(ids, finished_at=at(1))
    deleted, _ = store.prune(older_than=at(100))
    assert len(deleted) == 300
    freed = store.incremental_vacuum()
    assert freed >= 300 * 2000
    assert raw(store, "PRAGMA freelist_count") == [(0,)]
    assert store.incremental_vacuum() == 0
    assert store.integrity_check() == "ok" and store.quick_check() == "ok"


def test_counts_match_the_table_after_every_kind_of_change(store: Store) -> None:
    def actual() -> dict[str, int]:
        rows = raw(store, "SELECT status, count(*) FROM tasks GROUP BY status")
        out = {"queued": 0, "running": 0}
        out.update({s: n for s, n in rows if s in out})
        return out

    queued(store, new(route="a"), new(route="b"), new(route="c"))
    store.enqueue_many([(new(route="d"), False), (new(route="a"), False)])
    r = running(store, new(route="e"))
    store.cancel_queued(store.queued_ids()[:1], finished_at=at(1))
    store.finish(r.id, Status.FAILED, finished_at=at(2), exit_code=1, error="x",
                 retry=new(route="e", trigger=f"retry:{r.id}"))  # fmt: skip
    assert store.counts() == actual() == {"queued": 4, "running": 0}
    store.prune(older_than=at(100), keep_completed=0, keep_failed=0)
    running(store, new(route="f"))
    assert store.counts() == actual() == {"queued": 4, "running": 1}


# -- opening, migrations, failures ---------------------------------------------------------


def schema(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()


def test_open_creates_dir_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "syncd.db"
    s = Store.open(path)
    try:
        pragmas = {p: raw(s, f"PRAGMA {p}")[0][0] for p in (
            "journal_mode", "synchronous", "busy_timeout", "foreign_keys", "auto_vacuum",
            "user_version")}  # fmt: skip
        assert pragmas == {
            "journal_mode": "wal", "synchronous": 1, "busy_timeout": 5000, "foreign_keys": 1,
            "auto_vacuum": 2, "user_version": migrations.LATEST,
        }  # fmt: skip
        # NORMAL: the COMMIT does not fsync, the store flushes the WAL itself after each
        # durable commit (tests/test_wal_sync.py, tests/faults/test_durability.py).
    finally:
        s.close()


@pytest.mark.parametrize("start", range(migrations.LATEST))
def test_migrates_from_every_earlier_version(tmp_path: Path, start: int) -> None:
    fresh = Store.open(tmp_path / "fresh.db")
    want = schema(fresh._conn)
    fresh.close()
    path = tmp_path / f"v{start}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    assert migrations.migrate(conn, target=start) == list(range(1, start + 1))
    assert migrations.version(conn) == start
    conn.close()
    s = Store.open(path)
    try:
        assert raw(s, "PRAGMA user_version") == [(migrations.LATEST,)]
        assert schema(s._conn) == want
        task, _ = s.enqueue(new())
        assert s.get(task.id) == task
    finally:
        s.close()
    again = sqlite3.connect(path, isolation_level=None)
    assert migrations.migrate(again) == []  # idempotent
    again.close()


def test_the_deferred_migration_keeps_rows_counters_and_ids(tmp_path: Path) -> None:
    """v1 -> v2 rebuilds the tasks table (its status CHECK gains `deferred`): rows, the
    per-status counters, the id sequence (deleted ids are never reused) and the indexes and
    triggers all carry over."""
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrations.migrate(conn, target=1)
    conn.close()
    # A v1 file with rows, written through a store of that schema: the v2 columns are unused.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executemany(
        "INSERT INTO tasks (source, sync_type, route, argv, params, priority, status,"
        ' "trigger", submitted_at, queue_order) VALUES (?, ?, ?, ?, ?, 5, ?, ?, ?, ?)',
        [("crm", "a", "a", '["x"]', "{}", st, "manual", "2026-01-01T00:00:00Z", i)
         for i, st in enumerate(["queued", "failed", "completed", "queued"])],
    )  # fmt: skip
    conn.execute("UPDATE task_counts SET n = 2 WHERE status = 'queued'")
    conn.execute("DELETE FROM tasks WHERE id = 4")  # the highest id is gone, not forgotten
    conn.close()
    s = Store.open(path)
    try:
        assert [t.id for t in s.tasks_with_status(Status.QUEUED)] == [1]
        assert s.counts() == {"queued": 1, "running": 0}
        assert s.queued_by_source() == {"crm": 1}  # counted once by the migration
        assert s.max_id() == 4
        task, _ = s.enqueue(new())
        assert task.id == 5
        running = s.transition(task.id, Status.QUEUED, Status.RUNNING)
        assert running is not None
        later = NewTask.follow_up(running, f"defer:{task.id}", not_before=at(60))
        done, follow = s.finish(
            task.id, Status.DEFERRED, finished_at=at(1), exit_code=75, error="x", defer=later
        )
        assert done is not None and done.status is Status.DEFERRED
        assert follow is not None and (follow.trigger, follow.not_before) == ("defer:5", at(60))
        assert raw(s, "SELECT n FROM task_counts WHERE status = 'deferred'") == [(1,)]
        names = {r[0] for r in raw(s, "SELECT name FROM sqlite_master WHERE tbl_name = 'tasks'")}
        assert {"tasks_queue", "tasks_source_queue", "tasks_count_update"} <= names
    finally:
        s.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "syncd.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {migrations.LATEST + 1}")
    conn.close()
    with pytest.raises(StoreUnusable, match="newer"):
        Store.open(path)


def test_garbage_file_is_unusable_and_named(tmp_path: Path) -> None:
    path = tmp_path / "syncd.db"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    with pytest.raises(StoreUnusable) as err:
        Store.open(path)
    assert err.value.path == str(path) and str(path) in str(err.value)
    assert "not a database" in err.value.problem and err.value.hint


def test_corrupt_page_is_unusable(tmp_path: Path) -> None:
    path = tmp_path / "syncd.db"
    s = Store.open(path)
    s.enqueue_many([(new(params={"n": i}), False) for i in range(300)])
    s.close()
    data = bytearray(path.read_bytes())
    data[4096] ^= 0xFF  # first byte of page 2
    path.write_bytes(bytes(data))
    with pytest.raises(StoreUnusable) as err:
        Store.open(path)
    assert err.value.path == str(path)
    assert "quick_check" in err.value.problem or "malformed" in err.value.problem


def make_read_only(target: Path) -> Callable[[], None]:
    """chattr +i as root (root ignores modes), chmod otherwise; returns the undo."""
    if os.geteuid() != 0:
        mode = target.stat().st_mode
        target.chmod(0o555 if target.is_dir() else 0o444)
        return lambda: target.chmod(mode)
    done = subprocess.run(["chattr", "+i", str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make {target} immutable: {done.stderr!r}")

    def undo() -> None:
        subprocess.run(["chattr", "-i", str(target)], check=True)

    return undo


@pytest.mark.parametrize("what", ["file", "dir"])
def test_read_only_database_is_unusable(tmp_path: Path, what: str) -> None:
    path = tmp_path / "state" / "syncd.db"
    s = Store.open(path)
    queued(s, new())
    s.close()
    undo = make_read_only(path if what == "file" else path.parent)
    try:
        with pytest.raises(StoreUnusable) as err:
            Store.open(path)
        assert err.value.path == str(path)
        assert "writable" in err.value.hint
    finally:
        undo()
    s = Store.open(path)  # usable again once writable
    assert s.counts()["queued"] == 1
    s.close()


def test_state_dir_that_cannot_be_created_is_unusable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreUnusable):
        Store.open(tmp_path / "file" / "syncd.db")


def test_lock_held_longer_than_busy_timeout_is_busy(tmp_path: Path) -> None:
    path = tmp_path / "syncd.db"
    s = Store.open(path, busy_timeout_ms=100)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(StoreError) as err:
            s.enqueue(new())
        assert err.value.code is ErrorCode.BUSY
        assert time.monotonic() - started >= 0.09
        with pytest.raises(StoreError):
            s.heartbeat([(1, at(1), None)])
        assert s.counts()["queued"] == 0  # reads are not blocked by the writer (WAL)
        other.execute("COMMIT")
        task, _ = s.enqueue(new())
        assert s.get(task.id) == task
    finally:
        other.close()
        s.close()


def test_a_caller_queued_behind_a_stuck_write_answers_within_one_busy_timeout(
    tmp_path: Path,
) -> None:
    """A foreign lock outlives busy_timeout; one write waits on it holding the store lock,
    a second arrives behind it. The second answers `busy` after one busy_timeout in all,
    not after the first's wait plus a whole busy_timeout of its own (2x before)."""
    path = tmp_path / "syncd.db"
    s = Store.open(path, busy_timeout_ms=1000)
    other = sqlite3.connect(path, isolation_level=None)
    outcomes: dict[str, Any] = {}

    def write(name: str) -> None:
        started = time.monotonic()
        try:
            s.set_setting(name, "x")
            outcomes[name] = ("ok", time.monotonic() - started)
        except StoreError as exc:
            outcomes[name] = (exc.code, time.monotonic() - started)

    try:
        other.execute("BEGIN IMMEDIATE")
        first = threading.Thread(target=write, args=("first",))
        first.start()
        deadline = time.monotonic() + 5  # until the first holds the store lock (and waits)
        while s._lock.acquire(blocking=False):
            s._lock.release()
            assert time.monotonic() < deadline, "the first write never took the store lock"
            time.sleep(0.001)
        write("second")
        first.join(10)
    finally:
        other.execute("ROLLBACK")
        other.close()
        s.close()
    assert outcomes["first"][0] is ErrorCode.BUSY
    code, waited = outcomes["second"]
    assert code is ErrorCode.BUSY
    assert 0.9 <= waited < 1.4, f"busy after {waited:.2f} s; budget 1 s (2x would be 2 s)"


def test_full_disk_is_storage_error_and_nothing_half_written(store: Store) -> None:
    queued(store, new(route="before"))
    pages = raw(store, "PRAGMA page_count")[0][0]
    raw(store, f"PRAGMA max_page_count = {pages + 2}")
    items = [(new(route=f"r{i}", argv=["y" * 500]), False) for i in range(200)]
    with pytest.raises(StoreError) as err:
        store.enqueue_many(items)
    assert err.value.code is ErrorCode.STORAGE_ERROR
    assert raw(store, "SELECT count(*) FROM tasks") == [(1,)]
    assert store.counts() == {"queued": 1, "running": 0}
    raw(store, "PRAGMA max_page_count = 1073741823")
    assert len(store.enqueue_many(items)) == 200
    assert store.counts()["queued"] == 201 and store.quick_check() == "ok"


# -- performance and query plans -----------------------------------------------------------


def plans(store: Store, call: Callable[[], object]) -> str:
    """EXPLAIN QUERY PLAN of every SELECT a store call runs, as one text."""
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        store._conn.set_trace_callback(None)
    out = []
    for sql in seen:
        if sql.lstrip().upper().startswith("SELECT"):
            rows = store._conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            out.append(" | ".join(r[-1] for r in rows))
    return "\n".join(out)


def vm_steps(store: Store, call: Callable[[], object]) -> int:
    """How much work SQLite did for a call, in hundreds of VM instructions: a measure of
    a plan's cost that does not depend on the machine's speed."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    store._conn.set_progress_handler(tick, 100)
    try:
        call()
    finally:
        store._conn.set_progress_handler(None, 0)
    return count[0]


def test_a_history_page_after_a_cursor_costs_what_the_first_page_does(store: Store) -> None:
    """The cursor written as an OR of two terms had SQLite walk most of the history for
    each page after the first (0.7 s per page at 300k finished rows; 450x the first
    page's work here)."""
    store.enqueue_many([(new(params={"n": i}), False) for i in range(20_000)])
    for i in range(200):  # a hundred rows share each finish time, as after bulk cancels
        store.cancel_queued_page(finished_at=at(i), limit=100, up_to_id=100_000)
    first = store.history(limit=50)
    cursor = (first[-1].finished_at or "", first[-1].id)
    first_cost = vm_steps(store, lambda: store.history(limit=50))
    page_cost = vm_steps(store, lambda: store.history(limit=50, before=cursor))
    assert page_cost <= 3 * first_cost + 10, (first_cost, page_cost)
    assert [t.id for t in store.history(limit=50, before=cursor)] == [
        t.id for t in store.history(limit=100)[50:]
    ]


def test_performance_smoke_at_100k_queued(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "syncd.db")
    sources = [f"s{i}" for i in range(10)]
    items = [
        (new(sources[i % 10], f"r{i % 7}", priority=i % 10, params={"n": i}), False)
        for i in range(100_000)
    ]
    started = time.perf_counter()
    results = s.enqueue_many(items)
    assert time.perf_counter() - started < 60  # 3-7 s on a busy 2-core box
    assert len({t.id for t, _ in results}) == 100_000
    s.close()
    s = Store.open(tmp_path / "syncd.db")  # close ran PRAGMA optimize: plans with stats
    try:
        now = at(0)
        for call in (
            lambda: s.next_queued(now),
            lambda: s.next_queued(now, exclude_sources=["s0"], exclude_routes=[("s1", "r1")]),
            lambda: s.counts(),
            lambda: s.tasks_with_status(Status.QUEUED, limit=50),
        ):
            call()  # warm
            started = time.perf_counter()
            call()
            assert time.perf_counter() - started < 0.05
        assert s.counts() == {"queued": 100_000, "running": 0}
        claim = plans(s, lambda: s.next_queued(now))
        assert "tasks_queue" in claim and "TEMP B-TREE" not in claim
        coalesce = plans(s, lambda: s.enqueue(new("s3", "r3", params={"n": 3})))
        assert "tasks_active_key" in coalesce and "SCAN tasks" not in coalesce
        assert "tasks_not_before" in plans(s, lambda: s.next_not_before())
        assert "tasks_status" in plans(s, lambda: s.tasks_with_status(Status.RUNNING))
        history = plans(s, lambda: s.history(limit=10))
        assert "tasks_finished" in history and "TEMP B-TREE" not in history

        task = s.transition(1, Status.QUEUED, Status.RUNNING)
        assert task is not None
        follow_up = plans(s, lambda: s.finish(
            1, Status.FAILED, finished_at=at(1), exit_code=1, error="x",
            retry=new("s1", "r1", trigger="retry:1")))  # fmt: skip
        assert "tasks_follow_up" in follow_up and "SCAN tasks" not in follow_up
    finally:
        s.close()


def test_pid_and_heartbeat_commit_without_fsync_and_others_with_it(store: Store) -> None:
    """A pid and a heartbeat mean nothing after a power loss, so they skip the fsync; every
    other write is flushed before it returns."""
    task = running(store, new())
    flushes = counting_flushes(store)
    store.set_running_fields(task.id, pid=123, proc_starttime=9, boot_id="b")
    store.heartbeat([(task.id, at(5), "half")])
    assert flushes == []
    store.finish(task.id, Status.COMPLETED, finished_at=at(9), exit_code=0, error=None)
    assert len(flushes) == 1
    got = store.get(task.id)
    assert got is not None and (got.pid, got.status) == (123, Status.COMPLETED)


def test_a_locked_write_is_flushed_unless_it_is_of_this_boot_only(store: Store) -> None:
    flushes = counting_flushes(store)
    with store._write("x", this_boot_only=True) as conn:
        conn.execute("INSERT INTO settings (name, value) VALUES ('a', '1')")
    assert flushes == []
    with store._write("x") as conn:
        conn.execute("INSERT INTO settings (name, value) VALUES ('b', '1')")
    assert len(flushes) == 1
    with store._write("x"):
        pass  # wrote nothing, saw nothing unflushed: no flush
    assert len(flushes) == 1
    with pytest.raises(ValueError), store._write("x") as conn:
        conn.execute("INSERT INTO settings (name, value) VALUES ('c', '1')")
        raise ValueError("boom")
    assert len(flushes) == 1 and store.get_setting("c") is None


def test_task_to_dict_is_the_protocol_object_and_a_copy(store: Store) -> None:
    task = queued(store, new(params={"since": "2025-01-01"}))[0]
    out = task.to_dict()
    assert list(out) == list(TASK_FIELDS) and "internal" not in out
    assert out["status"] == "queued" and isinstance(out["status"], str)
    out["argv"].append("--evil")
    out["params"]["full"] = True
    assert "--evil" not in task.argv and task.params == {"since": "2025-01-01"}


def test_a_task_claimed_while_a_list_is_read_is_on_the_page(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`list` reads running, then queued, then finished tasks: a claim committed between
    the running and the queued query took the task off both (a crash test lost its
    requeued task that way under load). Every query runs under one hold of the store."""
    task = store.enqueue(new())[0]
    real = store._tasks
    claimed: list[threading.Thread] = []

    def between(*args: Any, **kwargs: Any) -> list[Task]:
        found = real(*args, **kwargs)
        if not claimed:  # after the running tasks' query: the task is claimed now
            t = threading.Thread(
                target=lambda: store.transition(task.id, Status.QUEUED, Status.RUNNING)
            )
            claimed.append(t)
            t.start()
            t.join(0.5)  # without the one hold it commits here; with it, it waits
        return found

    monkeypatch.setattr(store, "_tasks", between)
    page, total = store.list_tasks(statuses=[Status.QUEUED, Status.RUNNING], limit=10)
    claimed[0].join(DEADLINE)
    assert [t.id for t in page] == [task.id] and total == 1
    got = store.get(task.id)
    assert got is not None and got.status is Status.RUNNING  # the claim went through after
