"""Bridges from the systems syncd replaces: `syncd import celery-beat` turns the periodic tasks
of django-celery-beat (the JSON of `manage.py dumpdata django_celery_beat`) into
`[[schedules]]` TOML plus a report of what could not be converted and why.

The conversion is pure (data in, schedules and a report out; `dumpdata` reads, `beat` decides,
`emit` writes TOML and the report), so every rule is unit tested without Django. This package
sits above the daemon's control side and below the `syncd` program, and uses only the config
(routes, params rules), the cron parser and core."""
