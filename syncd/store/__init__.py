"""The durable queue and history in SQLite: the only package that imports sqlite3."""
