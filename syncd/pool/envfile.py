"""A task's environment: the daemon's, then the route's `env_file` (KEY=VALUE lines, read at
spawn so a rotated secret is picked up, never shown by any command), then the route's `env`,
then the variables that name the task."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$", "`": "`"}


class SpawnError(Exception):
    """The process could not be started; str() says why in words an operator can act on."""


def read_env_file(path: Path) -> dict[str, str]:
    """Parse `KEY=VALUE` lines: blank lines and `#` comments skipped, values optionally in
    single (literal) or double quotes (\\n \\t \\" \\\\ escapes); unquoted values are taken
    as they are, `#` included. Errors name the file and line, never a value (secrets)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpawnError(f"env file '{path}' not found") from None
    except UnicodeDecodeError:
        raise SpawnError(f"env file '{path}' is not UTF-8 text") from None
    except OSError as exc:
        raise SpawnError(f"env file '{path}': {exc.strerror or exc}") from None
    out: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise SpawnError(f"env file '{path}' line {number}: expected KEY=VALUE")
        try:
            out[key] = _unquote(value.strip())
        except ValueError as exc:
            where = f"env file '{path}' line {number}"
            raise SpawnError(f"{where}: {exc} in the value of {key}") from None
    return out


def _unquote(value: str) -> str:
    if value[:1] == "'":
        end = value.find("'", 1)
        if end < 0:
            raise ValueError("unterminated quote")
        text, rest = value[1:end], value[end + 1 :]
    elif value[:1] == '"':
        text, rest = _double_quoted(value)
    else:
        text, rest = value, ""
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise ValueError("text after the closing quote")
    if "\0" in text:
        raise ValueError("a NUL character")
    return text


def _double_quoted(value: str) -> tuple[str, str]:
    out: list[str] = []
    i = 1
    while i < len(value):
        ch = value[i]
        if ch == '"':
            return "".join(out), value[i + 1 :]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    raise ValueError("unterminated quote")


def build_env(
    base: Mapping[str, str],
    env_file: Path | None,
    env: Mapping[str, str],
    task_vars: Mapping[str, str],
) -> dict[str, str]:
    """The child's environment: later layers win (daemon env, env_file, route env, SYNCD_*)."""
    merged = dict(base)
    if env_file is not None:
        merged.update(read_env_file(env_file))
    merged.update(env)
    merged.update(task_vars)
    return merged
