"""Versioned schema migrations, applied in order at start-up.

Each ``NNNN_name.sql`` file in this folder is one migration, and so is each
``NNNN_name.py`` module, whose ``upgrade(cur)`` runs it (for a step that SQL cannot say,
such as filling a table by a rule written in Python); the highest number applied is kept
in ``schema_migrations``. A migration runs inside the writer's transaction, so a failing
one leaves the database as it was. A SQL migration whose new columns or tables must be
filled from what SQL cannot read (the transcripts themselves) also has a step in
:mod:`service.store.migrations.steps`, run right after its SQL with ``DATA_DIR/user_sessions``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from service.store import Cursor

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.(sql|py)$")

Migration: TypeAlias = "str | Callable[[Cursor], None]"
"""SQL text, or a function that upgrades through the cursor it is given."""

MEMORY_LIMIT = 2**30
"""DuckDB's ``memory_limit`` while migrations run, when the store's is higher. A migration
that writes a table of millions of rows again (0004, 0005) sorts it and builds its index,
and takes whatever the limit allows; under this one DuckDB spills the sort to its temp
files instead (``bench/migration.py``, figures in ``bench/README.md``)."""


def available() -> list[tuple[int, Migration]]:
    """(version, migration) of every migration shipped with the package, in order."""
    found: list[tuple[int, Migration]] = []
    for entry in resources.files(__package__).iterdir():
        match = _NAME.match(entry.name)
        if not match:
            continue
        if match.group(2) == "sql":
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
        else:
            module = importlib.import_module(f"{__package__}.{entry.name.removesuffix('.py')}")
            found.append((int(match.group(1)), module.upgrade))
    versions = [version for version, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {sorted(versions)}")
    return sorted(found, key=lambda pair: pair[0])


def migrate(cur: Cursor, target: int | None = None, sessions_dir: Path | None = None) -> int:
    """Bring the schema up to ``target`` (default: the newest); returns the version now.

    ``sessions_dir`` is ``DATA_DIR/user_sessions``, where steps read transcripts (None:
    files are taken as gone)."""
    from service.store.migrations import steps

    cur.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
    )
    row = cur.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    current = int(row[0]) if row else 0
    pending = [
        (version, step)
        for version, step in available()
        if version > current and (target is None or version <= target)
    ]
    if not pending:
        return current
    limit = cur.execute("SELECT current_setting('memory_limit')").fetchone()
    assert limit is not None
    capped = _bytes(str(limit[0])) > MEMORY_LIMIT
    if capped:
        cur.execute(f"SET memory_limit = '{MEMORY_LIMIT // 2**20}MiB'")
    for version, step in pending:
        if isinstance(step, str):
            cur.execute(step)
        else:
            step(cur)
        fill = steps.STEPS.get(version)
        if fill is not None:
            fill(cur, sessions_dir)
        cur.execute("INSERT INTO schema_migrations VALUES (?, ?)", [version, datetime.now(UTC)])
        current = version
    # Not in a ``finally``: after a failed step the transaction is aborted, DuckDB refuses
    # even a SET, and that error would hide the step's; the store does not open then.
    if capped:  # as DuckDB shows it, rounded (a Store sets its own again)
        cur.execute(f"SET memory_limit = '{limit[0]}'")
    return current


_UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def _bytes(setting: str) -> int:
    """Bytes of a DuckDB size as ``current_setting`` gives it (``"5.8 GiB"``)."""
    number, unit = setting.split()
    return round(float(number) * _UNITS[unit])
