"""The watcher: file changes under ``DATA_DIR`` onto the ingest queue within milliseconds.

One ``watchfiles`` watch covers ``user_sessions/`` (transcripts at
``<folder>/<name>``) and ``audit/`` (spool files ``*.jsonl``). Names starting with a dot
are temporary files (``.upload-*``, ``.backfill-*``, a writer's own) and are ignored: their
rename into place is the change that counts. Changed paths go to
:meth:`~service.ingest.queue.IngestQueue.put`, which coalesces them with anything already
waiting, whoever put it there (the upload handler, the scan); an event for a file that a
batch has read already and that has not changed since (an upload's own rename, usually)
is dropped there without reading the file again.

The watcher only makes ingest quick; it is not what makes it complete. Events can be lost
(a kernel queue overflow, a network file system), so :func:`watchers.scan.reconcile`
catches up on whatever it missed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import anyio
import anyio.to_thread
from watchfiles import Change, awatch

from service.ingest.queue import IngestQueue
from service.ingest.spool import is_spool_name
from service.settings import Settings

__all__ = ["ArchiveFilter", "watch_changes"]

log = logging.getLogger("agnes.watchers")

STEP_MS = 10
"""How long the watch waits for a quiet moment before handing over what it has: a lone
change reaches the queue this soon; a burst is grouped for up to ``debounce_ms``."""

POLL_DELAY_MS = 250
"""How often polling mode looks at every file; each look costs a ``stat`` per file."""

POLL_RECHECK = 1.1
"""Polling compares modification times in whole seconds, so a file changed again within
the second of a change it saw looks unchanged. In polling mode every changed path is
therefore handed over once more this many seconds later, when that second is over."""

RESTART_DELAY = 1.0  # seconds before a watch that failed (a folder removed) starts again


class ArchiveFilter:
    """Lets through changes to transcripts, spool files, and new user folders (whose files
    may have been written before the watch on the folder began)."""

    def __init__(self, settings: Settings) -> None:
        self.sessions = str(settings.sessions_dir.resolve()) + os.sep
        self.audit = str(settings.audit_dir.resolve()) + os.sep

    def __call__(self, change: Change, path: str) -> bool:
        if change == Change.deleted:
            return False  # a file that is gone has nothing to read
        if path.startswith(self.sessions):
            parts = path[len(self.sessions) :].split(os.sep)
            return len(parts) <= 2 and not any(p.startswith(".") for p in parts)
        if path.startswith(self.audit):
            name = path[len(self.audit) :]
            return os.sep not in name and is_spool_name(name)
        return False


def _with_folder_contents(paths: Iterable[Path], sessions_dir: Path) -> list[Path]:
    """The changed files, with the files inside any new user folder among them."""
    found: list[Path] = []
    for path in paths:
        if path.parent != sessions_dir:
            found.append(path)
            continue
        try:
            with os.scandir(path) as entries:
                found += [Path(e.path) for e in entries if e.is_file(follow_symlinks=False)]
        except (NotADirectoryError, FileNotFoundError):
            pass  # a stray file next to the user folders is not a transcript
    return found


async def watch_changes(
    settings: Settings,
    queue: IngestQueue,
    stop: anyio.Event,
    *,
    poll_delay_ms: int = POLL_DELAY_MS,
) -> None:
    """Put changed transcripts and spool files on ``queue`` until ``stop`` is set.

    ``settings.debounce_ms`` bounds how long changes are grouped; ``settings.poll`` swaps
    the kernel's notifications for polling every ``poll_delay_ms`` (for network file
    systems, where notifications do not arrive). Setting ``stop`` ends the watch within
    ``STEP_MS``. A failing watch is logged and started again, never left dead.
    """
    sessions_dir = settings.sessions_dir.resolve()
    audit_dir = settings.audit_dir.resolve()
    watch_filter = ArchiveFilter(settings)

    async def hand_over(paths: set[Path]) -> None:
        if any(path.parent == sessions_dir for path in paths):
            queue.put(await anyio.to_thread.run_sync(_with_folder_contents, paths, sessions_dir))
        else:
            queue.put(paths)

    async def once_more(paths: set[Path]) -> None:
        await anyio.sleep(POLL_RECHECK)
        await hand_over(paths)

    while not stop.is_set():
        try:
            for folder in (sessions_dir, audit_dir):
                folder.mkdir(parents=True, exist_ok=True)
            async with anyio.create_task_group() as rechecks:
                async for changes in awatch(
                    sessions_dir,
                    audit_dir,
                    watch_filter=watch_filter,
                    debounce=settings.debounce_ms,
                    step=min(STEP_MS, settings.debounce_ms),
                    stop_event=stop,
                    force_polling=settings.poll,
                    poll_delay_ms=poll_delay_ms,
                ):
                    paths = {Path(path) for _, path in changes}
                    await hand_over(paths)
                    if settings.poll:
                        rechecks.start_soon(once_more, paths)
                rechecks.cancel_scope.cancel()
        except Exception:
            log.exception("file watch failed; starting it again in %s s", RESTART_DELAY)
            with anyio.move_on_after(RESTART_DELAY):
                await stop.wait()
