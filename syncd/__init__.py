"""syncd: a sync-job runner with one pool, one SQLite queue and one control socket."""

__version__ = "0.1.0"
