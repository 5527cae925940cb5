"""A tiny real Django project with django-celery-beat, as the people who adopt syncd have:
an `ingestion` app whose syncs are management commands, and periodic tasks of every kind
in django-celery-beat's tables. The bridge tests build it; so does the README transcript:

    python -m tests.helpers.django_project /tmp/warehouse    # project, migrated, beat rows

`manage.py` appends a line to $PROBE_LOG (when set) each time it starts, so a test can count
how often the probe asked it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

COMMANDS = {
    "sync_hubspot_contacts": "contacts",
    "sync_hubspot_deals": "deals",
    "sync_hubspot_all": "everything in HubSpot",
    "sync_genius_all": "everything in Genius",
}

MANAGE_PY = """\
#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    if os.environ.get("PROBE_LOG"):
        with open(os.environ["PROBE_LOG"], "a") as f:
            f.write(" ".join(sys.argv[1:]) + "\\n")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "warehouse.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""

SETTINGS = """\
SECRET_KEY = "test-only"
INSTALLED_APPS = ["django_celery_beat", "ingestion"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
"""

COMMAND = """\
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Sync {what}."

    def add_arguments(self, parser):
        parser.add_argument("--full", action="store_true")
        parser.add_argument("--since")
        parser.add_argument("--batch-size", type=int, default=100)

    def handle(self, *args, **opts):
        self.stdout.write(
            f"{name}: full={{opts['full']}} since={{opts['since']}} batch={{opts['batch_size']}}"
        )
"""

# One periodic task of every kind the import meets: converted, reported, not needed.
BEAT_SCRIPT = """\
import datetime
import json
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "warehouse.settings")
django.setup()

from django_celery_beat.models import (  # noqa: E402
    ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule,
)

UTC = datetime.timezone.utc


def cron(minute, hour="*", dom="*", month="*", dow="*", tz="UTC"):
    return CrontabSchedule.objects.create(
        minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow,
        timezone=tz,
    )


def every(n, period):
    return IntervalSchedule.objects.create(every=n, period=period)


def task(name, task, **kw):
    PeriodicTask.objects.create(name=name, task=task, **kw)


task("HubSpot contacts", "ingestion.tasks.sync_hubspot_contacts",
     crontab=cron("*/2", tz="America/New_York"),
     kwargs=json.dumps({"full": True, "batch_size": 500}))
task("HubSpot deals nightly", "ingestion.tasks.sync_hubspot_deals",
     crontab=cron("30", "2", dow="mon-fri", tz="Europe/Paris"), enabled=False)
task("Genius every 15 min", "ingestion.tasks.sync_genius_all", interval=every(15, "minutes"))
task("Genius every 7 min", "ingestion.tasks.sync_genius_all", interval=every(7, "minutes"))
task("HubSpot at sunrise", "ingestion.tasks.sync_hubspot_all",
     solar=SolarSchedule.objects.create(event="sunrise", latitude=40.7128, longitude=-74.006))
task("HubSpot once", "ingestion.tasks.sync_hubspot_all", one_off=True,
     clocked=ClockedSchedule.objects.create(
         clocked_time=datetime.datetime(2031, 1, 1, 6, 0, tzinfo=UTC)))
task("HubSpot contacts EU", "ingestion.tasks.sync_hubspot_contacts",
     crontab=cron("0"), kwargs=json.dumps({"region": "eu"}))
task("First Monday deals", "ingestion.tasks.sync_hubspot_deals",
     crontab=cron("0", "6", dom="1-7", dow="1"))
task("Newsletter", "marketing.tasks.send_newsletter", crontab=cron("0", "9", dow="1"))
task("Legacy CRM everything", "legacy.jobs.crm_everything", interval=every(6, "hours"))
task("celery.backend_cleanup", "celery.backend_cleanup", crontab=cron("0", "4"),
     expire_seconds=43200)
"""


def write_project(root: Path) -> Path:
    """The project's files under `root` (created); returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "manage.py").write_text(MANAGE_PY)
    (root / "manage.py").chmod(0o755)
    (root / "warehouse").mkdir(exist_ok=True)
    (root / "warehouse" / "__init__.py").write_text("")
    (root / "warehouse" / "settings.py").write_text(SETTINGS)
    commands = root / "ingestion" / "management" / "commands"
    commands.mkdir(parents=True, exist_ok=True)
    for folder in (root / "ingestion", root / "ingestion" / "management", commands):
        (folder / "__init__.py").write_text("")
    for name, what in COMMANDS.items():
        (commands / f"{name}.py").write_text(COMMAND.format(name=name, what=what))
    (root / "make_beat.py").write_text(BEAT_SCRIPT)
    return root


def manage(root: Path, *args: str) -> str:
    """Run `python manage.py ARGS` in the project; its stdout (fails on a non-zero exit)."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def populate(root: Path) -> None:
    """migrate, then the periodic tasks of BEAT_SCRIPT."""
    manage(root, "migrate", "--verbosity", "0")
    subprocess.run(
        [sys.executable, "make_beat.py"], cwd=root, check=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def config_text(project: Path, routes: dict[str, dict[str, str]], extra: str = "") -> str:
    """A config whose string routes run `manage.py COMMAND` in the project."""
    lines = [
        "[defaults]",
        f'command_prefix = ["{sys.executable}", "manage.py"]',
        f'cwd = "{project}"',
        'env = { DJANGO_SETTINGS_MODULE = "warehouse.settings" }',
        'allowed_params = ["full", "since", "batch-size"]',
    ]
    for source, table in routes.items():
        lines.append(f"[sources.{source}.routes]")
        lines += [f'{k} = "{v}"' for k, v in table.items()]
    return "\n".join(lines) + "\n" + extra


ROUTES = {
    "hubspot": {
        "contacts": "sync_hubspot_contacts",
        "deals": "sync_hubspot_deals",
        "all": "sync_hubspot_all",
    },
    "genius": {"all": "sync_genius_all"},
}


def syncd(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The `syncd` program as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdin=None if stdin is not None else subprocess.DEVNULL,
        check=False,
    )


if __name__ == "__main__":
    target = write_project(Path(sys.argv[1]))
    populate(target)
    print(target)
