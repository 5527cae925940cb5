"""Time-driven work: cron schedules firing into the one submit path, and maintenance."""
