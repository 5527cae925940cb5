"""The conversion rules one by one, on hand-made dumps in dumpdata's shape (no Django)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from syncd.bridge.beat import Conversion, Converter, MapError, Target, parse_map
from syncd.bridge.dumpdata import DumpError, parse_dump
from syncd.bridge.emit import report_lines, schedules_toml, toml_string
from syncd.config.load import loads_config
from syncd.config.routing import RouteTable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10 only
    import tomli as tomllib

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
CONFIG = f"""
[defaults]
command_prefix = ["{sys.executable}", "manage.py"]
allowed_params = ["full", "batch-size", "since"]
[sources.crm.routes]
contacts = "sync_crm_contacts"
deals = "sync_crm_deals"
[sources."eu.crm".routes]
"deals.daily" = "sync_eu_deals"
[sources.other.routes]
deals = "sync_crm_deals"
export = {{ argv = ["{sys.executable}", "-m", "export_all"], allowed_params = [] }}
"""


def routes() -> RouteTable:
    return RouteTable.from_config(loads_config(CONFIG, base_dir=Path("/")))


def dump(*tasks: dict[str, Any], schedules: list[dict[str, Any]] | None = None) -> str:
    objects = list(schedules or [])
    cron_fields = {"minute": "0", "hour": "3", "day_of_month": "*", "month_of_year": "*",
              "day_of_week": "*", "timezone": "UTC"}  # fmt: skip
    objects.append({"model": "django_celery_beat.crontabschedule", "pk": 1, "fields": cron_fields})
    for pk, fields in enumerate(tasks, 1):
        base = {"name": f"task {pk}", "task": "app.tasks.sync_crm_contacts", "crontab": 1,
                "interval": None, "solar": None, "clocked": None, "args": "[]", "kwargs": "{}",
                "enabled": True, "one_off": False, "start_time": None, "expires": None}  # fmt: skip
        objects.append(
            {"model": "django_celery_beat.periodictask", "pk": pk, "fields": {**base, **fields}}
        )
    return json.dumps(objects)


def convert(text: str, **kw: Any) -> Conversion:
    return Converter(routes(), now=NOW, **kw).convert(parse_dump(text))


def reasons(conv: Conversion) -> list[str]:
    return [i.message for i in conv.not_converted]


def interval(pk: int, every: int, period: str) -> dict[str, Any]:
    return {"model": "django_celery_beat.intervalschedule", "pk": pk,
            "fields": {"every": every, "period": period}}  # fmt: skip


@pytest.mark.parametrize(
    ("every", "period", "cron"),
    [
        (1, "minutes", "* * * * *"),
        (5, "minutes", "*/5 * * * *"),
        (30, "minutes", "*/30 * * * *"),
        (60, "minutes", "0 * * * *"),
        (120, "seconds", "*/2 * * * *"),
        (1, "hours", "0 * * * *"),
        (8, "hours", "0 */8 * * *"),
        (24, "hours", "0 0 * * *"),
        (1, "days", "0 0 * * *"),
        (300_000_000, "microseconds", "*/5 * * * *"),
        (7, "minutes", None),
        (45, "minutes", None),
        (90, "minutes", None),
        (30, "seconds", None),
        (5, "hours", None),
        (2, "days", None),
        (0, "minutes", None),
    ],
)
def test_an_interval_becomes_cron_only_when_it_divides_evenly(
    every: int, period: str, cron: str | None
) -> None:
    conv = convert(dump({"crontab": None, "interval": 7}, schedules=[interval(7, every, period)]))
    if cron is None:
        assert conv.converted == []
        assert f"interval every {every} {period}" in reasons(conv)[0]
        assert "no cron expression repeats it exactly" in reasons(conv)[0]
    else:
        assert [(c.cron, c.timezone) for c in conv.converted] == [(cron, "UTC")]


def crontab(dom: str, dow: str, tz: str = "UTC") -> dict[str, Any]:
    return {"model": "django_celery_beat.crontabschedule", "pk": 2,
            "fields": {"minute": "0", "hour": "6", "day_of_month": dom, "month_of_year": "*",
                       "day_of_week": dow, "timezone": tz}}  # fmt: skip


@pytest.mark.parametrize(
    ("dom", "dow", "same"),
    [
        ("*", "1", True),
        ("1-7", "*", True),
        ("*/2", "mon", True),  # a field starting with * keeps cron's AND rule too
        ("1-7", "*/2", True),
        ("1-7", "1", False),  # Celery: the first Monday; cron: days 1-7 and every Monday
        ("1", "0-6", False),
    ],
)
def test_a_crontab_restricting_both_day_fields_is_reported(dom: str, dow: str, same: bool) -> None:
    conv = convert(dump({"crontab": 2}, schedules=[crontab(dom, dow)]))
    if same:
        assert [c.cron for c in conv.converted] == [f"0 6 {dom} * {dow}"]
    else:
        assert "restricts both day_of_month and day_of_week" in reasons(conv)[0]


def test_crontab_errors_and_zones_are_reported_with_the_field() -> None:
    bad_hour = crontab("*", "*")
    bad_hour["pk"], bad_hour["fields"]["hour"] = 3, "25"
    schedules = [crontab("31", "*", tz="Mars/Olympus"), bad_hour]
    conv = convert(dump({"crontab": 2}, {"crontab": 3}, schedules=schedules))
    assert "crontab timezone 'Mars/Olympus' is not an IANA zone" in reasons(conv)[0]
    assert reasons(conv)[1].startswith("crontab '0 25 * * *': hour")


def test_kwargs_become_params_the_route_allows() -> None:
    conv = convert(dump({"kwargs": json.dumps({"full": True, "batch_size": 50, "since": "2025"})}))
    (c,) = conv.converted
    assert c.params == {"full": True, "batch-size": 50, "since": "2025"}
    assert "kwarg batch_size is passed as --batch-size" in c.comments


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"region": "eu", "full": True}, "kwargs region not in the allowed_params of crm.contacts"),
        ({"since": None}, "kwarg 'since' is null: a param is a string, number or boolean"),
        ({"since": [1]}, "kwarg 'since' is [1]"),
        ({"since": "a\nb"}, "control characters"),
        ("not json", "is not JSON"),
        ([1], "is not a JSON object"),
    ],
)
def test_kwargs_a_route_cannot_take_are_reported(kwargs: Any, message: str) -> None:
    text = kwargs if isinstance(kwargs, str) else json.dumps(kwargs)
    conv = convert(dump({"kwargs": text}))
    assert conv.converted == []
    assert message in reasons(conv)[0]


def test_every_reason_of_one_task_is_reported_together() -> None:
    conv = convert(
        dump(
            {
                "task": "x.send_mail",
                "args": '["a"]',
                "one_off": True,
                "start_time": "2030-01-01T00:00:00Z",
            }
        )
    )
    (why,) = reasons(conv)
    assert "one_off" in why and "no route runs a command named 'send_mail'" in why
    assert 'positional args ["a"]' in why and "start_time 2030-01-01T00:00:00Z" in why


def test_route_by_command_name_by_map_and_when_ambiguous() -> None:
    conv = convert(
        dump(
            {"task": "app.tasks.sync_crm_deals"},  # crm.deals and other.deals run it
            {"task": "app.tasks.sync_crm_deals"},
            {"task": "app.tasks.sync_eu_deals"},
            {"task": "legacy.big_export"},
        ),
        maps={
            "app.tasks.sync_crm_deals": Target("other", "deals"),
            "legacy.big_export": Target("other", "export"),
        },
    )
    assert [(c.target.source, c.target.sync_type) for c in conv.converted] == [
        ("other", "deals"),
        ("other", "deals"),
        ("eu.crm", "deals.daily"),
        ("other", "export"),
    ]
    conv = convert(dump({"task": "app.tasks.sync_crm_deals"}))
    assert "is run by several routes (crm.deals, other.deals)" in reasons(conv)[0]


def test_map_parsing_tries_every_dot() -> None:
    table = routes()
    assert parse_map("a.b=eu.crm.deals.daily", table) == ("a.b", Target("eu.crm", "deals.daily"))
    assert parse_map(" t = CRM.Contacts ", table) == ("t", Target("crm", "contacts"))
    for bad in ("a.b", "=crm.contacts", "a=crm", "a=crm.nope", "a=nope.contacts"):
        with pytest.raises(MapError):
            parse_map(bad, table)


def test_a_map_to_a_mistyped_sync_type_is_refused_even_with_a_fallback() -> None:
    """Through the fallback, `crm.dealz` resolved to the `all` route: a full resync on the
    imported task's schedule, with exit 0 and nothing reported."""
    text = CONFIG.replace("[sources.crm.routes]", '[sources.crm]\nfallback = "all"\n'
                          '[sources.crm.routes]\nall = "sync_crm_all"')  # fmt: skip
    table = RouteTable.from_config(loads_config(text, base_dir=Path("/")))
    assert table.resolve("crm", "dealz").route.sync_type == "all"  # the fallback is there
    assert parse_map("t=crm.all", table) == ("t", Target("crm", "all"))
    with pytest.raises(MapError, match="names no route"):
        parse_map("t=crm.dealz", table)


def test_disabled_expired_and_future_expiry() -> None:
    conv = convert(
        dump(
            {"enabled": False},
            {"expires": "2025-01-01T00:00:00Z"},
            {"expires": "2026-01-01T00:00:00Z", "priority": 3},
            {"start_time": "2024-01-01T00:00:00Z"},  # past: no effect any more
            {"expire_seconds": 300},  # it was dropped without a word
        )
    )
    assert [c.enabled for c in conv.converted] == [False, False, True, True, True]
    notes = [(n.pk, n.message) for n in conv.notes]
    assert notes == [
        (2, "expired at 2025-01-01T00:00:00Z: imported with enabled = false"),
        (3, "expires at 2026-01-01T00:00:00Z: disable or remove the schedule then"),
        (3, "Celery priority 3 not kept: the route's priority applies"),
        (5, "expire_seconds 300 not kept: Celery dropped a run not started that soon; syncd"
            " keeps it queued until a slot frees (starting_deadline_seconds only skips a fire"
            " that comes late)"),
    ]  # fmt: skip


def test_names_are_slugs_unique_against_the_config_and_each_other() -> None:
    conv = convert(
        dump({"name": "CRM: contacts (hourly)"}, {"name": "crm contacts hourly"}, {"name": "!!!"}),
        taken_names={"crm-contacts-hourly"},
    )
    assert [c.name for c in conv.converted] == [
        "crm-contacts-hourly-2",
        "crm-contacts-hourly-3",
        "celery-3",
    ]


def test_backend_cleanup_is_not_needed_and_does_not_fail_the_import() -> None:
    conv = convert(dump({"name": "celery.backend_cleanup", "task": "celery.backend_cleanup"}))
    assert conv.converted == [] and conv.not_converted == []
    assert [i.task for i in conv.not_needed] == ["celery.backend_cleanup"]
    assert report_lines(conv)[0].endswith("0 converted, 0 not converted, 1 not needed")


def test_broken_objects_are_reported_per_task() -> None:
    objects = json.loads(dump({}, {"crontab": 9}, {"crontab": None}))
    objects.append(
        {"model": "django_celery_beat.periodictask", "pk": 4, "fields": {"name": "x", "task": 5}}
    )
    objects.append({"model": "django_celery_beat.periodictasks", "pk": 1, "fields": {}})
    conv = convert(json.dumps(objects))
    assert len(conv.converted) == 1
    assert reasons(conv) == [
        "unreadable: task: expected a string, got number",
        "its crontab schedule (pk 9) is not in the input: dump the whole app "
        "(`manage.py dumpdata django_celery_beat`)",
        "no schedule set",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ('{"a": 1}', "expected a JSON list of objects, got a object"),
        ("[1]", "[0]: expected an object with model, pk and fields"),
        ('[{"model": "django_celery_beat.crontabschedule", "pk": "a", "fields": {}}]', "pk"),
        ("[]", "no django_celery_beat.periodictask objects"),
    ],
)
def test_input_that_is_no_dump(text: str, message: str) -> None:
    with pytest.raises(DumpError, match=message.replace("[", r"\[")):
        parse_dump(text)


def test_toml_output_is_valid_toml_whatever_the_names_hold() -> None:
    tricky = 'Quote " back \\ slash\nnew line \x7f del'
    conv = convert(
        dump({"name": tricky, "description": "line1\nline2", "kwargs": '{"since": "\\""}'})
    )
    text = schedules_toml(conv)
    doc = tomllib.loads(text)
    assert doc["schedules"][0]["params"] == {"since": '"'}
    assert all(line.startswith(("#", "[", "name", "cron", "source", "sync_type", "timezone",
                                "params")) or not line for line in text.splitlines())  # fmt: skip
    assert tomllib.loads(f"x = {toml_string(tricky)}")["x"] == tricky
