"""The reconciling scan: find every transcript and spool file the store has not fully read.

Watchers can miss events (kernel queue overflow, network file systems, a server that was
down), so the files on disk are the truth: a transcript whose size differs from what was
read, or that is not ``processed`` yet, and a spool file whose size differs from its read
offset, go back on the ingest queue. :func:`reconcile` runs the scan at start-up and then
every ``scan_interval`` seconds, so nothing waits longer than that even with no watcher.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread

from service.ingest.queue import IngestQueue
from service.ingest.spool import is_spool_name
from service.settings import UPLOAD_TEMP_PREFIX, Settings
from service.store import Store, files
from service.store.spool import read_offsets

log = logging.getLogger("agnes.watchers")


def archived_files(settings: Settings) -> list[tuple[Path, str, int]]:
    """Every transcript under ``user_sessions/<folder>/`` as (path, relative path, size);
    temporary names (leading dot) and symlinks are not transcripts."""
    found: list[tuple[Path, str, int]] = []
    try:
        # by the resolved path, as ingest and the watcher name files: DATA_DIR may be a link
        folders = sorted(os.scandir(settings.sessions_dir.resolve()), key=lambda e: e.name)
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


def spool_files(settings: Settings) -> list[tuple[Path, str, int]]:
    """Every spool file ``audit/*.jsonl`` as (path, name, size); no symlinks, no dot names."""
    try:
        entries = sorted(os.scandir(settings.audit_dir.resolve()), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    return [
        (Path(entry.path), entry.name, entry.stat().st_size)
        for entry in entries
        if is_spool_name(entry.name) and entry.is_file(follow_symlinks=False)
    ]


def unread_files(settings: Settings, store: Store, *, changed_only: bool = False) -> list[Path]:
    """Transcripts and spool files with bytes the store has not read.

    By default every transcript not fully processed counts, failed ones included (the
    start-up scan: a user added since may own an orphaned folder). ``changed_only`` (the
    periodic scan) leaves out what reading again cannot change: failed files and torn last
    lines whose file has not changed size since it was last read. A spool file counts
    whenever its size differs from its read offset: reading it again costs a few bytes and
    stores nothing twice.
    """
    archived = archived_files(settings)
    on_disk = [(relative, size) for _, relative, size in archived]
    wanted = store.read_sync(files.unread_paths, on_disk, changed_only=changed_only)
    unread = [path for path, relative, _ in archived if relative in wanted]
    offsets = store.read_sync(read_offsets)
    unread += [path for path, name, size in spool_files(settings) if offsets.get(name) != size]
    return unread


def remove_killed_uploads(settings: Settings) -> int:
    """Delete the temp files of uploads a killed server left half-written (never
    transcripts: an upload's bytes count only once renamed into place); returns how many."""
    removed = 0
    for temp in settings.sessions_dir.glob(f"*/{UPLOAD_TEMP_PREFIX}*.tmp"):
        try:
            temp.unlink()
        except OSError as exc:
            log.warning("cannot remove %s, left by an interrupted upload: %s", temp, exc)
        else:
            removed += 1
    return removed


async def reconcile(
    settings: Settings, store: Store, queue: IngestQueue, stop: anyio.Event
) -> None:
    """Tidy what a killed server left (:func:`remove_killed_uploads`), then queue every
    unread file now and every ``settings.scan_interval`` seconds, until ``stop`` is set.
    A failed scan is logged and tried again next period."""
    removed = await anyio.to_thread.run_sync(remove_killed_uploads, settings)
    if removed:
        log.info("removed %d temp files of interrupted uploads", removed)
    changed_only = False
    while not stop.is_set():
        scan = partial(unread_files, settings, store, changed_only=changed_only)
        try:
            # Abandoned on cancel, so a scan of a large archive never holds up shutdown.
            unread = await anyio.to_thread.run_sync(scan, abandon_on_cancel=True)
        except Exception:
            log.exception("reconciling scan failed; trying again in %s s", settings.scan_interval)
        else:
            queue.put(unread)
            changed_only = True
        with anyio.move_on_after(settings.scan_interval):
            await stop.wait()
