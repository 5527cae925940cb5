"""`syncd check` and the `syncd` entry point: exit codes, one problem per line with its key
path, warnings and --strict, the --json document, exit 78 on config and database errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from syncd import __version__
from syncd.cli import main
from syncd.config.model import Config
from syncd.core.errors import StoreUnusable
from syncd.daemon.check import render_json, run_check

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def stub_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holds only an executable `python`, so checks do not depend on the machine."""
    d = tmp_path / "bin"
    d.mkdir()
    exe = d / "python"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(d))
    for var in ("SYNCD_CONFIG", "MAX_SYNC_WORKERS", "WORKER_POOL_STALE_MINUTES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    return d


VALID = """
[daemon]
max_workers = 3
[defaults]
command_prefix = ["python", "manage.py"]
[sources.crm]
fallback = "all"
max_concurrent = 1
[sources.crm.routes]
all = "sync_all"
contacts = "sync_contacts"
[sources.billing.routes]
invoices = "sync_invoices"
[[schedules]]
name = "crm-contacts"
cron = "*/2 * * * *"
source = "crm"
sync_type = "contacts"
[[schedules]]
name = "billing-nightly"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
source = "billing"
sync_type = "invoices"
"""

INVALID = """
[daemon]
max_workers = 0
[defaults]
command_prefix = ["python", "manage.py"]
cwd = "/nonexistent/syncd-check"
[sources.crm.routes]
contacts = { argv = ["no-such-binary-anywhere"] }
[[schedules]]
name = "x"
cron = "61 * * * *"
source = "crm"
sync_type = "contacts"
"""

WARN_ONLY = """
[defaults]
command_prefix = ["python"]
env_file = "/nonexistent/syncd-check.env"
[sources.crm.routes]
a = "a"
"""


def write(tmp_path: Path, text: str, name: str = "syncd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_valid_config_exits_0(tmp_path: Path, stub_path: Path) -> None:
    path = write(tmp_path, VALID)
    result = invoke("check", "--config", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines() == [
        f"{path}: OK, 2 sources, 3 routes, 2 schedules, 0 warning(s)"
    ]


def test_invalid_config_exits_1_with_each_problem_on_its_line(
    tmp_path: Path, stub_path: Path
) -> None:
    path = write(tmp_path, INVALID)
    result = invoke("check", "--config", str(path))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "daemon.max_workers: 0 is out of range 1..64",
        "sources.crm.routes.contacts: executable 'no-such-binary-anywhere' not found",
        "schedules[0] (x).cron: minute: 61 is out of range 0-59",
        "warning: defaults.cwd: directory '/nonexistent/syncd-check' does not exist",
    ]
    assert lines[4] == f"{path}: invalid, 3 error(s), 1 warning(s)"


def test_warnings_only_exit_0_and_1_with_strict(tmp_path: Path, stub_path: Path) -> None:
    path = write(tmp_path, WARN_ONLY)
    warning = "warning: defaults.env_file: file '/nonexistent/syncd-check.env' does not exist"
    result = invoke("check", "--config", str(path))
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == warning
    result = invoke("check", "--config", str(path), "--strict")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == warning
    assert "--strict" in result.stdout.splitlines()[-1]


def test_json_shape(tmp_path: Path, stub_path: Path) -> None:
    path = write(tmp_path, VALID)
    result = invoke("check", "--config", str(path), "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert set(doc) == {"valid", "errors", "warnings", "sources", "routes", "schedules"}
    assert (doc["valid"], doc["errors"], doc["warnings"], doc["routes"]) == (True, [], [], 3)
    assert doc["sources"] == [
        {"name": "crm", "routes": 2, "fallback": "all", "max_concurrent": 1},
        {"name": "billing", "routes": 1, "fallback": None, "max_concurrent": None},
    ]
    first = doc["schedules"][0]
    assert {k: first[k] for k in ("name", "cron", "timezone", "source", "sync_type")} == {
        "name": "crm-contacts",
        "cron": "*/2 * * * *",
        "timezone": "UTC",
        "source": "crm",
        "sync_type": "contacts",
    }
    fire = datetime.fromisoformat(first["next_fire"].replace("Z", "+00:00"))
    assert first["next_fire"].endswith("Z")
    now = datetime.now(timezone.utc)
    assert 0 < (fire - now).total_seconds() <= 121 and fire.minute % 2 == 0


def test_json_next_fire_from_a_fixed_now(tmp_path: Path, stub_path: Path) -> None:
    """02:30 Europe/Berlin in January is 01:30 UTC."""
    result = run_check(write(tmp_path, VALID))
    doc = render_json(result, datetime(2026, 1, 10, 12, 0, tzinfo=timezone.utc))
    assert [s["next_fire"] for s in doc["schedules"]] == [
        "2026-01-10T12:02:00.000000Z",
        "2026-01-11T01:30:00.000000Z",
    ]


def test_json_invalid_and_strict(tmp_path: Path, stub_path: Path) -> None:
    result = invoke("check", "--config", str(write(tmp_path, INVALID)), "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["valid"] is False and len(doc["errors"]) == 3 and len(doc["warnings"]) == 1
    assert doc["errors"][0].startswith("daemon.max_workers: ")
    assert (doc["sources"], doc["routes"], doc["schedules"]) == ([], 0, [])
    result = invoke("check", "--config", str(write(tmp_path, WARN_ONLY)), "--json", "--strict")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["valid"] is False and doc["errors"] == [] and len(doc["warnings"]) == 1


def test_config_path_from_group_option_and_env(
    tmp_path: Path, stub_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, VALID)
    assert invoke("--config", str(path), "check").exit_code == 0
    monkeypatch.setenv("SYNCD_CONFIG", str(path))
    result = invoke("check")
    assert result.exit_code == 0 and str(path) in result.stdout
    missing = tmp_path / "missing.toml"
    result = invoke("check", "--config", str(missing))
    assert result.exit_code == 1
    assert f"{missing}: cannot read: No such file or directory" in result.stdout


def test_check_as_a_real_subprocess(tmp_path: Path, stub_path: Path) -> None:
    bad = write(tmp_path, INVALID)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", "from syncd.cli import main; main()", "check", "--config"]
    proc = subprocess.run(
        [*argv, str(bad)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1
    assert "daemon.max_workers: 0 is out of range 1..64" in proc.stdout.splitlines()
    assert "Traceback" not in proc.stderr
    good = write(tmp_path, VALID, "good.toml")
    proc = subprocess.run(
        [*argv, str(good)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- `syncd` itself: exit 78 on config/database problems, no traceback -------------------------
@pytest.fixture
def fake_daemon(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stands in for syncd.daemon.app (another module's job) so the entry point is tested alone."""
    calls: dict[str, Any] = {"result": 0}

    def run_daemon(config: Config) -> int:
        calls["config"] = config
        if isinstance(calls["result"], BaseException):
            raise calls["result"]
        result: int = calls["result"]
        return result

    module = types.ModuleType("syncd.daemon.app")
    module.run_daemon = run_daemon  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "syncd.daemon.app", module)
    return calls


def test_daemon_config_error_exits_78(
    tmp_path: Path, stub_path: Path, fake_daemon: dict[str, Any]
) -> None:
    path = write(tmp_path, INVALID)
    result = invoke("--config", str(path))
    assert result.exit_code == 78
    lines = result.stderr.splitlines()
    assert lines[0] == "daemon.max_workers: 0 is out of range 1..64"
    assert lines[-1] == f"syncd: config error in {path}: 3 problem(s)"
    assert "config" not in fake_daemon  # never started
    assert result.stdout == ""


def test_daemon_runs_with_the_loaded_config(
    tmp_path: Path, stub_path: Path, fake_daemon: dict[str, Any]
) -> None:
    path = write(tmp_path, VALID)
    fake_daemon["result"] = 0
    assert invoke("--config", str(path)).exit_code == 0
    assert fake_daemon["config"].path == path and fake_daemon["config"].daemon.max_workers == 3
    fake_daemon["result"] = 1
    assert invoke("--config", str(path)).exit_code == 1


def test_unusable_database_exits_78_with_one_line(
    tmp_path: Path, stub_path: Path, fake_daemon: dict[str, Any]
) -> None:
    path = write(tmp_path, VALID)
    fake_daemon["result"] = StoreUnusable(
        "/var/lib/syncd/syncd.db", "quick_check: database disk image is malformed", "restore it"
    )
    result = invoke("--config", str(path))
    assert result.exit_code == 78
    assert result.stderr.splitlines() == [
        "syncd: database /var/lib/syncd/syncd.db: quick_check: database disk image is "
        "malformed (restore it)"
    ]


def test_unexpected_error_is_one_line(
    tmp_path: Path, stub_path: Path, fake_daemon: dict[str, Any]
) -> None:
    fake_daemon["result"] = RuntimeError("boom")
    result = invoke("--config", str(write(tmp_path, VALID)))
    assert result.exit_code == 70
    assert result.stderr.splitlines() == ["syncd: internal error: RuntimeError: boom"]


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.stdout
