"""RouteTable: normalisation, exact/fallback, errors that list the choices, params (A4)."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from syncd.config.load import loads_config
from syncd.config.model import Route, Source
from syncd.config.routing import RouteTable, render_params
from syncd.core.errors import SyncdError
from syncd.core.models import ErrorCode


def make_route(source: str, sync_type: str, argv: tuple[str, ...], **kw: Any) -> Route:
    fields: dict[str, Any] = {
        "cwd": None,
        "env": MappingProxyType({}),
        "env_file": None,
        "timeout_minutes": 120.0,
        "retries": 0,
        "retry_backoff_seconds": 60.0,
        "allowed_params": ("full", "since", "dry-run", "batch-size"),
        "priority": 5,
    }
    fields.update(kw)
    return Route(source, sync_type, argv, key_path=f"sources.{source}.routes.{sync_type}", **fields)


def make_source(name: str, types: list[str], fallback: str | None = None) -> Source:
    routes = {t: make_route(name, t, ("python", "manage.py", f"run_{name}_{t}")) for t in types}
    return Source(name, None, fallback, MappingProxyType(routes))


@pytest.fixture
def table() -> RouteTable:
    return RouteTable(
        {
            "alpha": make_source("alpha", ["all", "contacts", "deals"], fallback="all"),
            "beta": make_source("beta", ["calls", "users"], fallback="calls"),
            "gamma": make_source("gamma", ["leads", "spends"]),
        }
    )


def code_of(table: RouteTable, *args: Any) -> SyncdError:
    with pytest.raises(SyncdError) as info:
        table.resolve(*args)
    return info.value


def test_exact_route(table: RouteTable) -> None:
    res = table.resolve("alpha", "contacts")
    assert (res.source, res.sync_type, res.rule) == ("alpha", "contacts", "exact")
    assert res.route.sync_type == "contacts"
    assert res.argv == ("python", "manage.py", "run_alpha_contacts")
    assert res.params == {}


@pytest.mark.parametrize(
    ("source", "sync_type", "expected_type", "expected_route"),
    [
        ("  ALPHA ", " Contacts ", "contacts", "contacts"),
        ("alpha", None, "all", "all"),
        ("alpha", "", "all", "all"),
        ("alpha", "   ", "all", "all"),
        ("Beta", "USERS", "users", "users"),
    ],
)
def test_normalisation(
    table: RouteTable, source: str, sync_type: str | None, expected_type: str, expected_route: str
) -> None:
    res = table.resolve(source, sync_type)
    assert res.source == source.strip().lower()
    assert res.sync_type == expected_type
    assert res.route.sync_type == expected_route


def test_fallback_keeps_requested_type(table: RouteTable) -> None:
    res = table.resolve("alpha", "tickets")
    assert res.rule == "fallback"
    assert res.sync_type == "tickets"  # as requested
    assert res.route.sync_type == "all"  # the route that ran it
    assert res.argv[-1] == "run_alpha_all"
    res = table.resolve("beta", "whatever")
    assert (res.rule, res.route.sync_type) == ("fallback", "calls")


def test_no_fallback_means_unknown_route_listing_types(table: RouteTable) -> None:
    err = code_of(table, "gamma", "nope")
    assert err.code is ErrorCode.UNKNOWN_ROUTE
    assert err.details == {"sync_types": ["leads", "spends"]}
    assert "leads, spends" in err.message and "'nope'" in err.message


def test_no_invented_all_fallback(table: RouteTable) -> None:
    """`gamma` has no `all` route and no fallback: no `run_gamma_all` is made up."""
    err = code_of(table, "gamma")
    assert err.code is ErrorCode.UNKNOWN_ROUTE


def test_unknown_source_lists_known(table: RouteTable) -> None:
    err = code_of(table, "delta", "x")
    assert err.code is ErrorCode.UNKNOWN_SOURCE
    assert err.details == {"known": ["alpha", "beta", "gamma"]}
    assert "alpha, beta, gamma" in err.message and "'delta'" in err.message
    assert code_of(table, "", "x").code is ErrorCode.UNKNOWN_SOURCE


def test_sources_source_and_route_lookups(table: RouteTable) -> None:
    assert [s.name for s in table.sources()] == ["alpha", "beta", "gamma"]
    src = table.source(" Beta ")
    assert src is not None and src.name == "beta"
    assert table.source("nope") is None
    route = table.route("alpha", "Deals")
    assert route is not None and route.sync_type == "deals"
    assert table.route("alpha", "tickets") is None  # lookups never apply the fallback
    assert table.route("nope", "all") is None


def test_params_rendered_sorted_and_false_omitted(table: RouteTable) -> None:
    res = table.resolve("alpha", "deals", {"since": "2025-01-01", "full": True, "dry-run": False})
    assert res.argv[3:] == ("--full", "--since=2025-01-01")
    assert res.params == {"since": "2025-01-01", "full": True, "dry-run": False}
    assert render_params({"batch-size": 500, "since": 1.5}) == ("--batch-size=500", "--since=1.5")


def test_a4_shell_text_is_one_argv_element(table: RouteTable) -> None:
    res = table.resolve("alpha", "deals", {"since": "x; rm -rf /"})
    assert res.argv == ("python", "manage.py", "run_alpha_deals", "--since=x; rm -rf /")


@pytest.mark.parametrize(
    "value",
    [
        "a\nb",
        "a\x00b",
        "tab\there",
        "\x7f",
        "\x85",
        "x" * 1025,
        "é" * 513,
        float("nan"),
        float("inf"),
        None,
        [1],
        {"a": 1},
        "\ud800",
    ],
)
def test_a4_bad_values_are_invalid_args(table: RouteTable, value: Any) -> None:
    err = code_of(table, "alpha", "deals", {"since": value})
    assert err.code is ErrorCode.INVALID_ARGS
    assert "'since'" in err.message
    assert err.details == {"arg": "params", "param": "since"}


def test_value_of_exactly_1_kib_is_fine(table: RouteTable) -> None:
    res = table.resolve("alpha", "deals", {"since": "x" * 1024})
    assert res.argv[-1] == "--since=" + "x" * 1024


@pytest.mark.parametrize("key", ["full --evil", "unknown", "FULL", "--full", ""])
def test_a4_keys_not_allowed(table: RouteTable, key: str) -> None:
    err = code_of(table, "alpha", "deals", {key: True})
    assert err.code is ErrorCode.PARAM_NOT_ALLOWED
    assert repr(key) in err.message
    assert "full, since, dry-run, batch-size" in err.message


def test_param_checks_apply_to_the_fallback_route(table: RouteTable) -> None:
    err = code_of(table, "alpha", "tickets", {"since": "a\nb"})
    assert err.code is ErrorCode.INVALID_ARGS


def test_non_string_source_is_invalid_args(table: RouteTable) -> None:
    assert code_of(table, 5, "x").code is ErrorCode.INVALID_ARGS
    assert code_of(table, "alpha", 5).code is ErrorCode.INVALID_ARGS


def test_route_allowed_params_come_from_config(tmp_path: Path) -> None:
    exe = tmp_path / "tool"
    exe.write_text("")
    exe.chmod(0o755)
    cfg = loads_config(
        f"""
        [defaults]
        command_prefix = ["{exe}"]
        allowed_params = ["since"]
        [sources.alpha.routes]
        narrow = {{ command = "n", allowed_params = [] }}
        wide = "w"
        """,
        base_dir=tmp_path,
        env={"PATH": ""},
    )
    table = RouteTable.from_config(cfg)
    assert table.resolve("alpha", "wide", {"since": "1"}).argv == (str(exe), "w", "--since=1")
    err = code_of(table, "alpha", "narrow", {"since": "1"})
    assert err.code is ErrorCode.PARAM_NOT_ALLOWED
    assert "allowed: none" in err.message
