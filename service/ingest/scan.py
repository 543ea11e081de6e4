"""The reconciling scan: find every transcript the store has not fully read.

Watchers can miss events (kernel queue overflow, network file systems, a server that was
down), so the archive on disk is the truth: any file whose size differs from what was read,
or that is not ``processed`` yet, goes back on the ingest queue.
"""

from __future__ import annotations

import os
from pathlib import Path

from service.settings import Settings
from service.store import Cursor, Store


def archived_files(settings: Settings) -> list[tuple[Path, str, int]]:
    """Every transcript under ``user_sessions/<folder>/`` as (path, relative path, size);
    temporary names (leading dot) and symlinks are not transcripts."""
    found: list[tuple[Path, str, int]] = []
    try:
        folders = sorted(os.scandir(settings.sessions_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return found
    for folder in folders:
        if not folder.is_dir(follow_symlinks=False):
            continue
        for entry in sorted(os.scandir(folder.path), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            found.append((Path(entry.path), f"{folder.name}/{entry.name}", entry.stat().st_size))
    return found


def _read_so_far(cur: Cursor) -> dict[str, tuple[int, str]]:
    rows = cur.execute("SELECT path, read_offset, status FROM files").fetchall()
    return {str(r[0]): (int(r[1]), str(r[2])) for r in rows}


def unread_files(settings: Settings, store: Store) -> list[Path]:
    known = store.read_sync(_read_so_far)
    unread = []
    for path, relative, size in archived_files(settings):
        read = known.get(relative)
        if read is None or read[1] != "processed" or read[0] != size:
            unread.append(path)
    return unread
