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


def _read_so_far(cur: Cursor) -> dict[str, tuple[int, str]]:
    rows = cur.execute("SELECT path, read_offset, status FROM files").fetchall()
    return {str(r[0]): (int(r[1]), str(r[2])) for r in rows}


def unread_files(settings: Settings, store: Store) -> list[Path]:
    known = store.read_sync(_read_so_far)
    found: list[Path] = []
    root = settings.sessions_dir
    try:
        folders = list(os.scandir(root))
    except FileNotFoundError:
        return found
    for folder in folders:
        if not folder.is_dir(follow_symlinks=False):
            continue
        for entry in os.scandir(folder.path):
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            read = known.get(f"{folder.name}/{entry.name}")
            if read is None or read[1] != "processed" or read[0] != entry.stat().st_size:
                found.append(Path(entry.path))
    return found
