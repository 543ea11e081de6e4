"""The one ingest path: changed file paths in, one transaction of facts out.

Uploads, ``POST /api/audit/events``, the watchers, the reconciling scan and the ``ingest``
backfill all hand paths to :meth:`Ingest.run`: transcripts under
``user_sessions/<folder>/`` and audit spool files ``audit/*.jsonl``. Reading and parsing
happen outside the database (transcripts optionally in a process pool, see
:func:`read_file`; spool files with :func:`~service.ingest.spool.read_spool`); the results
of a batch are then written by :func:`service.store.ingest.apply_batch` in one transaction,
after which every touched user has a new version.

Uploads share that transaction (group commit): the upload handler hands its file over
with its record (an :class:`~service.store.files.Arrival`: the audit event, the file to
list as pending should it not be read), and the batch that reads the file stores the
record with it, so concurrent uploads cost one transaction and one pass between them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import msgspec

from service.ingest.batch import BatchChanges, FileResult, KnownFile
from service.ingest.fingerprint import fingerprint, not_a_plain_file
from service.ingest.names import subagent_parent
from service.ingest.spool import SpoolJob, SpoolResult, is_spool_name, read_spool
from service.ingest.transcript import DEFAULT_CHUNK_BYTES as READ_CHUNK
from service.ingest.transcript import TranscriptState, iter_file, new_state
from service.settings import Settings
from service.store import Cursor, Store, files, users
from service.store.files import Arrival
from service.store.ingest import apply_batch, known_files
from service.store.spool import known_spools

__all__ = [
    "UPLOAD_TABS",
    "BatchReport",
    "Ingest",
    "Mapper",
    "ReadJob",
    "commit_batch",
    "read_file",
    "session_file_of",
    "unread",
]

_state_decoder = msgspec.msgpack.Decoder(TranscriptState)

Mapper = Callable[[Callable[["ReadJob"], FileResult], Iterable["ReadJob"]], Iterator[FileResult]]


class ReadJob(msgspec.Struct, frozen=True):
    """Everything needed to read one file, picklable for a process pool."""

    absolute: str
    path: str
    user_id: str | None
    folder: str
    known: KnownFile | None
    budget: int = 0  # read at most about this many new bytes now (0: all of them)


class BatchReport(msgspec.Struct):
    """What one committed batch did; the hub pushes ``changed`` to the users' dashboards."""

    files: int = 0  # transcripts and spool files read
    lines: int = 0
    bad_lines: int = 0
    bytes: int = 0
    events: int = 0  # audit events read from spool lines (each is stored only once)
    errors: list[tuple[str, str]] = msgspec.field(default_factory=list)
    versions: dict[str, int] = msgspec.field(default_factory=dict)
    # user id -> the tabs whose data changed: "sessions" and "tokens" for transcripts,
    # "queries" and "sync" for new audit events of those kinds (empty: an event no tab shows)
    changed: dict[str, set[str]] = msgspec.field(default_factory=dict)
    # files read only in part (a read budget): the rest waits for the next batch
    unfinished: list[str] = msgspec.field(default_factory=list)

    def add(self, other: BatchReport) -> None:
        """Count another batch's reading of the same files in (their count stays)."""
        self.lines += other.lines
        self.bad_lines += other.bad_lines
        self.bytes += other.bytes
        self.events += other.events
        self.errors += other.errors
        for user_id, version in other.versions.items():
            self.versions[user_id] = max(version, self.versions.get(user_id, 0))
        for user_id, tabs in other.changed.items():
            self.changed.setdefault(user_id, set()).update(tabs)
        self.unfinished = other.unfinished


UPLOAD_TABS = frozenset({"sessions", "sync"})
"""What an upload changes for its user besides what reading it does: the file listed, and
the ``session.upload`` event on the Sync tab."""


def commit_batch(
    cur: Cursor,
    results: Sequence[FileResult],
    spools: Sequence[SpoolResult] = (),
    arrivals: Sequence[Arrival] = (),
) -> BatchChanges:
    """One batch's transaction: what was read (:func:`apply_batch`), and the uploads'
    records (:func:`~service.store.files.record_arrivals`), each uploader's version bumped
    once."""
    changes = apply_batch(cur, results, spools) if results or spools else BatchChanges({}, {})
    if arrivals:
        files.record_arrivals(cur, arrivals, read={r.path for r in results})
        uploaders = {a.user_id for a in arrivals}
        changes.versions.update(users.bump_versions(cur, uploaders - changes.versions.keys()))
        for user_id in uploaders:
            changes.changed.setdefault(user_id, set()).update(UPLOAD_TABS)
    return changes


def session_file_of(name: str) -> tuple[str, bool]:
    """The session transcript a file belongs to, and whether it is a subagent file."""
    parent = subagent_parent(name)
    return (f"{parent}.jsonl", True) if parent is not None else (name, False)


def unread(job: ReadJob, error: str | None = None) -> FileResult:
    """The result of ``job`` before any byte is read (with ``error``: the reason none is)."""
    name = job.path.rsplit("/", 1)[-1]
    session_file, is_subagent = session_file_of(name)
    return FileResult(
        path=job.path,
        user_id=job.user_id,
        name=name,
        session_file=session_file,
        is_subagent=is_subagent,
        size=0,
        read_offset=0,
        fingerprint=None,
        state=None,
        entries=[],
        error=error,
        stored=job.known is not None,
    )


def read_file(job: ReadJob) -> FileResult:
    """Read what is new in one file (pure I/O and parsing; runs in any process)."""
    if job.user_id is None:
        return unread(job, f"orphaned: folder {job.folder!r} matches no user id or email")
    result = unread(job)
    try:
        info = os.lstat(job.absolute)
        result.error = not_a_plain_file(info)
        if result.error is not None:
            return result
        result.size = info.st_size
        known = job.known
        start, state = 0, None
        if known is not None and known.state is not None and known.read_offset <= info.st_size:
            handle = os.open(job.absolute, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                same = fingerprint(handle, known.read_offset) == known.fingerprint
            finally:
                os.close(handle)
            if same:
                start, state = known.read_offset, _state_decoder.decode(known.state)
        resumed = state is not None
        # read from the start over an earlier read that consumed a line (and so may have
        # stored copies): those go
        result.replaces = start == 0 and known is not None and known.read_offset > 0
        state = state or new_state(result.name)
        lines_before, bad_before = state.lines, state.bad_lines + state.oversized_lines
        offset = start
        chunks = iter_file(job.absolute, state, start, chunk_size=job.budget or READ_CHUNK)
        for chunk in chunks:
            result.entries.extend(chunk.entries)
            offset += chunk.consumed
            if job.budget and chunk.consumed:
                break  # the rest in a later batch: no batch waits long on one file
        result.state = state
        result.read_offset = offset
        result.bytes_read = offset - start
        result.lines_read = state.lines - lines_before
        result.bad_lines_read = state.bad_lines + state.oversized_lines - bad_before
        result.unchanged = (
            resumed
            and known is not None
            and known.status == "processed"
            and known.user_id == job.user_id
            and offset == known.read_offset
        )
        handle = os.open(job.absolute, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            result.fingerprint = fingerprint(handle, offset)
        finally:
            os.close(handle)
    except OSError as exc:
        result.error = f"cannot read: {exc.strerror or exc}"
    return result


class Ingest:
    """Turns changed paths under ``user_sessions/`` and ``audit/`` into stored facts."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.root = settings.sessions_dir.resolve()
        self._folders: dict[str, str] = {}  # folder name → user id; users never change id
        self.audit_root = settings.audit_dir.resolve()

    def jobs(self, paths: Iterable[Path], budget: int = 0) -> list[ReadJob]:
        """Jobs for the transcript files among ``paths`` (others are not ours)."""
        relative: dict[str, Path] = {}
        for path in paths:
            absolute = Path(os.path.abspath(path))
            try:
                parts = absolute.relative_to(self.root).parts
            except ValueError:
                continue
            if len(parts) != 2 or parts[1].startswith("."):
                continue  # not <folder>/<file>, or a temporary upload
            relative["/".join(parts)] = absolute
        if not relative:
            return []
        folder_names = {path.split("/", 1)[0] for path in relative}
        if not folder_names <= self._folders.keys():
            # a folder not seen yet (or a user added since): ask the store again
            self._folders = self.store.read_sync(users.user_ids_by_folder)
        folders = self._folders
        known = self.store.read_sync(known_files, sorted(relative))
        return [
            ReadJob(
                absolute=str(absolute),
                path=path,
                user_id=folders.get(path.split("/", 1)[0]),
                folder=path.split("/", 1)[0],
                known=known.get(path),
                budget=budget,
            )
            for path, absolute in sorted(relative.items())
        ]

    def spool_jobs(self, paths: Iterable[Path]) -> list[SpoolJob]:
        """Jobs for the audit spool files (``audit/*.jsonl``) among ``paths``."""
        relative: dict[str, Path] = {}
        for path in paths:
            absolute = Path(os.path.abspath(path))
            if absolute.parent == self.audit_root and is_spool_name(absolute.name):
                relative[absolute.name] = absolute
        if not relative:
            return []
        known = self.store.read_sync(known_spools, sorted(relative))
        return [
            SpoolJob(absolute=str(absolute), path=name, known=known.get(name))
            for name, absolute in sorted(relative.items())
        ]

    def run(
        self,
        paths: Iterable[Path],
        mapper: Mapper | None = None,
        arrivals: Sequence[Arrival] = (),
        budget: int = 0,
    ) -> BatchReport:
        """Read and store a batch, with the records of the uploads that brought some of its
        files; ``mapper`` (e.g. a process pool's ``map``) reads transcripts. Spool files
        are small appends and are read here. With a ``budget`` (bytes), about that much of
        each transcript is read now, and those with more to read are named in the report's
        ``unfinished``."""
        paths = list(paths)
        jobs = self.jobs(paths, budget)
        spool_jobs = self.spool_jobs(paths)
        report = BatchReport()
        if not jobs and not spool_jobs and not arrivals:
            return report
        results = list((mapper or map)(read_file, jobs)) if jobs else []
        spools = [read_spool(job) for job in spool_jobs]
        self.store_results(results, report, spools, arrivals)
        if budget:
            # read up to the budget: more may wait (a torn last line makes one needless look)
            report.unfinished = [
                r.path
                for r in results
                if r.error is None and r.bytes_read and r.read_offset < r.size
            ]
        return report

    def record_arrivals(self, arrivals: Sequence[Arrival]) -> BatchReport:
        """Only the uploads' records, their files listed as pending (after a batch that
        should have read them failed: the files are on disk, the scan reads them later)."""
        report = BatchReport()
        self.store_results([], report, [], arrivals)
        return report

    def store_results(
        self,
        results: Sequence[FileResult],
        report: BatchReport,
        spools: Sequence[SpoolResult] = (),
        arrivals: Sequence[Arrival] = (),
    ) -> None:
        if spools or arrivals or not all(r.unchanged and r.error is None for r in results):
            committed = self.store.write_sync(commit_batch, results, spools, arrivals)
        else:
            committed = BatchChanges({}, {})  # nothing new anywhere: no transaction
        report.versions.update(committed.versions)
        for user_id, tabs in committed.changed.items():
            report.changed.setdefault(user_id, set()).update(tabs)
        for result in results:
            report.files += 1
            if result.error is not None:
                report.errors.append((result.path, result.error))
            else:
                report.lines += result.lines_read
                report.bad_lines += result.bad_lines_read
                report.bytes += result.bytes_read
        for spool in spools:
            report.files += 1
            if spool.error is not None:
                report.errors.append((f"audit/{spool.path}", spool.error))
            else:
                report.lines += spool.lines_read
                report.bad_lines += spool.bad_lines_read
                report.bytes += spool.bytes_read
                report.events += len(spool.events)
