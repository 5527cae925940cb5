"""The `metrics` op, `syncctl metrics` and the `series` op against a real daemon."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from syncd.core.clock import parse_iso
from tests.helpers.daemon import REPO, wait_for


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def syncctl(socket: Any, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from syncd.ctl.main import main; main()", "--socket", str(socket)]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )


def test_counters_gauges_and_histograms_after_real_runs(make_daemon):
    d = make_daemon({"alpha": {"routes": {"a1": "a1", "a2": "a2"}}, "beta": {"routes": {"b": "b"}}})
    ok = d.call("submit", source="alpha", sync_type="a1")["task"]["id"]
    bad = d.call("submit", source="alpha", sync_type="a2", params={"exit": "3"})["task"]["id"]
    d.wait_status(ok, {"completed"})
    d.wait_status(bad, {"failed"})
    d.call("pause")
    for i in range(3):
        d.call("submit", source="beta", sync_type="b", params={"sleep": str(i)})

    out = syncctl(d.socket, "metrics")
    assert out.returncode == 0, out.stderr
    m = samples(out.stdout)
    finished = "syncd_tasks_finished_total"
    assert m[(finished, (("source", "alpha"), ("status", "completed"), ("sync_type", "a1")))] == 1
    assert m[(finished, (("source", "alpha"), ("status", "failed"), ("sync_type", "a2")))] == 1
    assert m[("syncd_tasks_queued", (("source", "beta"),))] == 3
    assert m[("syncd_tasks_queued", (("source", "alpha"),))] == 0
    assert m[("syncd_pool_paused", ())] == 1
    assert m[("syncd_workers_max", ())] == 2
    assert m[("syncd_tasks_running", ())] == 0
    assert m[("syncd_task_duration_seconds_count", (("source", "alpha"),))] == 2
    assert m[("syncd_task_duration_seconds_bucket", (("le", "+Inf"), ("source", "alpha")))] == 2
    assert m[("syncd_task_queue_wait_seconds_count", (("source", "alpha"),))] == 2
    assert m[("syncd_tasks_lost_total", ())] == 0
    ping = d.call("ping")
    assert m[("syncd_build_info", (("version", ping["version"]),))] == 1
    assert m[("process_start_time_seconds", ())] > 1e9
    # No param value ever becomes a label.
    assert not any(v == "3" for _, labels in m for _, v in labels)

    as_json = json.loads(syncctl(d.socket, "metrics", "--json").stdout)
    assert set(as_json) == {"counters", "gauges", "histograms"}

    series = d.call("series")
    assert series["bucket_seconds"] == 900 and len(series["buckets"]) == 96
    assert sum(b["completed"] for b in series["buckets"]) == 1
    assert sum(b["failed"] for b in series["buckets"]) == 1
    # The loop samples the queue depth when it starts, so the current bar has a value.
    assert series["buckets"][-1]["queued"] is not None


SLOW = {"command": "slow", "timeout_minutes": 0.02}  # killed as timed out after 1.2 s
SEQUENCE_SOURCES = {"alpha": {"routes": {"ok": "ok", "bad": "bad", "slow": SLOW}}}


def test_the_exposition_after_a_known_sequence_of_tasks(make_daemon):
    """2 completed, 1 failed, 1 timed out, then 1 lost across a kill -9: the exposition,
    parsed by prometheus_client, says exactly that at each step, and the last success (read
    from the history) survives the restart while the counters start anew."""
    d = make_daemon({**SEQUENCE_SOURCES, "beta": {"routes": {"long": "long"}}})
    ok = [d.call("submit", source="alpha", sync_type="ok", params={"record": str(i)},
                 allow_duplicate=True)["task"]["id"] for i in range(2)]  # fmt: skip
    bad = d.call("submit", source="alpha", sync_type="bad", params={"exit": "3"})["task"]["id"]
    slow = d.call("submit", source="alpha", sync_type="slow", params={"sleep": "60"})["task"]["id"]
    for i in ok:
        d.wait_status(i, {"completed"})
    d.wait_status(bad, {"failed"})
    timed_out = d.wait_status(slow, {"failed"}, timeout=60)
    assert "timeout" in (timed_out["error"] or "")
    m = samples(syncctl(d.socket, "metrics").stdout)
    finished = "syncd_tasks_finished_total"
    assert m[(finished, (("source", "alpha"), ("status", "completed"), ("sync_type", "ok")))] == 2
    assert m[(finished, (("source", "alpha"), ("status", "failed"), ("sync_type", "bad")))] == 1
    assert m[(finished, (("source", "alpha"), ("status", "failed"), ("sync_type", "slow")))] == 1
    assert m[("syncd_timeouts_total", ())] == 1
    assert m[("syncd_stale_kills_total", ())] == 0
    assert m[("syncd_task_duration_seconds_count", (("source", "alpha"),))] == 4

    long = d.call("submit", source="beta", sync_type="long", params={"sleep": "600"})["task"]["id"]
    d.wait_status(long, {"running"})
    d.stop(signal.SIGKILL)
    d.start()
    assert d.task(long)["status"] in ("failed", "queued", "running")  # lost, then requeued
    d.call("pause")
    m = samples(syncctl(d.socket, "metrics").stdout)
    assert m[("syncd_tasks_lost_total", ())] == 1
    gauge = "syncd_route_last_success_timestamp_seconds"
    last = m[(gauge, (("source", "alpha"), ("sync_type", "ok")))]
    started = max(parse_iso(d.task(i)["started_at"]).timestamp() for i in ok)
    assert abs(last - started) < 0.01
    assert (gauge, (("source", "alpha"), ("sync_type", "bad"))) not in m  # never completed
    assert all(v == 0 for k, v in m.items() if k[0] == finished)  # a new life counts anew


def test_schedule_fires_are_counted(make_daemon):
    d = make_daemon(
        schedules=[
            {"name": "every-minute", "cron": "* * * * *", "source": "alpha", "sync_type": "a1"}
        ]
    )
    d.call("schedule_run", name="every-minute")
    d.call("schedule_run", name="every-minute")  # the first is queued or running: skipped
    m = d.call("metrics")["counters"]["syncd_schedule_fires_total"]["samples"]
    fires = {s["labels"]["outcome"]: s["value"] for s in m}
    assert sum(fires.values()) == 2 and fires.get("queued", 0) >= 1


def test_throughput_series_survives_a_restart(make_daemon):
    d = make_daemon()
    ok = d.call("submit", source="alpha", sync_type="a1")["task"]["id"]
    d.wait_status(ok, {"completed"})
    d.stop()
    d.start()
    series = d.call("series")["buckets"]
    assert sum(b["completed"] for b in series) == 1
    # Counters are since this start.
    finished = d.call("metrics")["counters"]["syncd_tasks_finished_total"]["samples"]
    assert finished == []


def test_mutations_are_logged_with_who_relayed_them(make_daemon):
    d = make_daemon()
    conn = d.conn()
    try:
        line = {"v": 1, "id": 1, "op": "pause", "args": {}, "via": "web from 10.1.2.3"}
        conn.send_raw(json.dumps(line).encode() + b"\n")
        assert conn.read_reply()["ok"] is True
        bad = dict(line, via="x\ny")
        conn.send_raw(json.dumps(bad).encode() + b"\n")
        reply = conn.read_reply()
        assert reply["error"]["code"] == "bad_request" and "via" in reply["error"]["message"]
    finally:
        conn.close()
    wait_for(lambda: "pause by " in d.stderr(), 10, "the pause log line")
    assert " via web from 10.1.2.3 " in d.stderr()
