"""Bridges from the systems syncd replaces: django-celery-beat periodic tasks to schedules."""
