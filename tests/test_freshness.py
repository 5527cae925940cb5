"""Freshness on an injected clock: a route's target, its last success from the store, stale
or not; `freshness_minutes` inherited like the other route keys; the store's lookups are
index seeks, not scans of the history; syncctl's rendering of it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from syncd.config.load import loads_config
from syncd.config.model import ConfigError
from syncd.config.routing import RouteTable
from syncd.core.clock import FakeClock, iso
from syncd.core.models import Status
from syncd.ctl.freshness import freshness_table, stale_line
from syncd.service.freshness import freshness
from syncd.store.facade import NewTask, Store
from syncd.store.success import LAST_SUCCESS_PER_ROUTE, LAST_SUCCESS_WITH_PARAMS

T0 = datetime(2025, 9, 29, 12, 0, tzinfo=timezone.utc)
CONFIG = """
[defaults]
command_prefix = ["true"]
freshness_minutes = 60
[sources.crm]
freshness_minutes = 15
[sources.crm.routes]
contacts = "contacts"
deals = { command = "deals", freshness_minutes = 1440 }
[sources.billing.routes]
invoices = "invoices"
"""


def table(text: str = CONFIG) -> RouteTable:
    return RouteTable.from_config(loads_config(text, base_dir=Path("/")))


def run(
    store: Store, clock: FakeClock, source: str, route: str, status: Status, minutes: float
) -> int:
    """A task of the route that starts now and ends `minutes` later with `status`."""
    new = NewTask(source, route, route, ["true"], {}, 5, "manual")
    task, _ = store.enqueue(new, allow_duplicate=True)
    store.transition(task.id, Status.QUEUED, Status.RUNNING, started_at=iso(clock.now()))
    clock.advance(minutes * 60)
    store.finish(task.id, status, finished_at=iso(clock.now()), exit_code=0, error=None)
    return task.id


def crm_contacts(result: dict[str, object]) -> dict[str, object]:
    rows = result["routes"]
    assert isinstance(rows, list)
    found: dict[str, object] = next(r for r in rows if r["sync_type"] == "contacts")
    return found


def test_freshness_minutes_is_inherited_from_defaults_source_and_route() -> None:
    routes = {(s.name, r.sync_type): r.freshness_minutes for s in table().sources()
              for r in s.routes.values()}  # fmt: skip
    assert routes == {
        ("billing", "invoices"): 60.0,
        ("crm", "contacts"): 15.0,
        ("crm", "deals"): 1440.0,
    }
    with pytest.raises(ConfigError) as err:
        loads_config(CONFIG.replace("= 15", "= 0"), base_dir=Path("/"))
    assert [str(p) for p in err.value.errors] == [
        "sources.crm.freshness_minutes: 0 is not a positive number"
    ]


def test_fresh_then_stale_then_fresh_after_a_completed_run(store: Store, clock: FakeClock) -> None:
    routes = table()
    never = crm_contacts(freshness(routes, store, clock.now()))
    assert never == {
        "source": "crm", "sync_type": "contacts", "target_minutes": 15.0,
        "last_success": None, "age_seconds": None, "stale": True,
    }  # fmt: skip

    first = run(store, clock, "crm", "contacts", Status.COMPLETED, minutes=2)
    row = crm_contacts(freshness(routes, store, clock.now()))
    assert row["stale"] is False and row["age_seconds"] == 120.0
    assert row["last_success"] == {
        "task_id": first,
        "started_at": iso(T0),
        "finished_at": iso(T0 + timedelta(minutes=2)),
    }

    clock.advance(13 * 60)  # 15 min after the start: not yet longer ago than the target
    assert crm_contacts(freshness(routes, store, clock.now()))["stale"] is False
    clock.advance(1)
    assert crm_contacts(freshness(routes, store, clock.now()))["stale"] is True

    run(store, clock, "crm", "contacts", Status.FAILED, minutes=1)  # a failure freshens nothing
    run(store, clock, "crm", "contacts", Status.CANCELLED, minutes=1)
    row = crm_contacts(freshness(routes, store, clock.now()))
    assert row["stale"] is True and row["last_success"]["task_id"] == first  # type: ignore[index]

    started = clock.now()
    second = run(store, clock, "crm", "contacts", Status.COMPLETED, minutes=5)
    row = crm_contacts(freshness(routes, store, clock.now()))
    assert row["stale"] is False and row["age_seconds"] == 300.0
    assert row["last_success"]["task_id"] == second  # type: ignore[index]
    assert row["last_success"]["started_at"] == iso(started)  # type: ignore[index]


def test_only_routes_with_a_target_unless_all(store: Store, clock: FakeClock) -> None:
    text = CONFIG.replace("freshness_minutes = 60\n", "", 1)
    routes = table(text)
    assert [r["sync_type"] for r in freshness(routes, store, clock.now())["routes"]] == [
        "contacts",
        "deals",
    ]
    every = freshness(routes, store, clock.now(), all_routes=True)["routes"]
    assert [(r["source"], r["sync_type"], r["stale"]) for r in every] == [
        ("billing", "invoices", False),  # no target: never stale
        ("crm", "contacts", True),
        ("crm", "deals", True),
    ]
    assert json.loads(json.dumps(every)) == every  # the op's reply as is


def test_the_last_success_is_the_latest_start_across_params(store: Store, clock: FakeClock) -> None:
    for params in ({"full": True}, {}, {"since": "x"}):
        new = NewTask("crm", "contacts", "contacts", ["true"], params, 5, "manual")
        task, _ = store.enqueue(new, allow_duplicate=True)
        store.transition(task.id, Status.QUEUED, Status.RUNNING, started_at=iso(clock.now()))
        store.finish(
            task.id, Status.COMPLETED, finished_at=iso(clock.now()), exit_code=0, error=None
        )
        clock.advance(60)
    last = store.last_successes([("crm", "contacts"), ("crm", "deals")])
    assert list(last) == [("crm", "contacts")]
    assert last[("crm", "contacts")].started_at == iso(T0 + timedelta(minutes=2))
    full = store.last_success("crm", "contacts", {"full": True})
    assert full is not None and full.started_at == iso(T0)
    assert store.last_success("crm", "contacts", {"full": False}) is None


def test_the_lookups_are_index_seeks_not_scans(store: Store) -> None:
    plans = {
        "per route": (LAST_SUCCESS_PER_ROUTE, (json.dumps([["crm", "contacts"]]),)),
        "with params": (LAST_SUCCESS_WITH_PARAMS, ("crm", "contacts", "{}")),
    }
    for what, (sql, args) in plans.items():
        plan = [row[3] for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()]
        assert not any(step.startswith("SCAN") and "json_each" not in step for step in plan), what
        assert not any("TEMP B-TREE" in step for step in plan), what  # no sort of the history
        index = "tasks_last_success" if what == "per route" else "tasks_watermark"
        assert any(step.startswith("SEARCH") and index in step for step in plan), (what, plan)


def test_syncctl_rendering() -> None:
    rows = [
        {"source": "crm", "sync_type": "contacts", "target_minutes": 15.0, "stale": True,
         "age_seconds": 3 * 3600.0, "last_success": {"task_id": 7, "started_at": iso(T0),
                                                     "finished_at": iso(T0)}},
        {"source": "crm", "sync_type": "deals", "target_minutes": 1440.0, "stale": True,
         "age_seconds": None, "last_success": None},
        {"source": "billing", "sync_type": "invoices", "target_minutes": None, "stale": False,
         "age_seconds": None, "last_success": None},
    ]  # fmt: skip
    assert freshness_table(rows).splitlines() == [
        "ROUTE             TARGET   LAST SUCCESS (started)   AGE     STATE",
        "crm.contacts      15m 00s  2025-09-29 12:00:00 UTC  3h 00m  STALE",
        "crm.deals         1d 00h   -                        -       STALE (never completed)",
        "billing.invoices  -        -                        -       -",
    ]
    assert [stale_line(r) for r in rows[:2]] == [
        "STALE crm.contacts: last success started 3h 00m ago (target 15m 00s)",
        "STALE crm.deals: never completed (target 1d 00h)",
    ]
