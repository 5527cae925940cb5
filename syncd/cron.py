"""Cron expressions: strict parsing and `next_after`, as pure functions of their
arguments. Nothing here reads a clock; the caller passes the instant to search from.

Syntax is Vixie cron's five fields with names, 7 = Sunday and the `@` macros. A field that
starts with `*` (`*`, `*/2`, `*,5`) counts as unrestricted for the day-of-month/day-of-week
rule: only when both day fields are restricted does a day match if *either* matches;
otherwise both must match. Anything else is rejected with the field named, and so is an
expression that can never fire (`0 0 31 2 *`), so a parsed expression always has a next fire.

Daylight saving time, decided here because cron itself leaves the repeated hour ambiguous
The expression is evaluated on the wall clock of `tz`, as Vixie cron does:

* Fixed-time jobs -- minute and hour are single values, ranges or lists, no `*` and no step
  (`30 2 * * *`, `0 9-17 * * 1-5`) -- fire once per matching wall time: a time skipped by a
  spring-forward gap fires at the first instant after the gap (times of one gap collapse into
  that one fire), and a time that occurs twice in a fall-back hour fires at its first
  occurrence only.
* Every other job (`*/5 * * * *`, `0 * * * *`, `*/10 2 * * *`) runs on real elapsed time: it
  fires at each instant whose wall time matches. Wall times that do not exist never fire, and
  the repeated hour fires twice, once per occurrence (`*/30` fires at 02:00 and 02:30 CEST,
  then at 02:00 and 02:30 CET: four distinct UTC instants an hour apart in pairs).

Either way the fire instants returned by repeated `t = expr.next_after(t, tz)` are strictly
increasing in UTC. Offset changes are found by sampling the zone once a day and bisecting
(cached per zone and year); two changes within one day that cancel out would go unseen --
tzdata has none that matter.
"""

from __future__ import annotations

import calendar
import functools
import itertools
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, datetime, timedelta, timezone, tzinfo

__all__ = ["FIELD_NAMES", "MACROS", "CronError", "CronExpr", "parse"]

UTC = timezone.utc
_MINUTE = timedelta(minutes=1)
_SECOND = timedelta(seconds=1)

FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")

MACROS: Mapping[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# The longest wait between two fires of a matchable expression is 40 years (29 February on
# one weekday across a non-leap century year, e.g. `0 0 29 2 */7`); searching further means
# the expression cannot fire at all.
MAX_SEARCH_YEARS = 50

_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_DIGITS = re.compile(r"[0-9]+")
# Longest month length with 29 February, so a day-of-month that never occurs is caught.
_MAX_MONTH_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class CronError(ValueError):
    """An invalid or never-matching cron expression; `field` names the culprit if one is."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class _Spec:
    """How one field is read: its bounds, its names and what a bad name is called."""

    name: str
    lo: int
    hi: int
    names: Mapping[str, int]
    noun: str  # "'fro' is not a <noun>"


_SPECS = (
    _Spec("minute", 0, 59, {}, "number"),
    _Spec("hour", 0, 23, {}, "number"),
    _Spec("day-of-month", 1, 31, {}, "number"),
    _Spec("month", 1, 12, _MONTHS, "month"),
    _Spec("day-of-week", 0, 7, _WEEKDAYS, "weekday"),
)


def _bounded(spec: _Spec, digits: str, lo: int, hi: int, what: str = "") -> int:
    number = int(digits) if len(digits) <= 6 else hi + 1  # no giant ints from a typo
    if not lo <= number <= hi:
        raise CronError(f"{spec.name}: {what}{digits} is out of range {lo}-{hi}", spec.name)
    return number


def _value(spec: _Spec, token: str, *, range_end: bool = False) -> int:
    if _DIGITS.fullmatch(token):
        return _bounded(spec, token, spec.lo, spec.hi)
    named = spec.names.get(token.lower())
    if named is None:
        raise CronError(f"{spec.name}: {token!r} is not a {spec.noun}", spec.name)
    # `mon-sun` means Monday to Sunday, as `1-7` does.
    return 7 if range_end and named == 0 and spec.names is _WEEKDAYS else named


def _item(spec: _Spec, item: str, field: str) -> range:
    if not item:
        raise CronError(f"{spec.name}: empty list item in {field!r}", spec.name)
    base, slash, step_text = item.partition("/")
    # `*` spans the real values only: day-of-week `*` is 0-6, 7 being a second Sunday.
    top = 6 if spec.names is _WEEKDAYS else spec.hi
    step = 1
    if slash:
        if not _DIGITS.fullmatch(step_text):
            raise CronError(f"{spec.name}: step {step_text!r} is not a number", spec.name)
        step = _bounded(spec, step_text, 1, spec.hi, "step ")
    if base == "*":
        return range(spec.lo, top + 1, step)
    first, dash, last = base.partition("-")
    if not dash:
        start = _value(spec, first)
        # `5/15` means 5-59/15; a bare value is just itself.
        return range(start, (max(top, start) if slash else start) + 1, step)
    if not first or not last:
        raise CronError(f"{spec.name}: {base!r} is not a range", spec.name)
    start, end = _value(spec, first), _value(spec, last, range_end=True)
    if start > end:
        raise CronError(f"{spec.name}: range {base!r} goes backwards", spec.name)
    return range(start, end + 1, step)


def _field(spec: _Spec, text: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        values.update(_item(spec, item, text))
    if spec.names is _WEEKDAYS and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


def _expand(text: str) -> list[str]:
    stripped = text.strip()
    if stripped.startswith("@"):
        macro = stripped.lower()
        if macro == "@reboot":
            raise CronError("@reboot is not supported: a schedule needs a time of day to fire at")
        if macro not in MACROS:
            known = " ".join(MACROS)
            raise CronError(f"{stripped!r} is not a known macro (one of {known})")
        stripped = MACROS[macro]
    parts = stripped.split()
    if len(parts) != 5:
        raise CronError(
            f"expected 5 fields ({' '.join(FIELD_NAMES)}), got {len(parts)} in {text!r}"
        )
    return parts


@dataclass(frozen=True)
class CronExpr:
    """A parsed expression: the allowed values of each field plus the flags that steer the
    day-matching and DST rules. Build it with `parse`."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]  # day-of-month, 1-31
    months: tuple[int, ...]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    dom_restricted: bool  # day-of-month does not start with `*`
    dow_restricted: bool  # day-of-week does not start with `*`
    fixed_time: bool  # minute and hour hold no `*` and no step

    @classmethod
    def parse(cls, text: str) -> CronExpr:
        parts = _expand(text)
        sets = [_field(spec, part) for spec, part in zip(_SPECS, parts, strict=True)]
        minute, hour, dom, _, dow = parts
        expr = cls(
            text=text.strip(),
            minutes=tuple(sorted(sets[0])),
            hours=tuple(sorted(sets[1])),
            days=sets[2],
            months=tuple(sorted(sets[3])),
            weekdays=sets[4],
            dom_restricted=not dom.startswith("*"),
            dow_restricted=not dow.startswith("*"),
            fixed_time=not any(c in minute + hour for c in "*/"),
        )
        expr._check_matchable()
        return expr

    def is_fixed_time(self) -> bool:
        """True when DST gaps shift and repeated hours dedupe fires (see the module doc)."""
        return self.fixed_time

    def _check_matchable(self) -> None:
        # With the OR rule any weekday of any month matches. With the AND rule every
        # (month, day) pair falls on every weekday within 400 years, and a `*`-led
        # day-of-month always holds day 1, so a valid (month, day) pair is all it takes.
        if self.dom_restricted and self.dow_restricted:
            return
        if any(d <= _MAX_MONTH_DAYS[m] for m in self.months for d in self.days):
            return
        days = ",".join(str(d) for d in sorted(self.days))
        months = ",".join(str(m) for m in self.months)
        raise CronError(
            f"{self.text!r} can never match: day-of-month {days} never occurs in month {months}",
            "day-of-month",
        )

    def next_after(self, after: datetime, tz: tzinfo) -> datetime:
        """The first fire instant strictly after `after`, as an aware UTC datetime, with the
        expression read on the wall clock of `tz`."""
        if after.tzinfo is None or after.utcoffset() is None:
            raise ValueError("next_after needs an aware datetime")
        start = after.astimezone(UTC)
        last_year = min(MAXYEAR - 1, start.year + MAX_SEARCH_YEARS)
        try:
            if self.fixed_time:
                found = self._next_fixed(start, tz, last_year)
            else:
                found = self._next_elapsed(start, tz, last_year)
        except OverflowError:
            found = None
        if found is None:
            raise CronError(
                f"{self.text!r} has no fire time between {start:%Y-%m-%d} and year {last_year}"
            )
        return found

    def _next_fixed(self, after: datetime, tz: tzinfo, last_year: int) -> datetime | None:
        # Each matching wall time fires when the wall clock first reaches it. That instant
        # never decreases as the wall time grows, so the first one past `after` is the answer.
        wall = _ceil_minute(_local(after, tz), inclusive=False)
        while (found := self._next_wall(wall, last_year)) is not None:
            instant = _first_reach(found, tz)
            if instant > after:
                return instant
            wall = found + _MINUTE  # an earlier occurrence of a repeated hour: skip it
        return None

    def _next_elapsed(self, after: datetime, tz: tzinfo, last_year: int) -> datetime | None:
        # Walk the stretches of constant UTC offset: within one, wall time is UTC plus the
        # offset, so the next matching wall time maps straight back to an instant.
        at, inclusive = after, False
        while True:
            offset = _offset(tz, at)
            wall = _ceil_minute((at + offset).replace(tzinfo=None), inclusive=inclusive)
            found = self._next_wall(wall, last_year)
            if found is None:
                return None
            candidate = (found - offset).replace(tzinfo=UTC)
            change = _next_transition(tz, at, candidate)
            if change is None:
                return candidate
            at, inclusive = change, True

    def _next_wall(self, start: datetime, last_year: int) -> datetime | None:
        """The first matching naive wall time at or after `start`, skipping whole months,
        days and hours at a time."""
        year, month, day, hour, minute = (
            start.year,
            start.month,
            start.day,
            start.hour,
            start.minute,
        )
        months, hours, minutes = self.months, self.hours, self.minutes
        while year <= last_year:
            i = bisect_left(months, month)
            if i == len(months):
                year, month, day, hour, minute = year + 1, months[0], 1, 0, 0
                continue
            if months[i] != month:
                month, day, hour, minute = months[i], 1, 0, 0
            next_day = self._next_day(year, month, day)
            if next_day is None:
                month, day, hour, minute = month + 1, 1, 0, 0
                continue
            if next_day != day:
                day, hour, minute = next_day, 0, 0
            j = bisect_left(hours, hour)
            if j == len(hours):
                day, hour, minute = day + 1, 0, 0
                continue
            if hours[j] != hour:
                hour, minute = hours[j], 0
            k = bisect_left(minutes, minute)
            if k == len(minutes):
                hour, minute = hour + 1, 0
                continue
            return datetime(year, month, day, hour, minutes[k])
        return None

    def _next_day(self, year: int, month: int, day: int) -> int | None:
        first_weekday, length = calendar.monthrange(year, month)
        either = self.dom_restricted and self.dow_restricted
        days, weekdays = self.days, self.weekdays
        for d in range(day, length + 1):
            weekday = (first_weekday + d) % 7  # Monday=0 in calendar, Sunday=0 in cron
            if either:
                if d in days or weekday in weekdays:
                    return d
            elif d in days and weekday in weekdays:
                return d
        return None


def parse(text: str) -> CronExpr:
    """Parse a cron expression; raises CronError naming the offending field."""
    return CronExpr.parse(text)


def _ceil_minute(wall: datetime, *, inclusive: bool) -> datetime:
    floor = wall.replace(second=0, microsecond=0)
    return floor if inclusive and floor == wall else floor + _MINUTE


def _local(instant: datetime, tz: tzinfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def _offset(tz: tzinfo, instant: datetime) -> timedelta:
    return instant.astimezone(tz).utcoffset() or timedelta(0)


def _first_reach(wall: datetime, tz: tzinfo) -> datetime:
    """The first instant at which the wall clock of `tz` shows `wall` or later: the first
    occurrence of a repeated time, the end of the gap for a skipped one."""
    early = wall.replace(tzinfo=tz).astimezone(UTC)
    if _local(early, tz) == wall:
        return early
    # In a gap, fold=0 reads `wall` with the offset from before the change and fold=1 with
    # the one after, so the change lies between the two readings.
    late = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    low, high = min(early, late), max(early, late)
    return _next_transition(tz, low, high) or high


def _next_transition(tz: tzinfo, after: datetime, until: datetime) -> datetime | None:
    """The first offset change of `tz` in (after, until], both UTC."""
    for year in range(after.year, until.year + 1):
        changes = _transitions(tz, year)
        i = bisect_right(changes, after)
        if i < len(changes):
            return changes[i] if changes[i] <= until else None
    return None


@functools.lru_cache(maxsize=4096)
def _transitions(tz: tzinfo, year: int) -> tuple[datetime, ...]:
    """The instants in UTC `year` from which `tz` uses a new offset (daily samples, then a
    bisection to the second inside each day whose offset changed)."""
    start = datetime(year, 1, 1, tzinfo=UTC)
    days = 366 if calendar.isleap(year) else 365
    first = 0 if year > MINYEAR else 1
    samples = [start + timedelta(days=k, seconds=-1) for k in range(first, days + 1)]
    found: list[datetime] = []
    for low, high in itertools.pairwise(samples):
        found.extend(_changes_between(tz, low, high))
    return tuple(found)


def _changes_between(tz: tzinfo, low: datetime, high: datetime) -> Iterable[datetime]:
    while _offset(tz, low) != _offset(tz, high):
        before = _offset(tz, low)
        lo, hi = 0, int((high - low).total_seconds())  # offset(low + lo) == before
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _offset(tz, low + timedelta(seconds=mid)) == before:
                lo = mid
            else:
                hi = mid
        low += timedelta(seconds=hi)
        yield low
