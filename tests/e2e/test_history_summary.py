"""`syncctl history --failed / --summary` and `show` (every field, argv, the route rule):
the arithmetic as pure functions, the requests against a fake daemon, the whole path
against a real one."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from syncd.ctl import waiting
from syncd.ctl.main import main as syncctl
from tests.helpers.daemon import JOB, DaemonProc
from tests.helpers.fake_daemon import FakeDaemon
from tests.helpers.rows import task


def run_(seconds: float, status: str = "completed", n: int = 0, **kw: object) -> dict[str, object]:
    minute, sec = divmod(int(seconds), 60)
    return task(
        n,
        "crm",
        "contacts",
        status=status,
        started_at="2025-09-29T10:00:00Z",
        finished_at=f"2025-09-29T10:{minute:02d}:{sec:02d}Z",
        **kw,
    )


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 21)]
    assert waiting.nearest_rank(values, 50) == 10
    assert waiting.nearest_rank(values, 95) == 19
    assert waiting.nearest_rank([7.0], 95) == 7
    assert waiting.nearest_rank([], 50) is None
    assert waiting.nearest_rank([3.0, 1.0, 2.0], 50) == 2  # unsorted input


def test_history_summary_per_route() -> None:
    tasks = [run_(s, n=i) for i, s in enumerate([10, 20, 30, 40, 600])]
    tasks.append(run_(5, status="failed", n=9, error="boom"))
    tasks.append(dict(run_(0, status="cancelled", n=10), started_at=None))  # never started
    tasks.append(task(11, "crm", "deals", route="all", status="failed", finished_at="x"))
    rows = waiting.history_summary(tasks)
    assert [r["route"] for r in rows] == ["crm.all", "crm.contacts"]
    contacts = rows[1]
    assert (contacts["runs"], contacts["failures"]) == (7, 1)
    assert (contacts["p50_seconds"], contacts["p95_seconds"]) == (20.0, 600.0)
    assert contacts["last_success"] == "2025-09-29T10:10:00Z"
    assert rows[0]["last_success"] is None and rows[0]["p50_seconds"] is None
    table = waiting.summary_table(rows).splitlines()
    assert table[0].split() == ["ROUTE", "RUNS", "FAILED", "P50", "P95", "LAST", "SUCCESS"]
    assert table[1].split() == ["crm.all", "1", "1", "-", "-", "never"]
    assert table[2].split() == [
        *("crm.contacts", "7", "1", "20s", "10m", "00s", "2025-09-29", "10:10:00", "UTC"),
    ]
    assert waiting.summary_table([]) == "no finished runs"


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    folder = Path(tempfile.mkdtemp(prefix="shs-"))
    daemon = FakeDaemon(folder / "syncd.sock")
    yield daemon
    daemon.close()
    shutil.rmtree(folder, ignore_errors=True)


def cli(sock: Path, *args: str) -> Result:
    env = {"SYNCD_SOCKET": None, "SYNCD_CONFIG": None, "SYNCCTL_DEBUG": None}
    return CliRunner().invoke(syncctl, [*args, "--socket", str(sock)], env=env)


@pytest.mark.parametrize(
    ("argv", "args"),
    [
        (["--failed"], {"status": ["failed"]}),
        (["--failed", "--status", "failed"], {"status": ["failed"]}),
        (["--status", "cancelled", "--failed"], {"status": ["cancelled", "failed"]}),
        (["--summary"], {"limit": 10000}),
        (["--summary", "--failed", "--limit", "50"], {"status": ["failed"], "limit": 50}),
    ],
)
def test_history_requests(fake: FakeDaemon, argv: list[str], args: dict[str, object]) -> None:
    fake.results["history"] = {"tasks": [run_(30)]}
    result = cli(fake.path, "history", *argv)
    assert result.exit_code == 0, result.output
    assert fake.requests[0]["args"] == args


def test_history_summary_json(fake: FakeDaemon) -> None:
    fake.results["history"] = {"tasks": [run_(30), run_(90, status="failed")]}
    result = cli(fake.path, "history", "--summary", "--json")
    data = json.loads(result.output)
    assert data["runs"] == 2
    assert data["routes"] == [
        {
            "route": "crm.contacts",
            "runs": 2,
            "failures": 1,
            "p50_seconds": 30.0,
            "p95_seconds": 90.0,
            "last_success": "2025-09-29T10:00:30Z",
        }
    ]


def test_show_names_the_rule() -> None:
    exact = waiting.task_show(task(1, "crm", "contacts")).splitlines()
    assert "route           contacts (exact)" in exact
    fallback = waiting.task_show(task(2, "crm", "deals", route="all")).splitlines()
    assert "route           all (fallback: no route for 'deals')" in fallback
    assert "argv            python manage.py sync_crm_deals" in fallback
    assert sorted(line.split()[0] for line in fallback) == sorted(task(2, "crm", "deals"))
    retry = {**task(3, "crm", "deals"), "trigger": "retry:2", "status": "queued"}
    followed = waiting.task_show(task(2, "crm", "deals"), retry).splitlines()
    assert followed[-1] == "followed by: task 3 (retry, queued)"


def test_against_a_real_daemon(make_daemon: Callable[..., DaemonProc]) -> None:
    d = make_daemon({"alpha": {"fallback": "a1", "routes": {"a1": "a1", "a2": "a2"}}})
    ids = []
    for sync_type, params in [("a1", {}), ("a1", {"exit": "3"}), ("zzz", {}), ("a2", {})]:
        r = d.call("submit", source="alpha", sync_type=sync_type, params=params)
        ids.append(r["task"]["id"])
        d.wait_status(ids[-1], {"completed", "failed"})

    out = cli(d.socket, "history", "--summary").output.splitlines()
    rows = {line.split()[0]: line.split()[1:3] for line in out[1:]}
    assert rows == {"alpha.a1": ["3", "1"], "alpha.a2": ["1", "0"]}

    failed = cli(d.socket, "history", "--failed", "--since", "1h").output.splitlines()
    assert [int(line.split()[0]) for line in failed[1:]] == [ids[1]]

    show = cli(d.socket, "show", str(ids[2])).output.splitlines()
    assert any(line.split()[:2] == ["sync_type", "zzz"] for line in show)
    assert any(
        line.split() == ["route", "a1", "(fallback:", "no", "route", "for", "'zzz')"]
        for line in show
    )
    argv = next(line for line in show if line.startswith("argv"))
    assert argv.split()[-2:] == [str(JOB), "a1"]  # the resolved argv, prefix and all
