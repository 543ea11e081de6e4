"""The audit spool's part of an ingest batch: new events stored exactly once, and where
reading of each spool file stopped. Runs inside :func:`service.store.ingest.apply_batch`'s
transaction, so an event and the offset past its line are committed together."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from service.ingest.spool import KnownSpool, SpoolResult
from service.store import audit, one_of

if TYPE_CHECKING:
    from service.store import Cursor

ERROR_PREFIX = "audit/"  # spool paths in processing_errors, apart from transcripts


def known_spools(cur: Cursor, paths: Sequence[str]) -> dict[str, KnownSpool]:
    where, params = one_of("path", paths)
    rows = cur.execute(
        f"SELECT path, read_offset, fingerprint, bad_lines FROM spool_files WHERE {where}",
        params,
    ).fetchall()
    return {
        r[0]: KnownSpool(path=r[0], read_offset=r[1], fingerprint=r[2], bad_lines=r[3])
        for r in rows
    }


def read_offsets(cur: Cursor) -> dict[str, int]:
    """Where reading stopped in every spool file (for the reconciling scan)."""
    rows = cur.execute("SELECT path, read_offset FROM spool_files").fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def apply_spools(cur: Cursor, spools: Sequence[SpoolResult]) -> dict[str, set[str]]:
    """Store the batch's spool events and offsets; returns, for every user who got a new
    event, the dashboard tabs those events show on (an empty set if none)."""
    now = datetime.now(UTC)
    events = []
    for spool in spools:
        if spool.error is not None:
            cur.execute(
                "INSERT INTO processing_errors VALUES (?, ?, ?)",
                [ERROR_PREFIX + spool.path, now, spool.error],
            )
            continue
        events.extend(spool.events)
        row = [spool.read_offset, spool.fingerprint, spool.bad_lines, spool.path]
        # An UPDATE, and an INSERT only for a new file: a DuckDB upsert costs several times
        # as much, and this runs for every append.
        updated = cur.execute(
            "UPDATE spool_files SET read_offset = ?, fingerprint = ?, bad_lines = ? WHERE path = ?",
            row,
        ).fetchall()
        if not updated or not updated[0][0]:
            cur.execute(
                "INSERT INTO spool_files (read_offset, fingerprint, bad_lines, path)"
                " VALUES (?, ?, ?, ?)",
                row,
            )
    changed: dict[str, set[str]] = {}
    for user_id, action in audit.store_new_events(cur, events):
        tabs = changed.setdefault(user_id, set())
        tab = audit.tab_of(action)
        if tab is not None:
            tabs.add(tab)
    return changed
