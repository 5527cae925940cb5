"""`syncd import celery-beat` on the dumpdata of a real django-celery-beat database: the TOML
it prints, the report of what it did not convert, and that the TOML pasted into the config
passes `syncd check`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.django_project import ROUTES, config_text, syncd

MAP = "legacy.jobs.crm_everything=hubspot.all"

EXPECTED_TOML = """\
# Imported from django-celery-beat by `syncd import celery-beat`: 4 of 11 periodic tasks.

# Celery periodic task 1 "HubSpot contacts": ingestion.tasks.sync_hubspot_contacts
# kwarg batch_size is passed as --batch-size
[[schedules]]
name = "hubspot-contacts"
cron = "*/2 * * * *"
source = "hubspot"
sync_type = "contacts"
timezone = "America/New_York"
params = { full = true, batch-size = 500 }

# Celery periodic task 2 "HubSpot deals nightly": ingestion.tasks.sync_hubspot_deals
[[schedules]]
name = "hubspot-deals-nightly"
cron = "30 2 * * mon-fri"
source = "hubspot"
sync_type = "deals"
timezone = "Europe/Paris"
enabled = false

# Celery periodic task 3 "Genius every 15 min": ingestion.tasks.sync_genius_all
# Celery ran it every 15 minutes after the previous run; this cron runs at fixed times (UTC)
[[schedules]]
name = "genius-every-15-min"
cron = "*/15 * * * *"
source = "genius"
sync_type = "all"
timezone = "UTC"

# Celery periodic task 10 "Legacy CRM everything": legacy.jobs.crm_everything
# Celery ran it every 6 hours after the previous run; this cron runs at fixed times (UTC)
[[schedules]]
name = "legacy-crm-everything"
cron = "0 */6 * * *"
source = "hubspot"
sync_type = "all"
timezone = "UTC"
"""

EXPECTED_REPORT = [
    "celery-beat import: 11 periodic task(s): 4 converted, 6 not converted, 1 not needed",
    "not converted (add these by hand, or change them and import again):",
    '  periodic task 4 "Genius every 7 min" (ingestion.tasks.sync_genius_all): interval every'
    " 7 minutes does not divide an hour, so no cron expression repeats it exactly",
    '  periodic task 5 "HubSpot at sunrise" (ingestion.tasks.sync_hubspot_all): solar schedule'
    " (sunrise at 40.712800, -74.006000): cron cannot follow the sun; choose a fixed time and"
    " add it by hand",
    '  periodic task 6 "HubSpot once" (ingestion.tasks.sync_hubspot_all): clocked schedule'
    " (once at 2031-01-01T06:00:00Z): a single run, not a schedule; `syncctl submit` it at"
    " that time",
    '  periodic task 7 "HubSpot contacts EU" (ingestion.tasks.sync_hubspot_contacts): kwargs'
    " region not in the allowed_params of hubspot.contacts (allowed: full, since, batch-size)",
    '  periodic task 8 "First Monday deals" (ingestion.tasks.sync_hubspot_deals): crontab'
    " '0 6 1-7 * 1' restricts both day_of_month and day_of_week: Celery runs on days matching"
    " both, cron on days matching either",
    '  periodic task 9 "Newsletter" (marketing.tasks.send_newsletter): no route runs a command'
    " named 'send_newsletter': map it with --map marketing.tasks.send_newsletter=SOURCE.SYNC_TYPE",
    "not needed in syncd:",
    '  periodic task 11 "celery.backend_cleanup" (celery.backend_cleanup): Celery\'s own cleanup'
    " of expired task results: syncd has no result backend and prunes its own history"
    " (daemon.history_days, prune_at)",
]


def test_the_dump_holds_every_kind_of_periodic_task(beat_dump: Path) -> None:
    objects = json.loads(beat_dump.read_text())
    models = {o["model"].split(".")[1] for o in objects}
    assert {"crontabschedule", "intervalschedule", "solarschedule", "clockedschedule"} <= models
    tasks = [o["fields"] for o in objects if o["model"].endswith(".periodictask")]
    assert len(tasks) == 11
    assert any(not t["enabled"] for t in tasks)
    assert json.loads(tasks[0]["kwargs"]) == {"full": True, "batch_size": 500}


def test_import_prints_the_schedules_and_reports_the_rest(
    beat_dump: Path, django_project: Path, tmp_path: Path
) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(config_text(django_project, ROUTES))
    done = syncd("import", "celery-beat", str(beat_dump), "--map", MAP, "--config", str(config))
    assert done.stdout == EXPECTED_TOML
    assert done.stderr.splitlines() == EXPECTED_REPORT
    assert done.returncode == 1  # some periodic tasks were not converted

    # Pasted into the config, the output passes `syncd check`, and the schedules are there.
    config.write_text(config.read_text() + "\n" + done.stdout)
    check = syncd("check", "--config", str(config), "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    doc = json.loads(check.stdout)
    assert [(s["name"], s["cron"], s["timezone"], s["enabled"]) for s in doc["schedules"]] == [
        ("hubspot-contacts", "*/2 * * * *", "America/New_York", True),
        ("hubspot-deals-nightly", "30 2 * * mon-fri", "Europe/Paris", False),
        ("genius-every-15-min", "*/15 * * * *", "UTC", True),
        ("legacy-crm-everything", "0 */6 * * *", "UTC", True),
    ]


def test_import_reads_stdin_and_avoids_the_names_the_config_already_has(
    beat_dump: Path, django_project: Path, tmp_path: Path
) -> None:
    config = tmp_path / "syncd.toml"
    taken = '[[schedules]]\nname = "hubspot-contacts"\ncron = "0 0 * * *"\nsource = "genius"\n'
    config.write_text(config_text(django_project, ROUTES, taken))
    done = syncd("import", "celery-beat", "-", "--config", str(config), stdin=beat_dump.read_text())
    assert 'name = "hubspot-contacts-2"' in done.stdout.splitlines()
    # Without --map the legacy task has no route: reported, not guessed.
    assert any(
        line.startswith('  periodic task 10 "Legacy CRM everything"') and "--map" in line
        for line in done.stderr.splitlines()
    )
    config.write_text(config.read_text() + "\n" + done.stdout)
    assert syncd("check", "--config", str(config)).returncode == 0


def test_bad_input_and_bad_maps_are_usage_errors_without_a_traceback(
    django_project: Path, tmp_path: Path
) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(config_text(django_project, ROUTES))
    cases = {
        "not json": ("{", [], "not JSON"),
        "a dump of another app": ('[{"model": "auth.user", "pk": 1, "fields": {}}]', [], "no "),
        "a map to no route": ("[]", ["--map", "x.y=hubspot.nope"], "names no route"),
        "a map without =": ("[]", ["--map", "x.y"], "expected TASK=SOURCE.SYNC_TYPE"),
    }
    for what, (text, extra, message) in cases.items():
        done = syncd("import", "celery-beat", "-", "--config", str(config), *extra, stdin=text)
        assert done.returncode == 2, what
        assert message in done.stderr, (what, done.stderr)
        assert "Traceback" not in done.stderr and done.stdout == "", what
