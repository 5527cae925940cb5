"""The socket protocol: NDJSON framing, request validation with hard limits, reply shapes,
and the shape of an op's one declaration (`OpSpec`, collected in a `Registry`). Nothing here
touches a socket; `server.py` feeds it lines and writes what it returns."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from syncd.core.models import ErrorCode
from syncd.core.opargs import Arg, ArgError, Check, show, signature, validate_args

__all__ = ["Arg", "OpSpec", "ProtocolError", "Registry", "Request", "parse_request"]

VERSION = 1
MAX_DEPTH = 32
MAX_ITEMS = 1000
MAX_ID_BYTES = 256
MAX_INT_DIGITS = 20  # beyond int64 nothing in syncd means anything
MAX_FLOAT_CHARS = 64  # a double has 17 significant digits; more is padding or an attack
FIELDS = frozenset({"v", "id", "op", "args", "via"})
MAX_VIA = 200

_DEPTH_CHUNK = 1 << 16  # bytes per step of the depth check: no step holds the GIL long
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


Handler = Callable[..., Any]  # (context, args, peer) -> a JSON-able result or a stream
BatchHandler = Callable[..., list[Any]]  # (context, requests, peer) -> per request: result or error


@dataclass(frozen=True)
class OpSpec:
    """Everything about one op, declared once: validation, authorization, batching, the
    syncctl command table and the docs all read it."""

    name: str
    summary: str
    args: Mapping[str, Arg]
    mutating: bool
    stream: bool
    command: str  # the syncctl command that sends it
    handler: Handler = field(compare=False)
    # Consecutive pipelined requests of this op are handed over together (one commit).
    batch: BatchHandler | None = field(default=None, compare=False)
    # A rule across args (e.g. "exactly one of"): returns a message naming them, or None.
    check: Check | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Request:
    id: Any
    op: str
    args: dict[str, Any]  # validated, every declared arg present (defaults filled)
    spec: OpSpec
    via: str | None = None  # who relayed it, for the log line ("web from 10.0.0.5")


class Registry(Mapping[str, OpSpec]):
    """The ops a daemon answers, by name. Declaring one twice fails at import."""

    def __init__(self) -> None:
        self._ops: dict[str, OpSpec] = {}

    def op(
        self,
        name: str,
        summary: str,
        args: Mapping[str, Arg] | None = None,
        *,
        command: str,
        mutating: bool = True,
        stream: bool = False,
        batch: BatchHandler | None = None,
        check: Check | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(
                OpSpec(name, summary, args or {}, mutating, stream, command, handler, batch, check)
            )
            return handler

        return register

    def add(self, spec: OpSpec) -> OpSpec:
        if spec.name in self._ops:
            raise ValueError(f"op {spec.name!r} registered twice")
        self._ops[spec.name] = spec
        return spec

    def __getitem__(self, name: str) -> OpSpec:
        return self._ops[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ops)

    def __len__(self) -> int:
        return len(self._ops)

    def docs_table(self) -> list[dict[str, Any]]:
        """One row per op, in declaration order, for the README/docs test."""
        return [
            {
                "op": s.name,
                "args": signature(s.args),
                "mutating": s.mutating,
                "stream": s.stream,
                "command": s.command,
                "summary": s.summary,
            }
            for s in self._ops.values()
        ]


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
    """Bracket depth outside strings, computed without recursion (json.loads would recurse).

    Linear, in steps of 64 KiB of plain bytes operations, so a hostile line never holds the
    interpreter for long (a regular expression over strings left open was quadratic):
    escaped backslashes and quotes are dropped, then the quotes left split strings from the
    rest. A backslash run that ends a step carries its odd one into the next step."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    depth, in_string, carry = 0, False, b""
    for start in range(0, len(raw), _DEPTH_CHUNK):
        chunk = carry + raw[start : start + _DEPTH_CHUNK]
        carry = b""
        if (len(chunk) - len(chunk.rstrip(b"\\"))) % 2:
            chunk, carry = chunk[:-1], b"\\"
        parts = chunk.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')
        outside = parts[1::2] if in_string else parts[::2]
        if len(parts) % 2 == 0:  # an odd number of quotes: a string opens or closes
            in_string = not in_string
        brackets = b"".join(outside).translate(None, _NOT_BRACKET)
        if brackets:
            steps = list(accumulate(map(_DEPTH_STEP.__getitem__, brackets), initial=depth))
            if max(steps) > MAX_DEPTH:
                return True
            depth = steps[-1]
    return False


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Reject(f"integer with {len(text)} digits is too long")
    return int(text)


def _parse_float(text: str) -> float:
    """A finite double: `1e999` overflows to infinity, which no reply could encode."""
    if len(text) > MAX_FLOAT_CHARS:
        raise _Reject(f"number with {len(text)} characters is too long")
    value = float(text)
    if not math.isfinite(value):
        raise _Reject(f"number {text} is out of range (not finite)")
    return value


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


_decoders = threading.local()


def _decoder() -> json.JSONDecoder:
    """This thread's decoder with the hooks above: `json.loads` with hooks builds one (and
    its scanner) per call, a tenth of a request's parse. Per thread, as the scanner keeps
    a memo between the hooks' calls."""
    decoder: json.JSONDecoder | None = getattr(_decoders, "decoder", None)
    if decoder is None:
        decoder = _decoders.decoder = json.JSONDecoder(
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
            object_pairs_hook=_object,
        )
    return decoder


def _load(line: bytes) -> Any:
    bad = ErrorCode.BAD_REQUEST
    if _too_deep(line):
        raise ProtocolError(bad, f"nesting deeper than {MAX_DEPTH}")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(bad, "request is not valid UTF-8") from None
    try:
        return _decoder().decode(text)
    except _Reject as exc:
        raise ProtocolError(bad, f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(bad, f"nesting deeper than {MAX_DEPTH}") from None
    except ValueError as exc:
        raise ProtocolError(bad, f"invalid JSON: {exc}") from None


def parse_request(line: bytes, ops: Mapping[str, OpSpec]) -> Request:
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
    spec = ops.get(op)
    if spec is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_OP, f"unknown op {show(op)}", req_id, {"ops": sorted(ops)}
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
