"""A Conversion as text: `[[schedules]]` TOML for stdout (each table under a comment naming
the periodic task it came from) and the report for stderr. Written by hand rather than by
a TOML library: the layout is the one SPEC's example uses, and comments carry the why."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from syncd.bridge.beat import Conversion, Converted, Item

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
COMMENT_MAX = 160


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no TOML spelling a param accepts")
        return repr(value)
    return toml_string(str(value))


def toml_key(key: str) -> str:
    return key if BARE_KEY.fullmatch(key) else toml_string(key)


def comment(text: str) -> str:
    """One comment line: control characters (a newline above all) become spaces."""
    flat = " ".join(
        "".join(" " if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in text).split()
    )
    if len(flat) > COMMENT_MAX:
        flat = flat[: COMMENT_MAX - 3] + "..."
    return f"# {flat}"


def schedule_toml(c: Converted) -> list[str]:
    t = c.task
    lines = [comment(f"Celery periodic task {t.pk} {_quoted(t.name)}: {t.task}")]
    if t.description.strip():
        lines.append(comment(t.description))
    lines += [comment(line) for line in c.comments]
    lines.append("[[schedules]]")
    pairs: list[tuple[str, Any]] = [
        ("name", c.name),
        ("cron", c.cron),
        ("source", c.target.source),
        ("sync_type", c.target.sync_type),
        ("timezone", c.timezone),
    ]
    for key, value in pairs:
        lines.append(f"{key} = {toml_value(value)}")
    if c.params:
        inner = ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in c.params.items())
        lines.append(f"params = {{ {inner} }}")
    if not c.enabled:
        lines.append("enabled = false")
    return lines


def schedules_toml(conv: Conversion) -> str:
    """Every converted task as `[[schedules]]`; empty when none was converted."""
    if not conv.converted:
        return ""
    lines = [
        comment(
            f"Imported from django-celery-beat by `syncd import celery-beat`: "
            f"{len(conv.converted)} of {conv.total} periodic tasks."
        )
    ]
    for c in conv.converted:
        lines.append("")
        lines += schedule_toml(c)
    return "\n".join(lines) + "\n"


def _item_line(item: Item) -> str:
    who = "--map" if item.pk is None else f"periodic task {item.pk} {_quoted(item.name)}"
    return f"  {who} ({item.task}): {item.message}"


def report_lines(conv: Conversion) -> list[str]:
    """The stderr report: one line of counts, then each task that needs a look."""
    lines = [
        f"celery-beat import: {conv.total} periodic task(s): {len(conv.converted)} converted, "
        f"{len(conv.not_converted)} not converted, {len(conv.not_needed)} not needed"
    ]
    for title, items in (
        ("not converted (add these by hand, or change them and import again):", conv.not_converted),
        ("not needed in syncd:", conv.not_needed),
        ("notes:", conv.notes),
    ):
        if items:
            lines.append(title)
            lines += [_item_line(i) for i in items]
    return lines


def _quoted(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)
