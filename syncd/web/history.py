"""/history: filters from the query string (so a URL can be shared), pages by task id, and
the same rows as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import click

from syncd.core.models import FINAL_NAMES
from syncd.ctl.app import since_iso
from syncd.ctl.client import DaemonError
from syncd.web.link import DaemonLink
from syncd.web.query import number
from syncd.web.views import PAGE, now_utc

EXPORT_LIMIT = 10000
EXPORT_KINDS = ("csv", "json")
FILTERS = ("source", "sync_type", "status", "trigger", "since", "until")
CSV_FIELDS = (
    "id", "source", "sync_type", "route", "status", "trigger", "attempt", "priority",
    "submitted_at", "started_at", "finished_at", "exit_code", "error", "requested_by", "params",
)  # fmt: skip


@dataclass
class Query:
    filters: dict[str, str] = field(default_factory=dict)
    before: int | None = None
    errors: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Query:
        q = cls()
        for key in FILTERS:
            value = (params.get(key) or "").strip()
            if value:
                q.filters[key] = value[:200]
        before = params.get("before")
        if before:
            if (cursor := number(before)) is not None and cursor > 0:
                q.before = cursor
            else:
                q.errors.append(f"before: {before!r} is not a task id")
        return q

    def args(self) -> dict[str, Any]:
        """The `history` op's args; a bad time becomes an error shown on the page."""
        args: dict[str, Any] = {}
        for key in ("source", "sync_type", "trigger"):
            if key in self.filters:
                args[key] = self.filters[key]
        if "status" in self.filters:
            args["status"] = [self.filters["status"]]
        for key in ("since", "until"):
            if key in self.filters:
                try:
                    args[key] = since_iso(self.filters[key], now_utc())
                except click.BadParameter as exc:
                    self.errors.append(f"{key}: {exc.message}")
        return args

    def url(self, **extra: Any) -> str:
        items = {**self.filters, **{k: v for k, v in extra.items() if v is not None}}
        return "?" + urlencode(items) if items else ""


def page(link: DaemonLink, q: Query) -> dict[str, Any]:
    args = q.args()
    rows: list[dict[str, Any]] = []
    if not q.errors:
        try:
            rows = fetch(link, q, args, PAGE + 1)
        except DaemonError as exc:
            q.errors.append(exc.message)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return {
        "q": q,
        "rows": rows,
        "next_url": q.url(before=rows[-1]["id"]) if more and rows else None,
        "csv_url": q.url(),
        "statuses": FINAL_NAMES,
        "now": now_utc(),
    }


def fetch(link: DaemonLink, q: Query, args: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Newest first, starting after task `before` in that order (finished_at, then id): the
    daemon pages on both, so rows that share one finished_at are all reachable."""
    if q.before is not None:
        args = {**args, "before_id": q.before}
    tasks: list[dict[str, Any]] = link.call("history", limit=limit, **args)["tasks"]
    return tasks


def export(link: DaemonLink, q: Query, kind: str) -> tuple[str, str]:
    """(body, media type) of up to EXPORT_LIMIT rows for the filters."""
    args = q.args()
    if q.errors:
        raise ValueError("; ".join(q.errors))
    rows = fetch(link, q, args, EXPORT_LIMIT)
    if kind == "json":
        return json.dumps({"tasks": rows}, indent=1), "application/json"
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for t in rows:
        writer.writerow([_cell(json.dumps(t[f]) if f == "params" else t[f]) for f in CSV_FIELDS])
    return out.getvalue(), "text/csv; charset=utf-8"


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula is quoted as text."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
