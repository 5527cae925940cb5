"""The protocol layer without sockets: framing limits (K1-K4 at the parser), the op table of
SPEC 7.1, argument validation (A4/A5), and reply shapes."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.control.ops.table import registry
from syncd.control.protocol import (
    MAX_DEPTH,
    ProtocolError,
    Registry,
    Request,
    clip_id,
    encode,
    error_reply,
    ok_reply,
    parse_request,
)
from syncd.core.errors import SyncdError
from syncd.core.events import EVENT_KINDS
from syncd.core.models import ErrorCode
from syncd.core.opargs import MAX_ARGS

OPS = registry()
SPEC_OPS = [
    "ping",
    "status",
    "list",
    "get",
    "submit",
    "submit_many",
    "cancel",
    "set_priority",
    "history",
    "logs",
    "routes",
    "resolve",
    "schedules",
    "schedule_run",
    "schedule_pause",
    "schedule_resume",
    "config_get",
    "config_set",
    "pause",
    "resume",
    "process_queue",
    "clear_queue",
    "fix_stuck",
    "reset_state",
    "reload",
    "explain",
    "prune",
    "watch",
    "freshness",
    "metrics",
    "series",
    "sources",
    "source_pause",
    "source_resume",
    "source_reset",
]
READ_ONLY = set(
    [
        "metrics",
        "series",
        "ping",
        "status",
        "list",
        "get",
        "history",
        "logs",
        "routes",
        "resolve",
        "schedules",
        "config_get",
        "explain",
        "watch",
        "freshness",
        "sources",
    ]
)


def req(op: str, _id: Any = 1, **args: Any) -> Request:
    return parse_request(json.dumps({"v": 1, "id": _id, "op": op, "args": args}).encode(), OPS)


def fails(line: bytes | str | dict[str, Any], code: ErrorCode) -> ProtocolError:
    if isinstance(line, dict):
        line = json.dumps(line)
    if isinstance(line, str):
        line = line.encode()
    with pytest.raises(ProtocolError) as info:
        parse_request(line, OPS)
    assert info.value.code == code, info.value.message
    assert "Traceback" not in info.value.message
    return info.value


def bad_args(op: str, **args: Any) -> ProtocolError:
    return fails({"v": 1, "id": 7, "op": op, "args": args}, ErrorCode.INVALID_ARGS)


# -- the op table ---------------------------------------------------------------------------


def test_ops_are_exactly_those_of_the_spec() -> None:
    assert sorted(OPS) == sorted(SPEC_OPS)


def test_mutating_and_stream_flags() -> None:
    assert {n for n, s in OPS.items() if not s.mutating} == READ_ONLY
    assert {n for n, s in OPS.items() if s.stream} == {"logs", "watch"}


def test_register_rejects_a_duplicate_op() -> None:
    ops = Registry()
    ops.op("ping", "first", command="ping", mutating=False)(lambda *a: None)
    with pytest.raises(ValueError, match="twice"):
        ops.op("ping", "again", command="ping", mutating=False)(lambda *a: None)
    assert ops["ping"].summary == "first"
    assert OPS["ping"].summary != "again"


def test_docs_table_lists_every_op_with_a_summary() -> None:
    rows = OPS.docs_table()
    assert sorted(r["op"] for r in rows) == sorted(SPEC_OPS)
    assert all(r["summary"] for r in rows)
    submit = next(r for r in rows if r["op"] == "submit")
    assert submit["args"].startswith('source, sync_type="all", params={}, [priority]')


@pytest.mark.parametrize(
    ("op", "defaults"),
    [
        ("ping", {}),
        ("status", {"verbose": False}),
        (
            "list",
            {"status": None, "source": None, "limit": 200, "after_id": None, "explain": False},
        ),
        ("logs", {"id": 3, "follow": False, "offset": 0, "limit": 1 << 20}),
        ("schedule_resume", {"name": "n", "from_now": False}),
        ("reset_state", {"force": False}),
        ("reload", {"dry_run": False}),
        ("prune", {"dry_run": False}),
        ("fix_stuck", {"minutes": None}),
        ("watch", {"events": None}),
        (
            "history",
            {
                "source": None,
                "sync_type": None,
                "status": None,
                "trigger": None,
                "since": None,
                "until": None,
                "limit": 100,
                "before_id": None,
            },
        ),
    ],
)
def test_defaults_are_filled(op: str, defaults: dict[str, Any]) -> None:
    given_args = {k: v for k, v in {"id": 3, "name": "n"}.items() if k in OPS[op].args}
    assert req(op, **given_args).args == defaults


def test_submit_defaults_and_fresh_mutable_defaults() -> None:
    a = req("submit", source="hubspot")
    assert a.args == {
        "source": "hubspot",
        "sync_type": "all",
        "params": {},
        "priority": None,
        "allow_duplicate": False,
    }
    a.args["params"]["x"] = 1
    assert req("submit", source="hubspot").args["params"] == {}


def test_null_means_default_but_not_for_required_args() -> None:
    assert req("submit", source="a", priority=None).args["priority"] is None
    assert bad_args("get", id=None).details == {"arg": "id"}


# -- framing and envelope -------------------------------------------------------------------


def test_request_fields_and_version() -> None:
    r = parse_request(b'{"id": "a", "op": "ping"}', OPS)
    assert (r.id, r.op, r.args, r.spec) == ("a", "ping", {}, OPS["ping"])
    assert parse_request(b'{"op": "ping", "args": null, "v": 1}', OPS).id is None
    for v in ("2", '"1"', "true", "1.0", "null"):
        err = fails(f'{{"v": {v}, "id": 5, "op": "ping"}}', ErrorCode.UNSUPPORTED_VERSION)
        assert err.id == 5


@pytest.mark.parametrize(
    "line",
    [b"{", b"nope", b"[1, 2]", b'"a string"', b"42", b"null", b"\xff\xfe{}", b'{"op": "ping"'],
)
def test_not_an_object_is_bad_request(line: bytes) -> None:
    fails(line, ErrorCode.BAD_REQUEST)


def test_envelope_errors() -> None:
    assert fails(b'{"id": 3}', ErrorCode.BAD_REQUEST).id == 3
    fails(b'{"op": 5}', ErrorCode.BAD_REQUEST)
    err = fails(b'{"op": "ping", "cmd": "rm"}', ErrorCode.BAD_REQUEST)
    assert "cmd" in err.message
    err = fails(b'{"op": "launch_missiles", "id": "q"}', ErrorCode.UNKNOWN_OP)
    assert err.id == "q" and "launch_missiles" in err.message
    assert err.details is not None and "ping" in err.details["ops"]
    fails(b'{"op": "ping", "args": [1]}', ErrorCode.INVALID_ARGS)


def test_nesting_limit_is_checked_before_parsing() -> None:
    fails(b"[" * 1000, ErrorCode.BAD_REQUEST)
    fails(b"[" * 100_000 + b"]" * 100_000, ErrorCode.BAD_REQUEST)
    # MAX_DEPTH levels in all (the request object is one) pass; one more does not.
    ok = b'{"op": "ping", "id": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert parse_request(ok, OPS).op == "ping"
    deep = b'{"op": "ping", "id": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    assert "nesting" in fails(deep, ErrorCode.BAD_REQUEST).message
    # Brackets inside strings are text, not nesting (escaped quotes included).
    text = '{"op": "ping", "id": "\\"' + "[" * 2000 + '"}'
    assert parse_request(text.encode(), OPS).id.startswith('"[[[')


def test_huge_numbers_constants_and_duplicate_keys() -> None:
    fails(b'{"op": "ping", "id": ' + b"9" * 5000 + b"}", ErrorCode.BAD_REQUEST)
    fails(b'{"op": "get", "args": {"id": -' + b"1" * 5000 + b"}}", ErrorCode.BAD_REQUEST)
    for const in (b"NaN", b"Infinity", b"-Infinity"):
        fails(b'{"op": "ping", "id": ' + const + b"}", ErrorCode.BAD_REQUEST)
    err = fails(b'{"op": "ping", "op": "reset_state"}', ErrorCode.BAD_REQUEST)
    assert "duplicate" in err.message
    line = b'{"op": "fix_stuck", "args": {"minutes": 1e999}}'
    assert "finite" in fails(line, ErrorCode.BAD_REQUEST).message


@pytest.mark.parametrize(
    "line",
    [
        b'{"op": "ping", "id": 1e999}',
        b'{"op": "ping", "id": -1e999}',
        b'{"op": "ping", "id": [1, {"x": 1E+400}]}',
        b'{"op": "get", "args": {"id": 1e999}}',
        b'{"op": "submit", "args": {"source": "a", "params": {"n": 1e999}}}',
        b'{"op": "ping", "id": 1.' + b"5" * 1000 + b"}",
    ],
)
def test_k11_overflowing_numbers_are_bad_requests(line: bytes) -> None:
    """A number that overflows to infinity, anywhere, is refused like NaN: no reply could
    carry it (a reply echoing it failed to encode and dropped the connection)."""
    fails(line, ErrorCode.BAD_REQUEST)


def _seconds_per_check(line: bytes) -> float:
    """The parser's cost for one line: the best of 5 batches, each at least 20 ms long."""
    best = float("inf")
    for _ in range(5):
        runs, start = 0, time.perf_counter()
        while True:
            with contextlib.suppress(ProtocolError):
                parse_request(line, OPS)
            runs += 1
            spent = time.perf_counter() - start
            if spent >= 0.02:
                break
        best = min(best, spent / runs)
    return best


K10_LINES = {
    "open string of escaped quotes": lambda n: b"[" * 40 + b'"' + b'\\"' * (n // 2),
    "open string of backslashes": lambda n: b"[" * 40 + b'"' + b"\\" * n,
    "deep nesting": lambda n: b"[" * n,
    "nesting pairs": lambda n: b"[[" * (n // 4) + b"]]" * (n // 4),
    "quotes and brackets": lambda n: b'["[' * (n // 3),
    "unicode escapes": lambda n: b'{"id": "' + b"\\u0041" * (n // 6) + b'"}',
}


@pytest.mark.parametrize("kind", sorted(K10_LINES))
def test_k10_the_parser_is_linear_in_the_line(kind: str) -> None:
    """16 times the line costs about 16 times the time: a quadratic check would cost 256
    times (the old nesting check on 40 `[` and an open string of `\\"`). The bound is
    generous; the ratio, not an absolute time, is what is asserted."""
    make = K10_LINES[kind]
    small, large = make(2048), make(2048 * 16)
    ratio = _seconds_per_check(large) / _seconds_per_check(small)
    assert ratio < 64, f"{kind}: 16x the line took {ratio:.0f}x the time"


def test_100k_keys() -> None:
    keys = ",".join(f'"k{i}": 0' for i in range(100_000))
    fails("{" + keys + "}", ErrorCode.BAD_REQUEST)
    err = fails('{"op": "ping", "args": {' + keys + "}}", ErrorCode.INVALID_ARGS)
    assert str(MAX_ARGS) in err.message
    line = '{"op": "submit", "args": {"source": "a", "params": {' + keys + "}}}"
    fails(line, ErrorCode.INVALID_ARGS)


def test_id_is_echoed_and_clipped() -> None:
    assert req("ping", _id="x" * 300).id == "x" * 256
    err = fails({"id": "é" * 200, "op": "nope"}, ErrorCode.UNKNOWN_OP)
    assert err.id == "é" * 128  # 256 bytes, no character cut in half
    assert req("ping", _id=[1, 2, {"a": None}]).id == [1, 2, {"a": None}]
    big = clip_id(list(range(1000)))
    assert isinstance(big, str) and len(big.encode()) <= 256 and big.startswith("[0,1,2")
    assert clip_id(12.5) == 12.5 and clip_id(None) is None and clip_id(True) is True


# -- argument validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "args", "arg"),
    [
        ("submit", {"source": 5}, "source"),
        ("submit", {"source": "a", "priority": "high"}, "priority"),
        ("submit", {"source": "a", "priority": True}, "priority"),
        ("submit", {"source": "a", "priority": 1.0}, "priority"),
        ("submit", {"source": "a", "priority": 10}, "priority"),
        ("submit", {"source": "a", "priority": -1}, "priority"),
        ("submit", {"source": "a", "allow_duplicate": 1}, "allow_duplicate"),
        ("submit", {"source": "a", "params": ["full"]}, "params"),
        ("submit", {}, "source"),
        ("get", {"id": "12"}, "id"),
        ("get", {"id": 0}, "id"),
        ("get", {"id": 2**63}, "id"),
        ("list", {"limit": 0}, "limit"),
        ("list", {"limit": 10001}, "limit"),
        ("list", {"status": "queued"}, "status"),
        ("list", {"status": []}, "status"),
        ("history", {"status": ["finished"]}, "status"),
        ("set_priority", {"id": 1}, "priority"),
        ("config_set", {"max_workers": 65}, "max_workers"),
        ("config_set", {"max_workers": 0}, "max_workers"),
        ("fix_stuck", {"minutes": 0}, "minutes"),
        ("fix_stuck", {"minutes": -1}, "minutes"),
        ("fix_stuck", {"minutes": "5"}, "minutes"),
        ("fix_stuck", {"minutes": True}, "minutes"),
        ("logs", {"id": 1, "offset": -1}, "offset"),
        ("logs", {"id": 1, "limit": 3}, "limit"),  # could not hold a whole character
        ("watch", {"events": ["task", "everything"]}, "events"),
        ("schedule_run", {"name": ["a"]}, "name"),
    ],
)
def test_ill_typed_args_name_the_arg(op: str, args: dict[str, Any], arg: str) -> None:
    err = bad_args(op, **args)
    assert err.message.startswith(arg), err.message
    assert err.details is not None and err.details.get("arg") == arg
    assert err.id == 7


def test_good_values() -> None:
    assert req("fix_stuck", minutes=0.05).args["minutes"] == 0.05
    assert req("fix_stuck", minutes=5).args["minutes"] == 5
    assert req("list", status=["queued", "running", "queued"]).args["status"] == [
        "queued",
        "running",
    ]
    assert req("watch", events=list(EVENT_KINDS)).args["events"] == list(EVENT_KINDS)
    assert req("cancel", ids=[3, 1]).args["ids"] == [3, 1]
    r = req("submit", source="hubspot", params={"since": "x; rm -rf /", "full": True, "n": 2.5})
    assert r.args["params"] == {"since": "x; rm -rf /", "full": True, "n": 2.5}


@pytest.mark.parametrize(
    "value", ["a\nb", "a\x00b", "tab\there", "\x7f", "\x85", "x" * 1025, ["a"], {"a": 1}, None]
)
def test_bad_param_values(value: Any) -> None:
    err = bad_args("submit", source="a", params={"since": value})
    assert err.details is not None and err.details["arg"] == "params"


def test_bad_param_names_and_strings() -> None:
    bad_args("submit", source="a", params={"": 1})
    bad_args("submit", source="a", params={"full\n--evil": 1})
    assert "4096" in bad_args("submit", source="x" * 4097).message
    bad_args("submit", source="a\x00")
    bad_args("submit", source="a\nINFO forged log line")
    # A lone surrogate is valid JSON but not Unicode text.
    fails(b'{"op": "submit", "args": {"source": "\\ud800"}}', ErrorCode.INVALID_ARGS)


@pytest.mark.parametrize("field", ["argv", "cwd", "env", "command"])
def test_a5_unknown_args_are_refused(field: str) -> None:
    for op, base in [("submit", {"source": "a"}), ("resolve", {"source": "a"}), ("ping", {})]:
        err = bad_args(op, **base, **{field: ["/bin/sh", "-c", "id"]})
        assert err.details is not None and err.details["unknown"] == [field]
    err = bad_args("submit_many", items=[{"source": "a"}, {"source": "b", field: "x"}])
    assert err.details is not None and err.details["index"] == 1
    assert err.message.startswith("items[1]: unknown arg")


def test_cancel_ids() -> None:
    bad_args("cancel", ids=[])
    bad_args("cancel", ids=[1, "2"])
    bad_args("cancel", ids=[True])
    bad_args("cancel", ids=5)
    bad_args("cancel")


def test_submit_many() -> None:
    items = [{"source": "a"}, {"source": "b", "sync_type": "x", "priority": 1}]
    r = req("submit_many", items=items)
    assert r.args["items"][1] == {
        "source": "b",
        "sync_type": "x",
        "params": {},
        "priority": 1,
        "allow_duplicate": False,
    }
    err = bad_args("submit_many", items=[{"source": "a"}] * 3 + [{"source": "a", "priority": 99}])
    assert err.details == {"arg": "priority", "index": 3}
    assert err.message.startswith("items[3]: priority")
    assert bad_args("submit_many", items=[{"source": "a"}] * 1001).details == {"arg": "items"}
    assert bad_args("submit_many", items=["a"]).details == {"index": 0}
    bad_args("submit_many", items=[])


def test_config_set_takes_exactly_one_change() -> None:
    assert req("config_set", max_workers=3).args == {"max_workers": 3, "reset": False}
    assert req("config_set", reset=True).args == {"max_workers": None, "reset": True}
    assert req("config_set", max_workers=3, reset=False).args["max_workers"] == 3
    for args in ({}, {"reset": False}, {"max_workers": 3, "reset": True}):
        assert "exactly one" in bad_args("config_set", **args).message


# -- replies --------------------------------------------------------------------------------


def test_reply_shapes_and_encoding() -> None:
    assert ok_reply(1, {"a": 1}) == {"id": 1, "ok": True, "result": {"a": 1}}
    assert ok_reply("s", None, more=True)["more"] is True
    assert error_reply(2, ErrorCode.BUSY, "later") == {
        "id": 2,
        "ok": False,
        "error": {"code": "busy", "message": "later"},
    }
    assert error_reply(None, "x", "m", {"k": 1})["error"]["details"] == {"k": 1}
    assert ok_reply("y" * 1000, 1)["id"] == "y" * 256
    assert encode({"a": [1, "é"]}) == '{"a":[1,"é"]}\n'.encode()
    assert encode({"s": "\ud800"}) == b'{"s":"\\ud800"}\n'
    with pytest.raises(ValueError):
        encode({"x": float("nan")})


# -- fuzz: nothing but ProtocolError ever escapes ---------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(
    op=st.sampled_from([*SPEC_OPS, "nope"]),
    args=st.dictionaries(
        st.sampled_from(["id", "ids", "source", "params", "items", "status", "limit", "x"]),
        _json,
    ),
)
def test_fuzz_args(op: str, args: dict[str, Any]) -> None:
    line = json.dumps({"op": op, "args": args}).encode()
    try:
        parse_request(line, OPS)
    except ProtocolError as exc:
        assert exc.code != ErrorCode.INTERNAL


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(line: bytes) -> None:
    try:
        parse_request(line, OPS)
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_OP, ErrorCode.INVALID_ARGS)


@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_escapes_across_the_depth_checks_steps_are_read_whole(shift: int) -> None:
    """The depth check works in 64 KiB steps: a run of backslashes cut by a step boundary
    still escapes what it escapes, so brackets inside the string never count as nesting."""
    head = b'{"op": "ping", "id": "'
    pad = b"x" * ((1 << 16) - len(head) - 3 + shift)
    line = head + pad + b'\\\\\\\\\\"' + b"[" * 5000 + b'"}'  # 4 backslashes, then \"
    assert parse_request(line, OPS).op == "ping"  # not refused as nesting
    deep = b'{"op": "ping", "id": ["' + pad + b'\\\\", ' + b"[" * 40 + b"]" * 40 + b"]}"
    assert "nesting" in fails(deep, ErrorCode.BAD_REQUEST).message


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_at_the_edge_of_the_calendar_is_a_clear_invalid_args(value: str) -> None:
    """`history since=...` with year 1 or 9999 and an offset overflowed in the conversion
    to UTC: the client got `internal` and the log a traceback."""
    from syncd.control.ops.base import time_arg

    with pytest.raises(SyncdError) as err:
        time_arg("since", value)
    assert err.value.code is ErrorCode.INVALID_ARGS
    assert "is not an ISO 8601 time" in err.value.message


def test_a_source_removed_by_a_reload_during_its_pause_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from syncd.control.ops import sources as ops

    monkeypatch.setattr(ops, "describe", lambda daemon: [{"name": "other"}])
    ctx = SimpleNamespace(d=SimpleNamespace(dispatcher=SimpleNamespace(wake=lambda: None)))
    with pytest.raises(SyncdError) as err:
        ops._one(ctx, "crm")  # type: ignore[arg-type]
    assert err.value.code is ErrorCode.UNKNOWN_SOURCE
    assert ops._one(ctx, "other") == {"source": {"name": "other"}}  # type: ignore[arg-type]
