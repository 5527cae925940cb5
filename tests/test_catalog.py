"""The shipped catalogs: etc/syncd.toml routes exactly CATALOG.md (67 routes, the old
adapter's fallbacks), its schedules never run an `all` route, no source name appears in the
package's code; the demo catalog loads and its simulated sync runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.config.load import load_config
from syncd.config.model import Config
from syncd.config.routing import RouteTable

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "syncd"


def _genius() -> dict[str, str]:
    models = [
        "leads", "contacts", "jobs", "teams", "users", "appointments", "change_orders",
        "change_order_items", "job_change_orders", "job_change_order_items", "prospects",
        "prospect_sources", "prospect_statuses", "prospect_types", "referrers", "lead_sources",
        "rep_types", "reps", "tags", "tag_groups", "tasks", "task_types", "workflows",
        "workflow_steps", "workflow_step_types", "marketsharp_contacts", "marketsharp_leads",
        "marketsharp_appointments", "all",
    ]  # fmt: skip
    return {m: f"sync_genius_{m}" for m in models}


def _plain(source: str, models: str) -> dict[str, str]:
    return {m: f"sync_{source}_{m}" for m in models.split()}


# CATALOG.md, route by route: (source, sync_type) -> management command.
EXPECTED: dict[str, dict[str, str]] = {
    "genius": _genius(),
    "callrail": _plain(
        "callrail", "calls companies trackers users tags call_tags integrations webhooks"
    ),
    "hubspot": _plain(
        "hubspot", "contacts companies deals line_items owners products tickets associations all"
    ),
    "arrivy": _plain("arrivy", "bookings tasks teams customers users all"),
    "leadconduit": _plain("leadconduit", "leads"),
    "gsheet": _plain("gsheet", "leads spends"),
    "salespro": _plain("salespro", "customers jobs proposals appointments leads users all"),
    "salesrabbit": _plain("salesrabbit", "users leads all"),
    "five9": _plain("five9", "contacts"),
    "marketsharp": _plain("marketsharp", "all"),
}
COUNTS = {
    "genius": 29, "callrail": 8, "hubspot": 9, "salespro": 7, "arrivy": 6, "gsheet": 2,
    "salesrabbit": 3, "leadconduit": 1, "five9": 1, "marketsharp": 1,
}  # fmt: skip
FALLBACKS = {
    "genius": "all", "hubspot": "all", "salespro": "all", "arrivy": "all", "salesrabbit": "all",
    "marketsharp": "all", "callrail": "calls", "gsheet": "leads", "leadconduit": "leads",
    "five9": "contacts",
}  # fmt: skip


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Config:
    stub = tmp_path_factory.mktemp("bin")
    python = stub / "python"
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o755)
    return load_config(REPO / "etc" / "syncd.toml", env={"PATH": str(stub), "HOME": "/nohome"})


def test_expected_table_matches_the_counts() -> None:
    assert {s: len(r) for s, r in EXPECTED.items()} == COUNTS
    assert sum(COUNTS.values()) == 67


def test_every_route_resolves_to_its_command(catalog: Config) -> None:
    table = RouteTable.from_config(catalog)
    assert {s.name: len(s.routes) for s in table.sources()} == COUNTS
    for source, routes in EXPECTED.items():
        for sync_type, command in routes.items():
            res = table.resolve(source, sync_type)
            assert res.rule == "exact"
            assert res.argv == ("python", "manage.py", command), (source, sync_type)
            assert res.route.cwd == Path("/srv/data_warehouse")
            assert res.route.env["DJANGO_SETTINGS_MODULE"] == "data_warehouse.settings"
            assert res.route.env_file == Path("/etc/syncd/secrets.env")


def test_every_fallback_resolves_to_its_command(catalog: Config) -> None:
    table = RouteTable.from_config(catalog)
    for source, fallback in FALLBACKS.items():
        res = table.resolve(source, "no_such_model")
        assert res.rule == "fallback"
        assert res.sync_type == "no_such_model"
        assert res.argv == ("python", "manage.py", EXPECTED[source][fallback]), source


def test_limits_and_warnings(catalog: Config) -> None:
    assert catalog.sources["hubspot"].max_concurrent == 1
    assert catalog.daemon.max_workers == 2
    assert catalog.origins["state_dir"] == "default" and catalog.origins["socket"] == "default"
    # Only machine-dependent paths and the group may warn; nothing else.
    allowed = {"daemon.control_group", "defaults.cwd", "defaults.env_file"}
    assert {w.path for w in catalog.warnings} <= allowed


def test_schedules_use_per_model_routes_only(catalog: Config) -> None:
    table = RouteTable.from_config(catalog)
    schedules = catalog.schedules
    assert len(schedules) == 38
    for s in schedules:
        res = table.resolve(s.source, s.sync_type, s.params)
        assert res.rule == "exact", s.name
        assert res.route.sync_type != "all", s.name
        assert not res.argv[-1].endswith("_all"), s.name
        assert s.overlap.value == "skip", s.name
    every_two = [s for s in schedules if s.cron == "*/2 * * * *"]
    assert len(every_two) > len(schedules) / 2  # "most every 2 minutes"
    assoc = [s for s in schedules if s.sync_type == "associations"]
    assert len(assoc) == 1 and assoc[0].source == "hubspot"
    assert assoc[0].cron != "*/2 * * * *"  # a schedule of its own


def test_every_non_default_line_is_commented() -> None:
    """Route tables, schedule bodies and section headers aside, each setting says why."""
    text = (REPO / "etc" / "syncd.toml").read_text()
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
            continue
        if not stripped or stripped.startswith("#") or section.endswith(".routes]"):
            continue
        if section == "[[schedules]]" and not stripped.startswith("cron"):
            continue
        if stripped.split("=")[0].strip() in {"history_days", "timeout_minutes"}:
            continue  # written at their default
        assert "#" in line, line


def test_no_per_source_code_in_the_package() -> None:
    """Routing is data: no file of the package names a catalog source."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        text = path.read_text(errors="replace").lower()
        for name in EXPECTED:
            if name in text:
                offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert offenders == []


# -- the demo catalog and its simulated sync -------------------------------------------------
def test_demo_catalog_is_packaged_and_linked_from_etc() -> None:
    link = REPO / "etc" / "demo.toml"
    assert link.is_symlink()
    assert os.readlink(link) == "../syncd/data/demo.toml"
    assert link.resolve() == (PACKAGE / "data" / "demo.toml").resolve()


def test_demo_catalog_loads_with_the_real_python() -> None:
    path_env = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {"PATH": path_env, "STATE_DIRECTORY": "/tmp/demo-state", "RUNTIME_DIRECTORY": "/tmp/r"}
    cfg = load_config(PACKAGE / "data" / "demo.toml", env=env)
    assert cfg.daemon.max_workers == 2
    assert cfg.daemon.state_dir == Path("/tmp/demo-state")
    assert cfg.origins["state_dir"] == "default"
    routes = [r for s in cfg.sources.values() for r in s.routes.values()]
    assert 3 <= len(cfg.sources) <= 4 and 6 <= len(routes) <= 10
    for route in routes:
        assert route.argv[:3] == ("python", "-m", "syncd.demo_job")
    assert cfg.warnings == ()
    assert len(cfg.schedules) <= 1


def run_demo_job(fail_rate: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SYNCD_DEMO_SPEED": "1000",
        "SYNCD_DEMO_FAIL_RATE": fail_rate,
    }
    return subprocess.run(
        [sys.executable, "-m", "syncd.demo_job", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_job_succeeds_with_progress() -> None:
    proc = run_demo_job("0", "contacts", "--full", "--since=2025-01-01")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    progress = [line for line in lines if line.startswith("::progress fetched ")]
    assert len(progress) >= 2
    assert progress[-1].endswith(" records")
    assert any(not line.startswith("::") for line in lines)  # ordinary log lines too
    assert "--full" in proc.stdout


def test_demo_job_fails_with_rate_one() -> None:
    proc = run_demo_job("1", "deals")
    assert proc.returncode == 1
    assert "error" in proc.stderr


def test_demo_job_rejects_bad_usage() -> None:
    assert run_demo_job("0").returncode == 2
    proc = run_demo_job("2", "deals")
    assert proc.returncode != 0 and "SYNCD_DEMO_FAIL_RATE" in proc.stderr
