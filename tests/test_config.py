"""The config loader: every problem names its key path and echoes the bad value; env
overrides, origins, default and relative paths, inheritance, warnings."""

from __future__ import annotations

import grp
import os
from pathlib import Path
from textwrap import dedent

import pytest

from syncd.config.load import load_config, loads_config
from syncd.config.model import Config, ConfigError
from syncd.core.models import OnShutdown, Overlap
from syncd.core.paths import DEFAULT_CONFIG_PATH, resolve_config_path

MINIMAL_SOURCE = """
[sources.crm.routes]
contacts = "sync_contacts"
all = "sync_all"
"""


@pytest.fixture
def stub_bin(tmp_path: Path) -> Path:
    """A PATH directory whose `python` is an executable that is never run."""
    d = tmp_path / "bin"
    d.mkdir()
    for name in ("python", "other"):
        exe = d / name
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    return d


@pytest.fixture
def env(stub_bin: Path, tmp_path: Path) -> dict[str, str]:
    return {"PATH": str(stub_bin), "HOME": str(tmp_path / "home")}


def load(text: str, env: dict[str, str], base: Path | None = None) -> Config:
    return loads_config(dedent(text), base_dir=base or Path("/cfgdir"), env=env)


def problems(text: str, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, env)
    return [str(p) for p in info.value.problems]


def one_error(text: str, env: dict[str, str]) -> str:
    errs = [p for p in problems(text, env) if not p.startswith("warning: ")]
    assert len(errs) == 1, errs
    return errs[0]


STALE = "WORKER_POOL_STALE_MINUTES"
HOME_STATE = "/home/u/.local/state/syncd"
PREFIX = '[defaults]\ncommand_prefix = ["python", "manage.py"]\n'


# -- types and ranges ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("max_workers = 0", "daemon.max_workers: 0 is out of range 1..64"),
        ("max_workers = 65", "daemon.max_workers: 65 is out of range 1..64"),
        ("max_workers = true", "daemon.max_workers: expected an integer, got true (boolean)"),
        ("max_workers = 2.5", "daemon.max_workers: expected an integer, got 2.5 (float)"),
        ('max_workers = "4"', "daemon.max_workers: expected an integer, got '4' (string)"),
        ("default_priority = 10", "daemon.default_priority: 10 is out of range 0..9"),
        ("default_priority = -1", "daemon.default_priority: -1 is out of range 0..9"),
        ("stale_minutes = 0", "daemon.stale_minutes: 0 is not a positive number"),
        ("heartbeat_seconds = -1", "daemon.heartbeat_seconds: -1 is not a positive number"),
        ("kill_grace_seconds = false", "daemon.kill_grace_seconds: expected a number, got false"),
        ("history_days = inf", "daemon.history_days: inf is not a positive number"),
        ("retention_minutes = nan", "daemon.retention_minutes: nan is not a positive number"),
        ("max_lost_requeues = -1", "daemon.max_lost_requeues: -1 is out of range 0.."),
        # Each overflowed a timedelta at run time: start exited 70, a reload half-applied,
        # a breaker's cooldown left its task `running` with no process.
        ("history_days = 1e9", "daemon.history_days: 1e+09 is out of range (at most 3650 days"),
        ("stale_minutes = 1e12", "daemon.stale_minutes: 1e+12 is out of range (at most 5.256e+06"),
        ("kill_grace_seconds = 1e300", "daemon.kill_grace_seconds: 1e+300 is out of range"),
        ("max_lost_requeues = 99999999999999999999",
         "daemon.max_lost_requeues: 99999999999999999999 is out of range (at most 92233"),
        ("log_max_bytes = 10", "daemon.log_max_bytes: 10 is out of range 1024.."),
        ("socket_mode = 660", 'daemon.socket_mode: expected an octal string like "0660", got 660'),
        ('socket_mode = "0999"', "daemon.socket_mode: expected an octal string like \"0660\""),
        ('on_shutdown = "bad"', "daemon.on_shutdown: expected one of requeue, fail, got 'bad'"),
        ('prune_at = "30 25 * * *"', "daemon.prune_at: hour: 25 is out of range 0-23"),
        ('state_dir = ""', "daemon.state_dir: must not be empty"),
        ("control_group = 5", "daemon.control_group: expected a string, got 5 (integer)"),
        ('probe_on_start = "yes"', "daemon.probe_on_start: expected true or false, got 'yes'"),
    ],
)  # fmt: skip
def test_daemon_value_errors(line: str, expected: str, env: dict[str, str]) -> None:
    assert one_error(f"[daemon]\n{line}\n", env).startswith(expected)


def test_daemon_values_parse(env: dict[str, str], tmp_path: Path) -> None:
    cfg = load(
        """
        [daemon]
        max_workers = 8
        socket_mode = "0640"
        on_shutdown = "fail"
        stale_minutes = 0.05
        heartbeat_seconds = 0.5
        kill_grace_seconds = 0.25
        history_days = 0.5
        prune_at = "@daily"
        """,
        env,
    )
    d = cfg.daemon
    assert (d.max_workers, d.socket_mode, d.on_shutdown) == (8, 0o640, OnShutdown.FAIL)
    assert (d.stale_minutes, d.heartbeat_seconds, d.kill_grace_seconds) == (0.05, 0.5, 0.25)
    assert d.history_days == 0.5 and d.prune_at == "@daily"
    assert cfg.sources == {} and cfg.schedules == () and cfg.warnings == ()


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("bogus = 1\n", "bogus: unknown key"),
        ("[daemon]\nmax_worker = 2\n",
         "daemon.max_worker: unknown key; did you mean 'max_workers'?"),
        ("[defaults]\nfallback = 'x'\n", "defaults.fallback: unknown key"),
        ("[sources.crm]\nmax_concurent = 1\n" + MINIMAL_SOURCE,
         "sources.crm.max_concurent: unknown key; did you mean 'max_concurrent'?"),
        ("[sources.crm.routes]\nx = { command = 'a', shell = true }\n",
         "sources.crm.routes.x.shell: unknown key"),
        (MINIMAL_SOURCE + "[[schedules]]\nname='a'\ncron='* * * * *'\nsource='crm'\nsynctype=''\n",
         "schedules[0] (a).synctype: unknown key; did you mean 'sync_type'?"),
    ],
)  # fmt: skip
def test_unknown_keys_at_every_level(text: str, path: str, env: dict[str, str]) -> None:
    assert path in problems(text + PREFIX if "[defaults]" not in text else text, env)


def test_toml_syntax_error_has_line_and_column(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        loads_config("[daemon]\nmax_workers = = 2\n", base_dir=Path("/x"), env=env,
                     source_name="my.toml")  # fmt: skip
    (problem,) = info.value.problems
    assert problem.path == "my.toml"
    assert "line 2" in problem.message and "column" in problem.message


def test_wrong_section_types(env: dict[str, str]) -> None:
    found = problems('daemon = 5\nsources = "x"\nschedules = { a = 1 }\n', env)
    assert "daemon: expected a table, got 5 (integer)" in found
    assert "sources: expected a table, got 'x' (string)" in found
    assert any(p.startswith("schedules: expected an array of tables") for p in found)


# -- routes -----------------------------------------------------------------------------------
def test_executable_not_found_message(env: dict[str, str]) -> None:
    text = """
    [defaults]
    command_prefix = ["python", "manage.py"]
    [sources.hubspot.routes]
    contacts = "sync_hubspot_contacts"
    """
    assert one_error(text, {"PATH": "/nonexistent"}) == (
        "sources.hubspot.routes.contacts: executable 'python' not found"
    )
    assert load(text, env).sources["hubspot"].routes["contacts"].argv == (
        "python", "manage.py", "sync_hubspot_contacts",
    )  # fmt: skip


def test_route_env_path_is_used_for_the_lookup(env: dict[str, str], stub_bin: Path) -> None:
    text = f"""
    [sources.crm.routes]
    a = {{ command = "python", env = {{ PATH = "{stub_bin}" }} }}
    """
    cfg = load(text, {"PATH": "/nonexistent"})
    assert cfg.sources["crm"].routes["a"].argv == ("python",)
    text = '[sources.crm.routes]\na = { command = "python", env = { PATH = "/nope" } }\n'
    assert one_error(text, env) == "sources.crm.routes.a: executable 'python' not found"


def test_argv0_with_slash_is_a_path_relative_to_cwd(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    tool = tmp_path / "tools" / "run"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    plain = tmp_path / "tools" / "plain"
    plain.write_text("")
    text = f"""
    [defaults]
    cwd = "{tmp_path}"
    [sources.crm.routes]
    ok = {{ argv = ["./tools/run", "--x"] }}
    abs = {{ argv = ["{tool}"] }}
    """
    cfg = load(text, env)
    assert cfg.sources["crm"].routes["ok"].argv == ("./tools/run", "--x")
    bad = problems(text + 'missing = { argv = ["./tools/nope"] }\n'
                   'noexec = { argv = ["./tools/plain"] }\n', env)  # fmt: skip
    where = f"(relative to {tmp_path})"
    assert f"sources.crm.routes.missing: executable './tools/nope' not found {where}" in bad
    assert f"sources.crm.routes.noexec: executable './tools/plain' is not executable {where}" in bad


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ('{ command = "a", argv = ["python"] }', ": give either command or argv, not both"),
        ("{ argv = [] }", ".argv: must not be empty"),
        ('{ argv = ["python", 3] }', ".argv[1]: expected a non-empty string, got 3 (integer)"),
        ("{ priority = 3 }", ": needs a command or an argv"),
        ('"sync_a --full"', ": command 'sync_a --full' must be one word; use argv"),
        ("5", ": expected a command string or a table, got 5 (integer)"),
        ('{ command = "a", priority = 12 }', ".priority: 12 is out of range 0..9"),
        ('{ command = "a", retries = -1 }', ".retries: -1 is out of range 0.."),
        ('{ command = "a", timeout_minutes = 0 }', ".timeout_minutes: 0 is not a positive number"),
        ('{ command = "a", timeout_minutes = 6e6 }', ".timeout_minutes: 6e+06 is out of range"),
        ('{ command = "a", retry_backoff_seconds = 1e10 }', ".retry_backoff_seconds: 1e+10 is out"),
        ('{ command = "a", env = { "A B" = "1" } }',
         ".env.\"A B\": 'A B' is not a valid environment variable name"),
        ('{ command = "a", env = { N = 1 } }', ".env.N: expected a string, got 1 (integer)"),
        ('{ command = "a", allowed_params = ["full --evil"] }',
         ".allowed_params: 'full --evil' is not a valid parameter name"),
        ('{ argv = ["python"], command_prefix = ["x"] }',
         ".command_prefix: has no effect on an argv route"),
    ],
)  # fmt: skip
def test_route_errors(route: str, expected: str, env: dict[str, str]) -> None:
    text = f'{PREFIX}[sources.crm.routes]\nok = "fine"\nx = {route}\n'
    assert one_error(text, env).startswith("sources.crm.routes.x" + expected)


def test_source_errors(env: dict[str, str]) -> None:
    found = problems(
        PREFIX
        + """
        [sources.crm]
        fallback = "al"
        max_concurrent = 0
        [sources.crm.routes]
        all = "sync_all"
        contacts = "sync_contacts"
        [sources.empty.routes]
        [sources.noroutes]
        max_concurrent = 1
        [sources."bad name".routes]
        a = "x"
        """,
        env,
    )
    assert "sources.crm.fallback: 'al' is not a route of source 'crm' (routes: all, contacts)" in (
        found
    )
    assert "sources.crm.max_concurrent: 0 is out of range 1.. (at least 1)" in found
    assert "sources.empty.routes: a source needs at least one route" in found
    assert "sources.noroutes: missing key 'routes'" in found
    assert any(p.startswith("sources.\"bad name\": source name 'bad name' must") for p in found)


def test_duplicate_names_after_lower_casing(env: dict[str, str]) -> None:
    found = problems(
        PREFIX + '[sources.CRM.routes]\na = "x"\n[sources.crm.routes]\na = "x"\nA = "y"\n', env
    )
    assert "sources.crm: duplicate source 'crm' (names are case-insensitive)" in found
    found = problems(PREFIX + '[sources.crm.routes]\na = "x"\nA = "y"\n', env)
    assert "sources.crm.routes.A: duplicate sync type 'a' (names are case-insensitive)" in found


def test_inheritance_defaults_source_route(env: dict[str, str], stub_bin: Path) -> None:
    cfg = load(
        f"""
        [daemon]
        default_priority = 4
        [defaults]
        command_prefix = ["python", "manage.py"]
        env = {{ A = "defaults", B = "defaults" }}
        timeout_minutes = 60
        retries = 1
        retry_backoff_seconds = 30
        allowed_params = ["full", "since"]
        [sources.Crm]
        command_prefix = ["python", "other.py"]
        env = {{ B = "source", C = "source" }}
        retries = 2
        max_concurrent = 1
        fallback = "ALL"
        [sources.Crm.routes]
        ALL = "sync_all"
        ext = {{ argv = ["{stub_bin / "other"}", "--fast"], allowed_params = [] }}
        [sources.Crm.routes.Deals]
        command = "sync_deals"
        env = {{ C = "route" }}
        priority = 1
        timeout_minutes = 0.5
        """,
        env,
    )
    src = cfg.sources["crm"]
    assert (src.name, src.max_concurrent, src.fallback) == ("crm", 1, "all")
    assert list(src.routes) == ["all", "ext", "deals"]  # file order
    all_, deals, ext = src.routes["all"], src.routes["deals"], src.routes["ext"]
    assert all_.argv == ("python", "other.py", "sync_all")
    assert dict(all_.env) == {"A": "defaults", "B": "source", "C": "source"}
    assert (all_.timeout_minutes, all_.retries, all_.retry_backoff_seconds) == (60.0, 2, 30.0)
    assert (all_.priority, all_.allowed_params) == (4, ("full", "since"))
    assert dict(deals.env) == {"A": "defaults", "B": "source", "C": "route"}
    assert (deals.priority, deals.timeout_minutes) == (1, 0.5)
    assert ext.argv == (str(stub_bin / "other"), "--fast")  # no prefix
    assert ext.allowed_params == ()
    assert (deals.source, deals.sync_type) == ("crm", "deals")
    assert deals.key_path == "sources.Crm.routes.Deals"


def test_route_defaults_when_nothing_is_set(env: dict[str, str]) -> None:
    route = load('[sources.crm.routes]\na = "python"\n', env).sources["crm"].routes["a"]
    assert route.argv == ("python",)
    assert (route.cwd, route.env_file, dict(route.env)) == (None, None, {})
    assert (route.timeout_minutes, route.retries, route.retry_backoff_seconds) == (120.0, 0, 60.0)
    assert (route.priority, route.allowed_params) == (5, ())


def test_timeout_shorter_than_kill_grace_is_an_error(env: dict[str, str]) -> None:
    found = problems(
        """
        [daemon]
        kill_grace_seconds = 30
        [defaults]
        command_prefix = ["python"]
        timeout_minutes = 0.25
        [sources.crm]
        timeout_minutes = 0.4
        [sources.crm.routes]
        a = { command = "a", timeout_minutes = 0.1 }
        b = "b"
        [sources.other.routes]
        c = "c"
        """,
        env,
    )
    grace = "is shorter than daemon.kill_grace_seconds (30 s)"
    assert found == [
        f"sources.crm.routes.a.timeout_minutes: 0.1 min {grace}",
        f"sources.crm.timeout_minutes: 0.4 min {grace}",
        f"defaults.timeout_minutes: 0.25 min {grace}",
    ]


# -- schedules --------------------------------------------------------------------------------
def schedule(name: str, **kw: object) -> str:
    fields = {"name": name, "cron": "*/2 * * * *", "source": "crm", "sync_type": "contacts"}
    fields.update(kw)  # type: ignore[arg-type]
    body = "\n".join(f"{k} = {v!r}" if not isinstance(v, bool) else f"{k} = {str(v).lower()}"
                     for k, v in fields.items())  # fmt: skip
    return f"[[schedules]]\n{body}\n"


def test_schedule_cron_error_names_index_and_name(env: dict[str, str]) -> None:
    text = PREFIX + MINIMAL_SOURCE + "".join(schedule(f"s{i}") for i in range(3))
    text += schedule("hubspot-contacts", cron="61 */2 * * *")
    expected = "schedules[3] (hubspot-contacts).cron: minute: 61 is out of range 0-59"
    assert one_error(text, env) == expected


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"name": "Bad Name"}, "schedules[0] (Bad Name).name: 'Bad Name' must match [a-z0-9_.-]+"),
        ({"cron": "0 0 31 2 *"}, "schedules[0] (a).cron: "),
        ({"timezone": "Mars/Base"}, "schedules[0] (a).timezone: unknown timezone 'Mars/Base'"),
        ({"source": "nope"}, "schedules[0] (a).source: unknown source 'nope'; known sources: crm"),
        ({"sync_type": "deals"}, "schedules[0] (a).sync_type: source 'crm' has no route 'deals'"),
        ({"overlap": "maybe"}, "schedules[0] (a).overlap: expected one of skip, queue, replace"),
        ({"priority": 10}, "schedules[0] (a).priority: 10 is out of range 0..9"),
        ({"catch_up": "yes"}, "schedules[0] (a).catch_up: expected true or false, got 'yes'"),
        ({"starting_deadline_seconds": 0},
         "schedules[0] (a).starting_deadline_seconds: 0 is not a positive number"),
        ({"sync_type": 3}, "schedules[0] (a).sync_type: expected a string, got 3 (integer)"),
    ],
)  # fmt: skip
def test_schedule_errors(kw: dict[str, object], expected: str, env: dict[str, str]) -> None:
    text = PREFIX + MINIMAL_SOURCE + schedule(str(kw.pop("name", "a")), **kw)
    assert one_error(text, env).startswith(expected)


def test_schedule_params_are_checked_like_a_submit(env: dict[str, str]) -> None:
    text = (PREFIX + 'allowed_params = ["since"]\n' + MINIMAL_SOURCE + schedule("a")
            + 'params = { full = true }\n')  # fmt: skip
    assert one_error(text, env).startswith("schedules[0] (a).params: param 'full' is not allowed")
    text = text.replace("full = true", 'since = "a\\nb"')
    assert one_error(text, env).startswith("schedules[0] (a).params: param 'since': control")


def test_duplicate_and_missing_schedule_keys(env: dict[str, str]) -> None:
    text = PREFIX + MINIMAL_SOURCE + schedule("a") + schedule("b") + schedule("a")
    text += "[[schedules]]\nsource = 'crm'\n"
    found = problems(text, env)
    assert "schedules[2] (a).name: duplicate schedule name 'a' (also schedules[0])" in found
    assert "schedules[3]: missing key 'name'" in found
    assert "schedules[3]: missing key 'cron'" in found


def test_schedule_on_a_broken_source_is_not_judged_twice(env: dict[str, str]) -> None:
    text = '[sources.crm.routes]\ncontacts = "nope-not-on-path"\n' + schedule("a")
    expected = "sources.crm.routes.contacts: executable 'nope-not-on-path' not found"
    assert problems(text, env) == [expected]


def test_schedules_parse(env: dict[str, str]) -> None:
    text = PREFIX + 'allowed_params = ["since"]\n[sources.crm]\nfallback = "all"\n'
    text += (
        MINIMAL_SOURCE
        + schedule(
            "a.b_c-1",
            sync_type=" Contacts ",
            timezone="Europe/Berlin",
            overlap="queue",
            catch_up=False,
            enabled=False,
            priority=2,
            starting_deadline_seconds=90,
        )
        + 'params = { since = "2025-01-01" }\n'
        + schedule("fb", sync_type="tickets", source="CRM")
    )
    text += "[[schedules]]\nname = 'noty'\ncron = '@hourly'\nsource = 'crm'\n"  # fmt: skip
    a, fb, noty = load(text, env).schedules
    assert (a.name, a.source, a.sync_type) == ("a.b_c-1", "crm", "contacts")
    assert a.timezone == "Europe/Berlin"
    assert (a.overlap, a.catch_up, a.enabled, a.priority) == (Overlap.QUEUE, False, False, 2)
    assert a.starting_deadline_seconds == 90.0 and dict(a.params) == {"since": "2025-01-01"}
    assert (fb.source, fb.sync_type) == ("crm", "tickets")
    assert (fb.overlap, fb.timezone) == (Overlap.SKIP, "UTC")
    assert (noty.sync_type, noty.catch_up, noty.priority) == ("all", True, None)


# -- several at once ---------------------------------------------------------------------------
def test_every_error_is_reported_at_once(env: dict[str, str]) -> None:
    text = """
    [daemon]
    max_workers = 0
    socket_mode = 660
    [defaults]
    command_prefix = ["python", "manage.py"]
    [sources.crm]
    fallback = "nope"
    [sources.crm.routes]
    a = "sync_a"
    b = { command = "x", argv = ["y"] }
    c = { argv = ["missing-binary"] }
    [[schedules]]
    name = "one"
    cron = "* * * *"
    source = "crm"
    sync_type = "a"
    [[schedules]]
    name = "two"
    cron = "* * * * *"
    source = "ghost"
    """
    found = problems(text, env)
    assert len(found) == 7, found
    for path in ["daemon.max_workers", "daemon.socket_mode", "sources.crm.fallback",
                 "sources.crm.routes.b", "sources.crm.routes.c", "schedules[0] (one).cron",
                 "schedules[1] (two).source"]:  # fmt: skip
        assert any(p.startswith(path + ":") for p in found), path


# -- env overrides and origins ---------------------------------------------------------------
def test_env_overrides_and_origins(env: dict[str, str]) -> None:
    text = "[daemon]\nmax_workers = 3\nheartbeat_seconds = 2\n"
    cfg = load(text, env)
    assert cfg.daemon.max_workers == 3
    assert cfg.origins["max_workers"] == "file" and cfg.origins["heartbeat_seconds"] == "file"
    assert cfg.origins["stale_minutes"] == "default" and cfg.origins["state_dir"] == "default"
    assert set(cfg.origins) == set(cfg.daemon.__dataclass_fields__)
    cfg = load(text, {**env, "MAX_SYNC_WORKERS": " 7 ", "WORKER_POOL_STALE_MINUTES": "0.5"})
    assert (cfg.daemon.max_workers, cfg.daemon.stale_minutes) == (7, 0.5)
    assert cfg.origins["max_workers"] == "env" and cfg.origins["stale_minutes"] == "env"
    cfg = load(text, {**env, "MAX_SYNC_WORKERS": ""})  # set but empty: not an override
    assert (cfg.daemon.max_workers, cfg.origins["max_workers"]) == (3, "file")


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("MAX_SYNC_WORKERS", "abc", "env MAX_SYNC_WORKERS: 'abc' is not an integer"),
        ("MAX_SYNC_WORKERS", "2.5", "env MAX_SYNC_WORKERS: '2.5' is not an integer"),
        ("MAX_SYNC_WORKERS", "0", "env MAX_SYNC_WORKERS: 0 is out of range 1..64"),
        ("MAX_SYNC_WORKERS", "100", "env MAX_SYNC_WORKERS: 100 is out of range 1..64"),
        (STALE, "soon", f"env {STALE}: 'soon' is not a number"),
        (STALE, "-3", f"env {STALE}: -3.0 is not a positive number"),
        (STALE, "0.1", f"env {STALE}: 0.1 is below 3 x daemon.heartbeat_seconds (0.25 min)"),
    ],
)  # fmt: skip
def test_invalid_env_values_name_the_variable(
    var: str, value: str, expected: str, env: dict[str, str]
) -> None:
    assert one_error("", {**env, var: value}).startswith(expected)


def test_stale_must_cover_three_heartbeats(env: dict[str, str]) -> None:
    text = "[daemon]\nheartbeat_seconds = 10\nstale_minutes = 0.4\n"
    assert one_error(text, env) == (
        "daemon.stale_minutes: 0.4 is below 3 x daemon.heartbeat_seconds (0.5 min): a live task"
        " would look stale; lower heartbeat_seconds with it"
    )
    assert load(text.replace("0.4", "0.5"), env).daemon.stale_minutes == 0.5


# -- paths -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "state_dir", "socket"),
    [
        ({}, HOME_STATE, HOME_STATE + "/syncd.sock"),
        ({"XDG_STATE_HOME": "/xdg/state"}, "/xdg/state/syncd", "/xdg/state/syncd/syncd.sock"),
        ({"XDG_RUNTIME_DIR": "/run/user/1"}, HOME_STATE, "/run/user/1/syncd.sock"),
        ({"STATE_DIRECTORY": "/var/lib/syncd", "XDG_STATE_HOME": "/xdg"},
         "/var/lib/syncd", "/var/lib/syncd/syncd.sock"),
        ({"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}, "/var/lib/a", "/var/lib/a/syncd.sock"),
        ({"RUNTIME_DIRECTORY": "/run/syncd", "XDG_RUNTIME_DIR": "/run/user/1"},
         HOME_STATE, "/run/syncd/syncd.sock"),
        ({"STATE_DIRECTORY": "/s", "RUNTIME_DIRECTORY": "/r:/r2"}, "/s", "/r/syncd.sock"),
        ({"STATE_DIRECTORY": "", "XDG_STATE_HOME": ""}, HOME_STATE, HOME_STATE + "/syncd.sock"),
    ],
)  # fmt: skip
def test_default_paths(extra: dict[str, str], state_dir: str, socket: str) -> None:
    cfg = load("", {"PATH": "", "HOME": "/home/u", **extra})
    assert (str(cfg.daemon.state_dir), str(cfg.daemon.socket)) == (state_dir, socket)
    assert cfg.origins["state_dir"] == "default" and cfg.origins["socket"] == "default"


def test_explicit_socket_wins_over_runtime_directory(env: dict[str, str]) -> None:
    cfg = load('[daemon]\nsocket = "/srv/s.sock"\n', {**env, "RUNTIME_DIRECTORY": "/run/x"})
    assert cfg.daemon.socket == Path("/srv/s.sock") and cfg.origins["socket"] == "file"


def test_relative_paths_are_relative_to_the_config_folder(tmp_path: Path, stub_bin: Path) -> None:
    conf_dir = tmp_path / "conf"
    (conf_dir / "work").mkdir(parents=True)
    (conf_dir / "secrets.env").write_text("TOKEN=x\n")
    path = conf_dir / "syncd.toml"
    path.write_text(
        dedent(
            """
            [daemon]
            state_dir = "state"
            socket = "run/syncd.sock"
            [defaults]
            command_prefix = ["python"]
            cwd = "work"
            env_file = "secrets.env"
            [sources.crm.routes]
            a = "a"
            """
        )
    )
    cfg = load_config(path, env={"PATH": str(stub_bin)})
    assert cfg.path == path
    assert cfg.daemon.state_dir == conf_dir / "state"
    assert cfg.daemon.socket == conf_dir / "run" / "syncd.sock"
    route = cfg.sources["crm"].routes["a"]
    assert (route.cwd, route.env_file) == (conf_dir / "work", conf_dir / "secrets.env")
    assert cfg.warnings == ()
    assert "TOKEN" not in repr(cfg)  # the env_file is not read at load


def test_home_relative_path(env: dict[str, str]) -> None:
    cfg = load('[daemon]\nstate_dir = "~/st"\n', {**env, "HOME": "/home/z"})
    assert cfg.daemon.state_dir == Path("/home/z/st")


def test_missing_file_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", env={})
    assert str(info.value.problems[0]).endswith("nope.toml: cannot read: No such file or directory")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"x = '\xff'\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, env={})
    assert "not UTF-8" in str(info.value)


# -- warnings ---------------------------------------------------------------------------------
def test_a_group_name_with_a_nul_is_a_group_that_does_not_exist(env: dict[str, str]) -> None:
    """getgrnam raised ValueError on it: `syncd check` printed a traceback."""
    cfg = load('[daemon]\ncontrol_group = "a\\u0000b"\n', env)
    assert [str(w) for w in cfg.warnings] == [
        "warning: daemon.control_group: group 'a\\x00b' does not exist on this system"
    ]


def test_missing_cwd_env_file_and_group_are_warnings(env: dict[str, str]) -> None:
    cfg = load(
        """
        [daemon]
        control_group = "no-such-group-syncd-test"
        [defaults]
        command_prefix = ["python"]
        cwd = "/nonexistent/dir"
        env_file = "/nonexistent/secrets.env"
        [sources.crm.routes]
        a = "a"
        b = { command = "b", cwd = "/nonexistent/other" }
        [sources.more.routes]
        c = "c"
        """,
        env,
    )
    assert [str(w) for w in cfg.warnings] == [
        "warning: daemon.control_group: group 'no-such-group-syncd-test' does not exist on this"
        " system",
        "warning: defaults.cwd: directory '/nonexistent/dir' does not exist",
        "warning: defaults.env_file: file '/nonexistent/secrets.env' does not exist",
        "warning: sources.crm.routes.b.cwd: directory '/nonexistent/other' does not exist",
    ]  # fmt: skip
    assert all(w.severity == "warning" for w in cfg.warnings)


def test_existing_group_is_no_warning(env: dict[str, str]) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    cfg = load(f'[daemon]\ncontrol_group = "{group}"\n', env)
    assert cfg.daemon.control_group == group and cfg.warnings == ()


def test_config_error_lists_errors_then_warnings(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load('[daemon]\nmax_workers = 0\n[defaults]\ncwd = "/nonexistent"\n'
             '[sources.crm.routes]\na = "python"\n', env)  # fmt: skip
    assert [p.severity for p in info.value.problems] == ["error", "warning"]
    assert [str(p) for p in info.value.errors] == ["daemon.max_workers: 0 is out of range 1..64"]


def test_resolve_config_path() -> None:
    assert resolve_config_path("/a.toml", {"SYNCD_CONFIG": "/b.toml"}) == Path("/a.toml")
    assert resolve_config_path(None, {"SYNCD_CONFIG": "/b.toml"}) == Path("/b.toml")
    assert resolve_config_path(None, {}) == DEFAULT_CONFIG_PATH == Path("/etc/syncd/syncd.toml")


def test_socket_path_longer_than_a_unix_socket_allows_is_an_error(tmp_path: Path) -> None:
    long_socket = "/tmp/" + "s" * 120 + ".sock"
    text = f'[daemon]\nstate_dir = "{tmp_path}"\nsocket = "{long_socket}"\n'
    with pytest.raises(ConfigError) as exc:
        loads_config(text, base_dir=tmp_path, env={"PATH": os.environ["PATH"]})
    assert any(p.path == "daemon.socket" and "107 bytes" in p.message for p in exc.value.problems)
