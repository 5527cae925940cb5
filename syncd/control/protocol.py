"""The socket protocol (SPEC 7): NDJSON framing, request validation with hard limits, reply
shapes, and `OPS`, the one registry every op is declared in (syncctl and the docs test read it
too). Nothing here touches a socket; `server.py` feeds it lines and writes what it returns."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from syncd.core.events import EVENT_KINDS
from syncd.core.models import ErrorCode, Status
from syncd.core.opargs import Arg, ArgError, Check, show, signature, validate_args

__all__ = ["OPS", "Arg", "OpSpec", "ProtocolError", "Request", "parse_request", "register"]

VERSION = 1
MAX_DEPTH = 32
MAX_ITEMS = 1000
MAX_ID_BYTES = 256
MAX_INT_DIGITS = 20  # beyond int64 nothing in syncd means anything
FIELDS = frozenset({"v", "id", "op", "args", "via"})
MAX_VIA = 200

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = [0] * 256
for _b in b"[{":
    _DEPTH_STEP[_b] = 1
for _b in b"]}":
    _DEPTH_STEP[_b] = -1


class ProtocolError(Exception):
    """A request that cannot be run; `id` is the (clipped) id to echo, if one was read."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        id: Any = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.details = details


class _Reject(ValueError):
    """Raised from inside json.loads hooks; its message is the reply's message."""


@dataclass(frozen=True)
class OpSpec:
    name: str
    args: Mapping[str, Arg]
    mutating: bool
    stream: bool
    summary: str
    # A rule across args (e.g. "exactly one of"): returns a message naming them, or None.
    check: Check | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Request:
    id: Any
    op: str
    args: dict[str, Any]  # validated, every declared arg present (defaults filled)
    spec: OpSpec
    via: str | None = None  # who relayed it, for the log line ("web from 10.0.0.5")


OPS: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    """Add an op; declaring one twice is a bug that must fail at import, not at run time."""
    if spec.name in OPS:
        raise ValueError(f"op {spec.name!r} registered twice")
    OPS[spec.name] = spec
    return spec


# -- replies --------------------------------------------------------------------------------


def clip_id(value: Any) -> Any:
    """The id to echo: as sent, unless it serializes to more than 256 bytes, in which case a
    string of at most 256 bytes stands in for it (a client cannot make replies huge)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        raw = value.encode("utf-8", "replace")
        if len(raw) <= MAX_ID_BYTES:
            return value
        return raw[:MAX_ID_BYTES].decode("utf-8", "ignore")
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    raw = text.encode("utf-8", "replace")
    if len(raw) <= MAX_ID_BYTES:
        return value
    return raw[:MAX_ID_BYTES].decode("utf-8", "ignore")


def ok_reply(id: Any, result: Any, more: bool | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"id": clip_id(id), "ok": True, "result": result}
    if more is not None:
        reply["more"] = more
    return reply


def error_reply(
    id: Any, code: ErrorCode | str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code.value if isinstance(code, ErrorCode) else code}
    error["message"] = message
    if details is not None:
        error["details"] = details
    return {"id": clip_id(id), "ok": False, "error": error}


def encode(obj: Any) -> bytes:
    """Compact JSON plus newline. NaN is refused (not JSON); a lone surrogate falls back to
    ASCII escapes rather than failing the reply."""
    try:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
        return text.encode("ascii") + b"\n"


# -- parsing --------------------------------------------------------------------------------


def _too_deep(raw: bytes) -> bool:
    """Bracket depth outside strings, computed without recursion (json.loads would recurse)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > MAX_DEPTH


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Reject(f"integer with {len(text)} digits is too long")
    return int(text)


def _parse_constant(name: str) -> Any:
    raise _Reject(f"{name} is not valid JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Reject(f"duplicate key {show(key)}")
            seen.add(key)
    return obj


def _load(line: bytes) -> Any:
    bad = ErrorCode.BAD_REQUEST
    if _too_deep(line):
        raise ProtocolError(bad, f"nesting deeper than {MAX_DEPTH}")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(bad, "request is not valid UTF-8") from None
    try:
        return json.loads(
            text,
            parse_int=_parse_int,
            parse_constant=_parse_constant,
            object_pairs_hook=_object,
        )
    except _Reject as exc:
        raise ProtocolError(bad, f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(bad, f"nesting deeper than {MAX_DEPTH}") from None
    except ValueError as exc:
        raise ProtocolError(bad, f"invalid JSON: {exc}") from None


def parse_request(line: bytes) -> Request:
    """One request line (without its newline) → a validated Request, or ProtocolError."""
    obj = _load(line)
    if not isinstance(obj, dict):
        kind = type(obj).__name__ if obj is not None else "null"
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"request must be a JSON object, not {kind}")
    req_id = clip_id(obj.get("id"))
    unknown = sorted(set(obj) - FIELDS)
    if unknown:
        shown = ", ".join(show(k) for k in unknown[:5])
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown request field(s): {shown}", req_id)
    v = obj.get("v", VERSION)
    if type(v) is not int or v != VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {show(v)} is not supported (this daemon speaks {VERSION})",
            req_id,
            {"supported": [VERSION]},
        )
    op = obj.get("op")
    if not isinstance(op, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "op must be a string naming an op", req_id)
    spec = OPS.get(op)
    if spec is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_OP, f"unknown op {show(op)}", req_id, {"ops": sorted(OPS)}
        )
    via = obj.get("via")
    if via is not None and (
        not isinstance(via, str) or len(via) > MAX_VIA or not via.isprintable()
    ):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"via must be a printable string of at most {MAX_VIA}", req_id
        )
    raw_args = obj.get("args")
    try:
        args = validate_args(spec.args, {} if raw_args is None else raw_args, spec.check)
    except ArgError as exc:
        raise ProtocolError(ErrorCode.INVALID_ARGS, exc.message, req_id, exc.details) from None
    return Request(req_id, op, args, spec, via)


# -- the op table (SPEC 7.1) -----------------------------------------------------------------

STATUSES = tuple(s.value for s in Status)
_ID = Arg("int", required=True, min=1, help="task id")
_SOURCE = Arg("str", help="source name")
_DRY_RUN = Arg("bool", False, help="report, change nothing")
_NAME = Arg("str", required=True, help="schedule name")

SUBMIT_ARGS: dict[str, Arg] = {
    "source": Arg("str", required=True, help="source name"),
    "sync_type": Arg("str", "all", help="sync type; absent or empty = all"),
    "params": Arg("params", {}, help="route params, rendered as --key=value"),
    "priority": Arg("int", None, min=0, max=9, help="default: the route's priority"),
    "allow_duplicate": Arg("bool", False, help="do not coalesce with a queued twin"),
}


def _one_config_change(args: dict[str, Any]) -> str | None:
    if (args["max_workers"] is not None) == bool(args["reset"]):
        return "give exactly one of max_workers or reset: true"
    return None


def _op(
    name: str,
    summary: str,
    args: dict[str, Arg] | None = None,
    *,
    mutating: bool = True,
    stream: bool = False,
    check: Check | None = None,
) -> None:
    register(OpSpec(name, args or {}, mutating, stream, summary, check))


_op("ping", "daemon version, pid and uptime", mutating=False)
_op("status", "pool state and counts", {"verbose": Arg("bool", False)}, mutating=False)
_op(
    "list",
    "the live view: running, queued, recently finished",
    {
        "status": Arg("str_list", choices=STATUSES, min_items=1),
        "source": _SOURCE,
        "limit": Arg("int", 200, min=1, max=10000),
        "after_id": Arg("int", min=0),
        "explain": Arg("bool", False, help="add each queued row's one-word reason"),
    },
    mutating=False,
)
_op("get", "one task, every field", {"id": _ID}, mutating=False)
_op("submit", "queue a sync (coalesced with a queued twin)", SUBMIT_ARGS)
_op(
    "submit_many",
    "queue several syncs in one transaction",
    {"items": Arg("items", required=True, min_items=1, max_items=MAX_ITEMS, items=SUBMIT_ARGS)},
)
_op(
    "cancel",
    "cancel queued or running tasks",
    {"ids": Arg("int_list", required=True, min=1, min_items=1, max_items=10000)},
)
_op(
    "set_priority",
    "change a queued task's priority",
    {"id": _ID, "priority": Arg("int", required=True, min=0, max=9)},
)
_op(
    "history",
    "finished tasks, newest first",
    {
        "source": _SOURCE,
        "sync_type": Arg("str"),
        "status": Arg("str_list", choices=STATUSES, min_items=1),
        "trigger": Arg("str"),
        "since": Arg("str", help="ISO 8601"),
        "until": Arg("str", help="ISO 8601"),
        "limit": Arg("int", 100, min=1, max=10000),
    },
    mutating=False,
)
_op(
    "logs",
    "a task's output; with follow, a stream until the task ends",
    {"id": _ID, "follow": Arg("bool", False), "offset": Arg("int", 0, min=0)},
    mutating=False,
    stream=True,
)
_op("routes", "the routing table", {"source": _SOURCE}, mutating=False)
_op(
    "resolve",
    "which route and argv a submit would run",
    {
        "source": SUBMIT_ARGS["source"],
        "sync_type": SUBMIT_ARGS["sync_type"],
        "params": SUBMIT_ARGS["params"],
    },
    mutating=False,
)
_op("schedules", "every schedule with next and last fire", mutating=False)
_op("schedule_run", "fire a schedule now (honours its overlap)", {"name": _NAME})
_op("schedule_pause", "disable a schedule (persisted)", {"name": _NAME})
_op(
    "schedule_resume",
    "enable a schedule (persisted)",
    {"name": _NAME, "from_now": Arg("bool", False, help="skip the paused period")},
)
_op("config_get", "effective settings and their origin", mutating=False)
_op(
    "config_set",
    "set max_workers at runtime, or reset it",
    {"max_workers": Arg("int", min=1, max=64), "reset": Arg("bool", False)},
    check=_one_config_change,
)
_op("pause", "stop dispatching (running tasks continue)")
_op("resume", "start dispatching again")
_op("process_queue", "wake the dispatcher now")
_op("clear_queue", "cancel every queued task", {"source": _SOURCE})
_op(
    "fix_stuck",
    "run stale detection now and reconcile dead processes",
    {"minutes": Arg("float", min=0, max=1e6, exclusive_min=True)},
)
_op("reset_state", "cancel all queued; force: kill running too", {"force": Arg("bool", False)})
_op("reload", "re-read the config (the old one is kept on error)", {"dry_run": _DRY_RUN})
_op("explain", "why a queued task is not running", {"id": _ID}, mutating=False)
_op("prune", "run the history maintenance now", {"dry_run": _DRY_RUN})
_op(
    "watch",
    "a stream of task, pool, schedule and config events",
    {"events": Arg("str_list", choices=tuple(EVENT_KINDS), min_items=1)},
    mutating=False,
    stream=True,
)

# -- metrics and the dashboard's charts (handlers: control/metrics_ops.py) ----------------
_op("metrics", "counters, gauges and histograms as JSON (for Prometheus)", mutating=False)
_op("series", "the last 24 h of throughput and queue depth, per quarter hour", mutating=False)


def docs_table() -> list[dict[str, Any]]:
    """One row per op, in registry order, for the README/docs test."""
    return [
        {
            "op": s.name,
            "args": signature(s.args),
            "mutating": s.mutating,
            "stream": s.stream,
            "summary": s.summary,
        }
        for s in OPS.values()
    ]
