"""Backfill: bring a tree of transcripts (``~/.claude/projects``) into the archive.

Every file is copied (atomically, like an upload) into ``user_sessions/<user_id>/`` under
the flat name ``agnes push`` would give it, and then goes through the one ingest path. The
server is the archive: Claude Code deletes its own transcripts after 30 days.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from service.ingest.batch import FileResult

# names.py holds these (push uses them without loading DuckDB); kept importable from here
from service.ingest.names import find_transcripts as find_transcripts
from service.ingest.names import flat_name as flat_name
from service.ingest.pipeline import BatchReport, Ingest, ReadJob, read_file, unread

__all__ = [
    "BATCH_BYTES",
    "BATCH_FILES",
    "archive",
    "archive_all",
    "batches",
    "find_transcripts",
    "flat_name",
    "ingest_files",
    "merge",
]

BATCH_BYTES = 256 * 1024 * 1024
BATCH_FILES = 500


def archive(source: Path, target: Path) -> bool:
    """Copy ``source`` to ``target`` unless it is there already; True if copied."""
    info = source.stat()
    try:
        have = target.stat()
        if have.st_size == info.st_size and int(have.st_mtime) == int(info.st_mtime):
            return False
    except FileNotFoundError:
        pass
    temp = target.with_name(f".backfill-{os.getpid()}-{target.name}.tmp")
    try:
        shutil.copy2(source, temp)
        os.replace(temp, target)
    except OSError:
        temp.unlink(missing_ok=True)
        raise
    return True


def batches(
    files: Sequence[Path], sizes: Sequence[int], batch_bytes: int = BATCH_BYTES
) -> Iterator[tuple[list[Path], int]]:
    """``files`` in batches of about ``batch_bytes``, each with its byte count."""
    batch: list[Path] = []
    size = 0
    for path, file_size in zip(files, sizes, strict=True):
        batch.append(path)
        size += file_size
        if size >= batch_bytes or len(batch) >= BATCH_FILES:
            yield batch, size
            batch, size = [], 0
    if batch:
        yield batch, size


def archive_all(sources: list[tuple[Path, str]], folder: Path) -> list[Path]:
    """Copy ``(source, flat name)`` pairs into ``folder``; returns the archived paths."""
    folder.mkdir(parents=True, exist_ok=True)
    targets = []
    for source, name in sources:
        archive(source, folder / name)
        targets.append(folder / name)
    return targets


def ingest_files(
    ingest: Ingest,
    files: Sequence[Path],
    *,
    sources: Sequence[Path] | None = None,
    progress: Callable[[int], None] = lambda _: None,
    workers: int | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> BatchReport:
    """Ingest many files at once (no server running), in batches read by a process pool.

    With ``sources``, ``files[i]`` is first made a copy of ``sources[i]`` (see
    :func:`archive`) by the worker that then reads it, so copying is spread over the
    pool too. While this process stores one batch, the pool reads the next.
    """
    copy_from = {os.path.abspath(f): str(s) for f, s in zip(files, sources or (), strict=False)}
    sizes = [p.stat().st_size for p in (sources or files)]
    total = BatchReport()
    workers = workers or min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        reading: tuple[Iterator[FileResult], int] | None = None
        for batch, size in batches(files, sizes, batch_bytes):
            for folder in {path.parent for path in batch} if copy_from else ():
                folder.mkdir(parents=True, exist_ok=True)
            jobs = ingest.jobs(batch)
            items = [(copy_from.get(job.absolute), job) for job in jobs]
            started = pool.map(_archive_and_read, items, chunksize=4), size
            if reading is not None:
                _store(ingest, total, *reading, progress)
            reading = started
        if reading is not None:
            _store(ingest, total, *reading, progress)
    return total


def _archive_and_read(item: tuple[str | None, ReadJob]) -> FileResult:
    """A pool task: copy the source into the archive (if any), then read the copy."""
    source, job = item
    if source is not None:
        try:
            archive(Path(source), Path(job.absolute))
        except OSError as exc:
            return unread(job, f"cannot copy {source} into the archive: {exc.strerror or exc}")
    return read_file(job)


def _store(
    ingest: Ingest,
    total: BatchReport,
    results: Iterator[FileResult],
    size: int,
    progress: Callable[[int], None],
) -> None:
    report = BatchReport()
    ingest.store_results(list(results), report)
    merge(total, report)
    progress(size)


def merge(total: BatchReport, report: BatchReport) -> None:
    total.files += report.files
    total.lines += report.lines
    total.bad_lines += report.bad_lines
    total.bytes += report.bytes
    total.events += report.events
    total.errors += report.errors
    total.versions.update(report.versions)
    for user_id, tabs in report.changed.items():
        total.changed.setdefault(user_id, set()).update(tabs)
