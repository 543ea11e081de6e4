"""Backfill: bring a tree of transcripts (``~/.claude/projects``) into the archive.

Every file is copied (atomically, like an upload) into ``user_sessions/<user_id>/`` under
the flat name ``agnes push`` would give it, and then goes through the one ingest path. The
server is the archive: Claude Code deletes its own transcripts after 30 days.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from service.ingest.pipeline import BatchReport, Ingest

BATCH_BYTES = 256 * 1024 * 1024
BATCH_FILES = 500


def flat_name(path: Path, root: Path) -> str:
    """``<cwd>/<s>.jsonl`` → ``<s>.jsonl``; ``<cwd>/<s>/subagents/agent-<id>.jsonl`` →
    ``<s>.agent-<id>.jsonl`` (the name ``agnes push`` uploads it under)."""
    parts = path.relative_to(root).parts
    if len(parts) >= 3 and parts[-2] == "subagents":
        return f"{parts[-3]}.{path.stem}.jsonl"
    return path.name


def find_transcripts(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """Every ``*.jsonl`` under the given files and folders, with its flat name."""
    found: dict[str, Path] = {}
    for given in paths:
        if given.is_file():
            found.setdefault(given.name, given)
            continue
        for path in sorted(given.rglob("*.jsonl")):
            if path.is_file() and not path.is_symlink():
                found.setdefault(flat_name(path, given), path)
    return sorted(((p, name) for name, p in found.items()), key=lambda item: item[1])


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
    shutil.copy2(source, temp)
    os.replace(temp, target)
    return True


def batches(files: list[Path]) -> Iterator[list[Path]]:
    batch: list[Path] = []
    size = 0
    for path in files:
        batch.append(path)
        size += path.stat().st_size
        if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


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
    files: list[Path],
    *,
    progress: Callable[[int], None] = lambda _: None,
    workers: int | None = None,
) -> BatchReport:
    """Ingest many files at once (no server running): batches read by a process pool."""
    total = BatchReport()
    workers = workers or min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for batch in batches(files):
            report = ingest.run(batch, mapper=lambda fn, jobs: pool.map(fn, jobs, chunksize=4))
            merge(total, report)
            progress(sum(p.stat().st_size for p in batch))
    return total


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
