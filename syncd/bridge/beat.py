"""The conversion rules from django-celery-beat periodic tasks to syncd schedules.

A periodic task becomes a schedule only when the schedule would run the same command at the
same times with the same arguments; anything else is reported with every reason found, so
the operator decides once per task with the whole picture. Decisions beyond the obvious:

- crontab: the five fields with the crontab's timezone. Celery runs a day only when it
  matches *both* day_of_month and day_of_week; cron runs it when it matches *either* if
  neither field starts with `*`. Such a crontab is reported, never silently widened.
- interval: cron when it divides evenly (minutes dividing an hour, hours dividing a day);
  the cron runs at fixed clock times, Celery ran N after the last run (said in a comment).
- solar, clocked, one_off: no syncd equivalent (a schedule repeats on the clock): reported.
- kwargs become params when the route allows each one (`batch_size` also matches an allowed
  `batch-size`, as Django's option names go); positional args are reported.
- start_time in the future: reported (the schedule would start early). expires: an expired
  task is imported disabled; a future expiry is imported and noted (schedules do not expire).
- Celery's own `celery.backend_cleanup` is listed as not needed: syncd has no result
  backend and prunes its own history."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from syncd.bridge.dumpdata import BeatDump, Clocked, Crontab, Interval, PeriodicTask, Solar
from syncd.config.commands import command_name
from syncd.config.routing import RouteTable, normalise
from syncd.core.errors import SyncdError
from syncd.cron import CronError, CronExpr

BACKEND_CLEANUP = "celery.backend_cleanup"
SCHEDULE_KINDS = ("crontab", "interval", "solar", "clocked")
PERIOD_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
NAME_JUNK = re.compile(r"[^a-z0-9_.-]+")


@dataclass(frozen=True)
class Target:
    source: str
    sync_type: str


@dataclass(frozen=True)
class Converted:
    """One periodic task as a syncd schedule, with the comment lines that explain it."""

    task: PeriodicTask
    name: str
    cron: str
    timezone: str
    target: Target
    params: dict[str, Any]
    enabled: bool
    comments: list[str]


@dataclass(frozen=True)
class Item:
    """A periodic task in the report: not converted, not needed, or a note on one."""

    pk: int | None
    name: str
    task: str
    message: str


@dataclass
class Conversion:
    converted: list[Converted] = field(default_factory=list)
    not_converted: list[Item] = field(default_factory=list)
    not_needed: list[Item] = field(default_factory=list)
    notes: list[Item] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.converted) + len(self.not_converted) + len(self.not_needed)


class MapError(ValueError):
    """A --map argument that names no route; str() says why."""


def parse_map(text: str, routes: RouteTable) -> tuple[str, Target]:
    """`TASK=SOURCE.SYNC_TYPE` → (task, target). Source names may contain dots, so every
    split is tried against the routing table and exactly one must resolve."""
    task, sep, where = text.partition("=")
    task, where = task.strip(), where.strip()
    if not sep or not task or not where:
        raise MapError(f"{text!r}: expected TASK=SOURCE.SYNC_TYPE")
    found = []
    for i, ch in enumerate(where):
        if ch == ".":
            source, stype = where[:i], where[i + 1 :]
            # A declared route only: through a source's fallback a typo ("dealz") would
            # run the fallback's command (a full resync, say) on the task's schedule.
            if routes.route(source, stype) is not None:
                found.append(Target(normalise(source), normalise(stype)))
    if len(found) != 1:
        why = "names no route" if not found else "is ambiguous"
        raise MapError(f"{text!r}: {where!r} {why} (expected SOURCE.SYNC_TYPE of the config)")
    return task, found[0]


class Converter:
    """One import: the routing table, the --map entries, the names already taken, `now`."""

    def __init__(
        self,
        routes: RouteTable,
        *,
        maps: Mapping[str, Target] | None = None,
        taken_names: set[str] | None = None,
        now: datetime,
    ):
        self.routes = routes
        self.maps = dict(maps or {})
        self.names = set(taken_names or ())
        self.now = now
        self.by_command: dict[str, list[Target]] = {}
        for src in routes.sources():
            for route in src.routes.values():
                target = Target(src.name, route.sync_type)
                self.by_command.setdefault(command_name(route.argv), []).append(target)

    def convert(self, dump: BeatDump) -> Conversion:
        out = Conversion()
        for pk, name, why in dump.broken_tasks:
            out.not_converted.append(Item(pk, name, "?", f"unreadable: {why}"))
        for task in sorted(dump.tasks, key=lambda t: t.pk):
            self.one(dump, task, out)
        used = {t.task for t in dump.tasks}
        for task_name in self.maps:
            if task_name not in used:
                out.notes.append(Item(None, "--map", task_name, "no periodic task runs it"))
        return out

    def one(self, dump: BeatDump, task: PeriodicTask, out: Conversion) -> None:
        def item(message: str) -> Item:
            return Item(task.pk, task.name, task.task, message)

        if task.task == BACKEND_CLEANUP:
            out.not_needed.append(
                item(
                    "Celery's own cleanup of expired task results: syncd has no result "
                    "backend and prunes its own history (daemon.history_days, prune_at)"
                )
            )
            return
        reasons: list[str] = []
        comments: list[str] = []
        when = self.when(dump, task, reasons, comments)
        if task.one_off and not task.clocked:
            reasons.append("one_off: Celery runs it once; a syncd schedule repeats")
        target = self.target(task, reasons)
        params = self.params(task, target, reasons, comments) if target else {}
        if task.args.strip() not in ("", "[]"):
            reasons.append(f"positional args {task.args.strip()}: a route takes named params only")
        start = _instant(task.start_time, reasons, "start_time")
        if start is not None and start > self.now:
            reasons.append(
                f"start_time {task.start_time} is in the future: a schedule would run "
                "before it; add it by hand once that time has passed"
            )
        enabled = task.enabled
        expires = _instant(task.expires, reasons, "expires")
        if expires is not None and not reasons:
            if expires <= self.now:
                enabled = False
                comments.append(f"Celery stopped running it at {task.expires} (expires)")
                out.notes.append(item(f"expired at {task.expires}: imported with enabled = false"))
            else:
                comments.append(f"Celery stops it at {task.expires}; syncd schedules do not")
                out.notes.append(
                    item(f"expires at {task.expires}: disable or remove the schedule then")
                )
        if task.priority is not None and not reasons:
            out.notes.append(
                item(f"Celery priority {task.priority} not kept: the route's priority applies")
            )
        if task.expire_seconds is not None and not reasons:
            out.notes.append(
                item(
                    f"expire_seconds {task.expire_seconds} not kept: Celery dropped a run not"
                    " started that soon; syncd keeps it queued until a slot frees"
                    " (starting_deadline_seconds only skips a fire that comes late)"
                )
            )
        if reasons or when is None or target is None:
            out.not_converted.append(item("; ".join(reasons)))
            return
        cron, tz = when
        out.converted.append(
            Converted(task, self.name_for(task), cron, tz, target, params, enabled, comments)
        )

    # -- when -----------------------------------------------------------------------------
    def when(
        self, dump: BeatDump, task: PeriodicTask, reasons: list[str], comments: list[str]
    ) -> tuple[str, str] | None:
        """(cron, timezone) of the task's schedule, or None with the reason recorded."""
        kinds = [k for k in SCHEDULE_KINDS if getattr(task, k) is not None]
        if len(kinds) != 1:
            reasons.append(
                "no schedule set" if not kinds else f"several schedules set ({', '.join(kinds)})"
            )
            return None
        kind = kinds[0]
        pk = getattr(task, kind)
        sched = dump.schedules.get((kind, pk))
        if sched is None:
            reasons.append(
                f"its {kind} schedule (pk {pk}) is not in the input: dump the whole app "
                "(`manage.py dumpdata django_celery_beat`)"
            )
            return None
        if isinstance(sched, str):
            reasons.append(f"unreadable {sched}")
            return None
        if isinstance(sched, Crontab):
            return _crontab(sched, reasons)
        if isinstance(sched, Interval):
            return _interval(sched, reasons, comments)
        if isinstance(sched, Solar):
            reasons.append(
                f"solar schedule ({sched.event} at {sched.latitude}, {sched.longitude}): "
                "cron cannot follow the sun; choose a fixed time and add it by hand"
            )
        elif isinstance(sched, Clocked):
            reasons.append(
                f"clocked schedule (once at {sched.clocked_time}): a single run, not a "
                "schedule; `syncctl submit` it at that time"
            )
        return None

    # -- what -----------------------------------------------------------------------------
    def target(self, task: PeriodicTask, reasons: list[str]) -> Target | None:
        if task.task in self.maps:
            return self.maps[task.task]
        command = task.task.rsplit(".", 1)[-1]
        found = self.by_command.get(command, [])
        if len(found) == 1:
            return found[0]
        hint = f"map it with --map {task.task}=SOURCE.SYNC_TYPE"
        if not found:
            reasons.append(f"no route runs a command named {command!r}: {hint}")
        else:
            names = ", ".join(f"{t.source}.{t.sync_type}" for t in found)
            reasons.append(f"command {command!r} is run by several routes ({names}): {hint}")
        return None

    def params(
        self, task: PeriodicTask, target: Target, reasons: list[str], comments: list[str]
    ) -> dict[str, Any]:
        try:
            kwargs = json.loads(task.kwargs or "{}")
        except json.JSONDecodeError:
            reasons.append(f"kwargs {task.kwargs!r} is not JSON")
            return {}
        if not isinstance(kwargs, dict):
            reasons.append(f"kwargs {task.kwargs!r} is not a JSON object")
            return {}
        route = self.routes.resolve(target.source, target.sync_type).route
        allowed = route.allowed_params
        where = f"{target.source}.{target.sync_type}"
        params: dict[str, Any] = {}
        refused: list[str] = []
        for key, value in kwargs.items():
            name = key if key in allowed else key.replace("_", "-")
            if name not in allowed:
                refused.append(key)
                continue
            if value is None or isinstance(value, (list, dict)):
                reasons.append(
                    f"kwarg {key!r} is {json.dumps(value)}: a param is a string, number or boolean"
                )
                continue
            if name != key:
                comments.append(f"kwarg {key} is passed as --{name}")
            params[name] = value
        if refused:
            shown = ", ".join(refused)
            reasons.append(
                f"kwargs {shown} not in the allowed_params of {where} "
                f"(allowed: {', '.join(allowed) or 'none'})"
            )
            return {}
        try:
            self.routes.resolve(target.source, target.sync_type, params)
        except SyncdError as exc:
            reasons.append(exc.message)
            return {}
        return params

    def name_for(self, task: PeriodicTask) -> str:
        """A schedule name ([a-z0-9_.-]+) from the task's name, unique in the config."""
        base = NAME_JUNK.sub("-", task.name.lower()).strip("-._") or f"celery-{task.pk}"
        name, n = base, 2
        while name in self.names:
            name, n = f"{base}-{n}", n + 1
        self.names.add(name)
        return name


def _crontab(c: Crontab, reasons: list[str]) -> tuple[str, str] | None:
    fields = {"minute": c.minute, "hour": c.hour, "day_of_month": c.day_of_month,
              "month_of_year": c.month_of_year, "day_of_week": c.day_of_week}  # fmt: skip
    spaced = [k for k, v in fields.items() if not v.strip() or any(ch.isspace() for ch in v)]
    if spaced:
        reasons.append(f"crontab field {spaced[0]} {fields[spaced[0]]!r} is not one cron field")
        return None
    cron = " ".join(fields.values())
    ok = True
    if not c.day_of_month.startswith("*") and not c.day_of_week.startswith("*"):
        reasons.append(
            f"crontab {cron!r} restricts both day_of_month and day_of_week: Celery runs on "
            "days matching both, cron on days matching either"
        )
        ok = False
    try:
        CronExpr.parse(cron)
    except CronError as exc:
        reasons.append(f"crontab {cron!r}: {exc}")
        ok = False
    try:
        ZoneInfo(c.timezone)
    except (ValueError, KeyError, OSError):
        reasons.append(f"crontab timezone {c.timezone!r} is not an IANA zone")
        ok = False
    return (cron, c.timezone) if ok else None


def _interval(i: Interval, reasons: list[str], comments: list[str]) -> tuple[str, str] | None:
    what = f"interval every {i.every} {i.period}"
    if i.period == "microseconds":
        seconds = i.every / 1_000_000
    elif i.period in PERIOD_SECONDS:
        seconds = i.every * PERIOD_SECONDS[i.period]
    else:
        reasons.append(f"{what}: unknown period")
        return None
    cron = _interval_cron(seconds)
    if cron is None:
        if seconds <= 0:
            why = "is not a positive interval"
        elif seconds < 60 or seconds % 60:
            why = "is not whole minutes (cron's finest step)"
        elif seconds < 3600:
            why = "does not divide an hour"
        else:
            why = "is not a whole number of hours dividing a day"
        reasons.append(f"{what} {why}, so no cron expression repeats it exactly")
        return None
    comments.append(
        f"Celery ran it {what.removeprefix('interval ')} after the previous run; "
        "this cron runs at fixed times (UTC)"
    )
    return cron, "UTC"


def _interval_cron(seconds: float) -> str | None:
    """The cron that fires every `seconds` exactly, where one exists."""
    if seconds <= 0 or seconds % 60:
        return None
    minutes = int(seconds // 60)
    if minutes < 60:
        if 60 % minutes:
            return None
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    if minutes % 60:
        return None
    hours = minutes // 60
    if hours == 24:
        return "0 0 * * *"
    if hours > 24 or 24 % hours:
        return None
    return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"


def _instant(text: str | None, reasons: list[str], key: str) -> datetime | None:
    """A dumpdata datetime (ISO 8601, `Z` or an offset; naive = UTC) or None."""
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        reasons.append(f"{key} {text!r} is not an ISO 8601 time")
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
