"""Versioned schema migrations, applied in order at start-up.

Each ``NNNN_name.sql`` file in this folder is one migration; the highest number applied is
kept in ``schema_migrations``. A migration runs inside the writer's transaction, so a
failing one leaves the database as it was.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.store import Cursor

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def available() -> list[tuple[int, str]]:
    """(version, SQL text) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files(__package__).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(cur: Cursor, target: int | None = None) -> int:
    """Bring the schema up to ``target`` (default: the newest); returns the version now."""
    cur.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
    )
    row = cur.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    current = int(row[0]) if row else 0
    for version, sql in available():
        if version <= current or (target is not None and version > target):
            continue
        cur.execute(sql)
        cur.execute("INSERT INTO schema_migrations VALUES (?, ?)", [version, datetime.now(UTC)])
        current = version
    return current
