"""`syncd check --probe` against a real Django project: the commands it has pass, a phantom
is reported with its key path, and a manage.py that cannot answer is reported as such."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from syncd.config.load import load_config
from syncd.pool.probe import ProbeKey, list_commands
from tests.helpers.django_project import ROUTES, config_text, syncd

PHANTOM = {**ROUTES, "hubspot": {**ROUTES["hubspot"], "tickets": "sync_hubspot_tickets"}}


def write(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "syncd.toml"
    config.write_text(text)
    return config


def test_present_commands_pass_and_the_prefix_is_asked_once(
    django_project: Path, tmp_path: Path
) -> None:
    log = tmp_path / "probe.log"
    config = write(tmp_path, config_text(django_project, ROUTES))
    done = syncd("check", "--probe", "--config", str(config), env={"PROBE_LOG": str(log)})
    assert done.returncode == 0, done.stdout + done.stderr
    where = f"'{sys.executable} manage.py' in {django_project}"
    assert f"probe: {where} help --commands: 29 commands listed, 4 route(s) checked" in (
        done.stdout.splitlines()
    )
    assert log.read_text().splitlines() == ["help --commands"]  # four routes, one question


def test_a_phantom_command_is_reported_with_its_key_path(
    django_project: Path, tmp_path: Path
) -> None:
    config = write(tmp_path, config_text(django_project, PHANTOM))
    plain = syncd("check", "--config", str(config))
    assert plain.returncode == 0  # without --probe nobody asks manage.py
    done = syncd("check", "--probe", "--config", str(config))
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == (
        "sources.hubspot.routes.tickets: command 'sync_hubspot_tickets' is not a command of "
        f"'{sys.executable} manage.py' in {django_project}"
    )
    assert "invalid, 1 error(s)" in done.stdout.splitlines()[-1]
    doc = json.loads(syncd("check", "--probe", "--json", "--config", str(config)).stdout)
    assert doc["valid"] is False and len(doc["errors"]) == 1
    (prefix,) = doc["probe"]["prefixes"]
    assert prefix["error"] is None and "sync_hubspot_contacts" in prefix["commands"]
    assert "sources.hubspot.routes.tickets" in prefix["routes"]


def test_settings_that_do_not_load_are_not_reported_as_missing_commands(
    django_project: Path, tmp_path: Path
) -> None:
    # Django answers `help --commands` even then, listing only its own commands.
    text = config_text(django_project, ROUTES).replace("warehouse.settings", "warehouse.nope")
    done = syncd("check", "--probe", "--config", str(write(tmp_path, text)))
    assert done.returncode == 1
    problems = [line for line in done.stdout.splitlines() if line.startswith("sources.")]
    assert problems == [
        f"sources.hubspot.routes.contacts: '{sys.executable} manage.py' in {django_project} "
        "lists only Django's own commands: the project's settings did not load (check "
        "DJANGO_SETTINGS_MODULE, cwd, env and env_file)"
    ]


def broken_project(tmp_path: Path, body: str) -> Path:
    root = tmp_path / "broken"
    root.mkdir(parents=True)
    (root / "manage.py").write_text(body)
    return root


def test_a_manage_py_that_crashes_or_prints_garbage_is_a_probe_failure(
    django_project: Path, tmp_path: Path
) -> None:
    cases = {
        "raise RuntimeError('settings exploded')": "exited 1: RuntimeError: settings exploded",
        "print('Welcome to the warehouse!')": (
            "its output is not a list of commands (it printed 'Welcome to the warehouse!')"
        ),
        "import os; os.kill(os.getpid(), 9)": "killed by SIGKILL",
    }
    for i, (body, why) in enumerate(cases.items()):
        root = broken_project(tmp_path / f"case{i}", body)
        config = write(tmp_path, config_text(root, ROUTES))
        done = syncd("check", "--probe", "--config", str(config))
        assert done.returncode == 1, body
        assert done.stdout.splitlines()[0] == (
            f"sources.hubspot.routes.contacts: cannot ask '{sys.executable} manage.py' in "
            f"{root} for its commands (and 3 more route(s) with this prefix): {why}"
        )
        assert "is not a command of" not in done.stdout and "Traceback" not in done.stdout


def test_a_probe_that_hangs_is_killed_at_its_timeout_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    body = (
        "import subprocess, sys, time\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(kid.pid))\n"
        "time.sleep(600)\n"
    )
    root = broken_project(tmp_path, body)
    cfg = load_config(write(tmp_path, config_text(root, ROUTES)))
    found = ProbeKey.of(cfg.sources["hubspot"].routes["contacts"])
    assert found is not None
    start = time.monotonic()
    listing = list_commands(found[0], {"PATH": "/usr/bin:/bin"}, timeout=1)
    assert listing.error == "timed out after 1 s"
    assert time.monotonic() - start < 30
    kid = int(pidfile.read_text())
    deadline = time.monotonic() + 20
    while Path(f"/proc/{kid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # killed by SIGKILL: gone once its parent (init) reaps it
    assert not Path(f"/proc/{kid}").exists()


def test_an_argv_route_is_checked_with_the_path_its_env_file_sets(tmp_path: Path) -> None:
    env_file = tmp_path / "secrets.env"
    env_file.write_text("PATH=/nonexistent\n")
    text = (
        '[sources.ops.routes]\nping = { argv = ["true"] }\n'
        f'noping = {{ argv = ["true"], env_file = "{env_file}" }}\n'
        f'local = {{ argv = ["{tmp_path}/tool.sh"] }}\n'
    )
    tool = tmp_path / "tool.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    config = write(tmp_path, text)
    done = syncd("check", "--probe", "--config", str(config))
    assert done.returncode == 1
    assert done.stdout.splitlines()[:2] == [
        "sources.ops.routes.noping: executable 'true' not found in PATH",
        "probe: 3 other route(s): executable checked",
    ]
