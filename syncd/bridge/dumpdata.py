"""The JSON `manage.py dumpdata django_celery_beat` writes: a list of
`{"model": "django_celery_beat.<model>", "pk": N, "fields": {...}}`, foreign keys as pks.

Only the fields the conversion uses are read. A malformed input as a whole (not JSON, not a
list) is a DumpError; a malformed object only makes its own periodic task unconvertible, with
the field named, so one odd row does not hide the report on the others."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

APP = "django_celery_beat"
MODELS = ("periodictask", "crontabschedule", "intervalschedule", "solarschedule",
          "clockedschedule", "periodictasks")  # fmt: skip


class DumpError(Exception):
    """The input is not a django_celery_beat dump at all; str() says why."""


class _Bad(Exception):
    """One field of one object is missing or of the wrong type."""


@dataclass(frozen=True)
class Crontab:
    pk: int
    minute: str
    hour: str
    day_of_month: str
    month_of_year: str
    day_of_week: str
    timezone: str


@dataclass(frozen=True)
class Interval:
    pk: int
    every: int
    period: str  # days | hours | minutes | seconds | microseconds


@dataclass(frozen=True)
class Solar:
    pk: int
    event: str
    latitude: str
    longitude: str


@dataclass(frozen=True)
class Clocked:
    pk: int
    clocked_time: str


Schedule = Crontab | Interval | Solar | Clocked


@dataclass(frozen=True)
class PeriodicTask:
    pk: int
    name: str
    task: str  # the Celery task's dotted name
    interval: int | None
    crontab: int | None
    solar: int | None
    clocked: int | None
    args: str  # JSON text, as the model stores it
    kwargs: str  # JSON text, as the model stores it
    enabled: bool
    one_off: bool
    start_time: str | None
    expires: str | None
    expire_seconds: int | None
    priority: int | None
    description: str


@dataclass
class BeatDump:
    """Every object of the dump by model and pk; an object that could not be read is kept
    as the message saying why (`schedules[("crontab", 3)] = "minute: expected a string"`)."""

    tasks: list[PeriodicTask] = field(default_factory=list)
    broken_tasks: list[tuple[int | None, str, str]] = field(default_factory=list)  # pk, name, why
    schedules: dict[tuple[str, int], Schedule | str] = field(default_factory=dict)
    other_models: dict[str, int] = field(default_factory=dict)  # model -> objects ignored


def parse_dump(text: str) -> BeatDump:
    """Parse dumpdata's JSON text; DumpError when it is not such a dump."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DumpError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, list):
        raise DumpError(f"expected a JSON list of objects, got a {_kind(data)}")
    dump = BeatDump()
    for index, obj in enumerate(data):
        _read_object(dump, index, obj)
    if not dump.tasks and not dump.broken_tasks:
        raise DumpError(
            f"no {APP}.periodictask objects: give the output of `python manage.py dumpdata {APP}`"
        )
    return dump


def _read_object(dump: BeatDump, index: int, obj: Any) -> None:
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), str):
        raise DumpError(f"[{index}]: expected an object with model, pk and fields")
    app, _, model = obj["model"].partition(".")
    if app != APP or model not in MODELS:
        dump.other_models[obj["model"]] = dump.other_models.get(obj["model"], 0) + 1
        return
    pk, fields = obj.get("pk"), obj.get("fields")
    if isinstance(pk, bool) or not isinstance(pk, int) or not isinstance(fields, dict):
        raise DumpError(f"[{index}] ({obj['model']}): expected an integer pk and a fields object")
    if model == "periodictasks":  # beat's change marker, not a task
        return
    f = _Fields(fields)
    if model == "periodictask":
        try:
            dump.tasks.append(_periodic_task(pk, f))
        except _Bad as exc:
            name = fields.get("name")
            dump.broken_tasks.append((pk, name if isinstance(name, str) else "?", str(exc)))
        return
    kind = model.removesuffix("schedule")
    try:
        dump.schedules[(kind, pk)] = _schedule(kind, pk, f)
    except _Bad as exc:
        dump.schedules[(kind, pk)] = f"{kind} {pk}: {exc}"


def _schedule(kind: str, pk: int, f: _Fields) -> Schedule:
    if kind == "crontab":
        return Crontab(
            pk, f.text("minute", "*"), f.text("hour", "*"), f.text("day_of_month", "*"),
            f.text("month_of_year", "*"), f.text("day_of_week", "*"), f.text("timezone", "UTC"),
        )  # fmt: skip
    if kind == "interval":
        return Interval(pk, f.integer("every"), f.text("period"))
    if kind == "solar":
        return Solar(pk, f.text("event"), f.number_text("latitude"), f.number_text("longitude"))
    return Clocked(pk, f.text("clocked_time"))


def _periodic_task(pk: int, f: _Fields) -> PeriodicTask:
    return PeriodicTask(
        pk=pk,
        name=f.text("name"),
        task=f.text("task"),
        interval=f.optional_int("interval"),
        crontab=f.optional_int("crontab"),
        solar=f.optional_int("solar"),
        clocked=f.optional_int("clocked"),
        args=f.text("args", "[]", blank_ok=True),
        kwargs=f.text("kwargs", "{}", blank_ok=True),
        enabled=f.boolean("enabled", True),
        one_off=f.boolean("one_off", False),
        start_time=f.optional_text("start_time"),
        expires=f.optional_text("expires"),
        expire_seconds=f.optional_int("expire_seconds"),
        priority=f.optional_int("priority"),
        description=f.text("description", "", blank_ok=True),
    )


class _Fields:
    """Typed reads of one object's fields; a field absent from older django-celery-beat
    versions takes the model's default."""

    _MISSING = object()

    def __init__(self, fields: dict[str, Any]):
        self.fields = fields

    def _get(self, key: str, default: Any) -> Any:
        value = self.fields.get(key, default)
        if value is self._MISSING:
            raise _Bad(f"{key}: missing")
        return value

    def text(self, key: str, default: Any = _MISSING, *, blank_ok: bool = False) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise _Bad(f"{key}: expected a string, got {_kind(value)}")
        if not blank_ok and not value.strip():
            raise _Bad(f"{key}: empty")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self._get(key, None)
        return None if value is None else self.text(key)

    def number_text(self, key: str) -> str:
        value = self._get(key, self._MISSING)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return self.text(key)  # Django writes DecimalFields as strings

    def integer(self, key: str) -> int:
        value = self._get(key, self._MISSING)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"{key}: expected an integer, got {_kind(value)}")
        return value

    def optional_int(self, key: str) -> int | None:
        return None if self._get(key, None) is None else self.integer(key)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise _Bad(f"{key}: expected true or false, got {_kind(value)}")
        return value


def _kind(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
