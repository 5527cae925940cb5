"""One real Django project (with django-celery-beat) for the whole package: written once,
migrated once (slow), its periodic tasks dumped once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.django_project import manage, populate, write_project


@pytest.fixture(scope="package")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_project(tmp_path_factory.mktemp("warehouse"))


@pytest.fixture(scope="package")
def beat_dump(django_project: Path) -> Path:
    """`manage.py dumpdata django_celery_beat` of the project's periodic tasks."""
    populate(django_project)
    dump = django_project.parent / "beat.json"
    dump.write_text(manage(django_project, "dumpdata", "django_celery_beat", "--indent", "1"))
    return dump
