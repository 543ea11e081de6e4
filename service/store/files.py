"""Transcript files known to the service, by path relative to ``user_sessions/``."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pyarrow as pa

from service.models import AuditEvent, ManifestFile
from service.store import audit
from service.store.stats import download_url

if TYPE_CHECKING:
    from service.store import Cursor


def mark_pending(
    cur: Cursor,
    *,
    path: str,
    user_id: str | None,
    name: str,
    session_file: str,
    is_subagent: bool,
    size: int,
) -> None:
    """Record that a file arrived (or changed) and waits for ingest; a file that ingest
    already read at this size (a watcher can be quicker than the upload handler) stays
    processed."""
    cur.execute(
        """
        INSERT INTO files (path, user_id, name, session_file, is_subagent, size, first_seen_at)
        VALUES (?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (path) DO UPDATE SET status = 'pending', size = excluded.size
        WHERE files.status <> 'processed' OR files.size <> excluded.size
        """,
        [path, user_id, name, session_file, is_subagent, size, datetime.now(UTC)],
    )


class Arrival(msgspec.Struct, frozen=True, kw_only=True):
    """A transcript an upload has just renamed into place, and the upload's audit event:
    stored in the transaction of the ingest batch that reads the file."""

    path: str  # relative to user_sessions/
    user_id: str
    name: str
    session_file: str
    is_subagent: bool
    size: int
    event: AuditEvent


def record_arrivals(cur: Cursor, arrivals: Sequence[Arrival], read: Collection[str]) -> None:
    """Store the uploads' audit events (one statement for all), and mark pending each
    arrived file the same transaction did not read (``read``: the paths it did; a file
    read is processed, or recorded with its error, already)."""
    for arrival in arrivals:
        if arrival.path not in read:
            mark_pending(
                cur,
                path=arrival.path,
                user_id=arrival.user_id,
                name=arrival.name,
                session_file=arrival.session_file,
                is_subagent=arrival.is_subagent,
                size=arrival.size,
            )
    audit.insert_fresh_events(cur, [arrival.event for arrival in arrivals])


def find_path(cur: Cursor, user_id: str, name: str) -> str | None:
    """The stored path of one of the user's files, or None: no name reaches another user."""
    row = cur.execute(
        "SELECT path FROM files WHERE user_id = ? AND name = ? ORDER BY path LIMIT 1",
        [user_id, name],
    ).fetchone()
    return str(row[0]) if row else None


def manifest_files(cur: Cursor, user_id: str, sessions_dir: Path) -> list[ManifestFile]:
    """The user's files with their size on disk now: the stored size lags behind when the
    same name is uploaded again while the first upload is still being read."""
    rows = cur.execute(
        "SELECT name, size, path FROM files WHERE user_id = ? ORDER BY name", [user_id]
    ).fetchall()
    listed = []
    for name, stored_size, path in rows:
        try:
            size = (sessions_dir / path).stat().st_size
        except OSError:
            size = stored_size  # gone from disk (its numbers stay): what was read
        listed.append(ManifestFile(name=name, size=size, download_url=download_url(name)))
    return listed


def unread_paths(
    cur: Cursor, on_disk: Sequence[tuple[str, int]], *, changed_only: bool
) -> set[str]:
    """The paths among ``on_disk`` (relative path, size) with bytes not read yet.

    New and pending files always count. Otherwise, by default, any file not fully
    processed (failed ones included); with ``changed_only``, only processed files whose
    size changed (reading a failed file or a torn last line again changes nothing until
    the file does). Compared in the database, so a large archive costs no Python loop
    over every known file."""
    if not on_disk:
        return set()
    disk = pa.table(
        {
            "path": pa.array([p for p, _ in on_disk], pa.string()),
            "size": pa.array([s for _, s in on_disk], pa.int64()),
        }
    )
    cur.register("on_disk", disk)
    try:
        rows = cur.execute(
            """
            SELECT d.path FROM on_disk d LEFT JOIN files f ON f.path = d.path
            WHERE f.path IS NULL OR f.status = 'pending'
               OR CASE WHEN $changed_only THEN f.status = 'processed' AND f.size <> d.size
                       ELSE f.status <> 'processed' OR f.read_offset <> d.size END
            """,
            {"changed_only": changed_only},
        ).fetchall()
    finally:
        cur.unregister("on_disk")
    return {str(r[0]) for r in rows}
