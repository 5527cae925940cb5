"""Argument schemas of the socket ops: strict types, hard size caps, and errors that name the
argument. Unknown names are refused, never ignored, so no client can slip `argv`, `cwd`,
`env` or `command` past an op."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

MAX_ARGS = 64
MAX_STR_BYTES = 4096
MAX_PARAM_BYTES = 1024
INT64_MAX = 2**63 - 1  # SQLite's integer range: anything larger is refused, not overflowed

ArgType = Literal["int", "float", "bool", "str", "int_list", "str_list", "params", "items"]
Check = Callable[[dict[str, Any]], str | None]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Arg:
    """One argument. `min`/`max` bound numbers (and int_list items), `choices` bounds
    str_list items, `min_items`/`max_items` list lengths; `items` is the schema of each
    object of an `items` list. A null value means the default."""

    type: ArgType
    default: Any = None
    required: bool = False
    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False
    choices: tuple[str, ...] | None = None
    min_items: int = 0
    max_items: int | None = None
    items: Mapping[str, Arg] | None = None
    help: str = ""


class ArgError(Exception):
    """Bad args; `details` names the arg (and `index` for an item of a list of objects)."""

    def __init__(self, message: str, details: dict[str, Any]):
        super().__init__(message)
        self.message = message
        self.details = details


def show(value: Any) -> str:
    """A value for an error message, as JSON (control characters escaped), clipped."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(name: str, value: Any, max_bytes: int, details: dict[str, Any] | None = None) -> str:
    details = details or {"arg": name}
    if not isinstance(value, str):
        raise ArgError(f"{name}: expected a string, got {show(value)}", details)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ArgError(f"{name}: not valid Unicode", details) from None
    if size > max_bytes:
        raise ArgError(f"{name}: longer than {max_bytes} bytes", details)
    if _CONTROL.search(value):
        raise ArgError(f"{name}: control characters are not allowed", details)
    return value


def _number(name: str, value: Any, arg: Arg, integer: bool) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        what = "an integer" if integer else "a number"
        raise ArgError(f"{name}: expected {what}, got {show(value)}", {"arg": name})
    number: float = value
    if not math.isfinite(number):
        raise ArgError(f"{name}: must be finite", {"arg": name})
    low = arg.min if arg.min is not None else (-INT64_MAX if integer else None)
    high = arg.max if arg.max is not None else (INT64_MAX if integer else None)
    if low is not None and (number <= low if arg.exclusive_min else number < low):
        op = ">" if arg.exclusive_min else ">="
        raise ArgError(f"{name}: must be {op} {low:g}, got {show(value)}", {"arg": name})
    if high is not None and number > high:
        raise ArgError(f"{name}: must be <= {high:g}, got {show(value)}", {"arg": name})
    return number


def _list(name: str, value: Any, arg: Arg) -> list[Any]:
    if not isinstance(value, list):
        raise ArgError(f"{name}: expected a list, got {show(value)}", {"arg": name})
    if len(value) < arg.min_items:
        raise ArgError(f"{name}: needs at least {arg.min_items} item(s)", {"arg": name})
    if arg.max_items is not None and len(value) > arg.max_items:
        raise ArgError(f"{name}: more than {arg.max_items} items", {"arg": name})
    return value


def _params(name: str, value: Any) -> dict[str, Any]:
    """str → str|int|float|bool; values ≤ 1 KiB without control characters (they would end
    up in an argv element and in logs)."""
    if not isinstance(value, dict):
        raise ArgError(f"{name}: expected an object, got {show(value)}", {"arg": name})
    if len(value) > MAX_ARGS:
        raise ArgError(f"{name}: more than {MAX_ARGS} params", {"arg": name})
    for key, item in value.items():
        where, details = f"{name}.{key}", {"arg": name, "param": key[:64]}
        _text(f"{name} key {show(key)}", key, MAX_PARAM_BYTES, details)
        if not key:
            raise ArgError(f"{name}: empty param name", details)
        if isinstance(item, str):
            _text(where, item, MAX_PARAM_BYTES, details)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ArgError(f"{where}: must be finite", details)
        elif not isinstance(item, (bool, int, float)):
            raise ArgError(
                f"{where}: expected a string, number or boolean, got {show(item)}", details
            )
    return dict(value)


def _objects(name: str, value: Any, arg: Arg) -> list[dict[str, Any]]:
    out = []
    for index, item in enumerate(_list(name, value, arg)):
        try:
            out.append(validate_args(arg.items or {}, item))
        except ArgError as exc:
            details = {**exc.details, "index": index}
            raise ArgError(f"{name}[{index}]: {exc.message}", details) from None
    return out


def _str_list(name: str, value: Any, arg: Arg) -> list[str]:
    items = [_text(f"{name}[{i}]", v, MAX_STR_BYTES) for i, v in enumerate(_list(name, value, arg))]
    choices = arg.choices
    if choices is not None:
        for item in items:
            if item not in choices:
                raise ArgError(
                    f"{name}: {show(item)} is not one of {', '.join(choices)}",
                    {"arg": name, "choices": list(choices)},
                )
    return list(dict.fromkeys(items))


def _value(name: str, value: Any, arg: Arg) -> Any:
    t = arg.type
    if t == "bool":
        if not isinstance(value, bool):
            raise ArgError(f"{name}: expected true or false, got {show(value)}", {"arg": name})
        return value
    if t == "int":
        return int(_number(name, value, arg, True))
    if t == "float":
        return _number(name, value, arg, False)
    if t == "str":
        return _text(name, value, MAX_STR_BYTES)
    if t == "int_list":
        return [
            int(_number(f"{name}[{i}]", v, arg, True))
            for i, v in enumerate(_list(name, value, arg))
        ]
    if t == "str_list":
        return _str_list(name, value, arg)
    if t == "params":
        return _params(name, value)
    return _objects(name, value, arg)


def validate_args(
    schema: Mapping[str, Arg], raw: Any, check: Check | None = None
) -> dict[str, Any]:
    """Raw args → validated args with every declared name present (defaults filled)."""
    if not isinstance(raw, dict):
        raise ArgError(f"args must be an object, got {show(raw)}", {})
    if len(raw) > MAX_ARGS:
        raise ArgError(f"more than {MAX_ARGS} args", {})
    unknown = [k for k in raw if k not in schema]
    if unknown:
        shown = ", ".join(show(k) for k in unknown[:5])
        raise ArgError(
            f"unknown arg(s) {shown}; this op takes: {', '.join(schema) or 'no args'}",
            {"unknown": [k[:64] for k in unknown[:5]], "allowed": list(schema)},
        )
    out: dict[str, Any] = {}
    for name, arg in schema.items():
        value = raw.get(name)
        if value is None:
            if arg.required:
                raise ArgError(f"{name}: required", {"arg": name})
            default = arg.default
            out[name] = default.copy() if isinstance(default, (list, dict)) else default
        else:
            out[name] = _value(name, value, arg)
    if check is not None:
        problem = check(out)
        if problem:
            raise ArgError(problem, {})
    return out


def signature(schema: Mapping[str, Arg]) -> str:
    """`source, sync_type="all", [priority]` — for docs and help texts."""
    parts = []
    for name, arg in schema.items():
        if arg.required:
            parts.append(name)
        elif arg.default is None:
            parts.append(f"[{name}]")
        else:
            parts.append(f"{name}={json.dumps(arg.default)}")
    return ", ".join(parts)
