"""Whole numbers from a query string, a form or a header: ASCII digits only (`"²".isdigit()`
is True and `int("²")` raises), and short enough for SQLite's 64-bit integers."""

from __future__ import annotations

import re

_WHOLE = re.compile(r"-?[0-9]{1,18}")


def number(text: str | None, signed: bool = False) -> int | None:
    """The integer `text` spells, or None (absent, not a number, a sign where none may be)."""
    if text is None:
        return None
    text = text.strip()
    if not _WHOLE.fullmatch(text) or (text.startswith("-") and not signed):
        return None
    return int(text)
