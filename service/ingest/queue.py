"""The one queue every changed path goes through on its way into the store.

Producers (the upload handler, the watchers, the reconciling scan) ``put`` paths; a single
consumer takes everything waiting as one batch, so repeated changes of one path coalesce,
and runs it in a worker thread: ingest never blocks the event loop, and batches never
overlap.

Uploads :meth:`~IngestQueue.arrive` with their record and wait for the batch that stores
it: every upload that comes while one batch runs goes into the next, which reads them all
and commits them, records included, in one transaction (group commit). A file is read
once: when the watcher's event for a file arrives after a batch has read it (the usual
case for an upload, which queues its file at once), and the file is as that batch found
it, the event is dropped (:class:`ReadStates`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread

from service import metrics
from service.ingest.pipeline import BatchReport, Ingest
from service.store.files import Arrival

log = logging.getLogger("agnes.ingest")

BatchListener = Callable[[BatchReport], Awaitable[None]]


def _measure(report: BatchReport, queued: dict[Path, float], started: float) -> None:
    done = time.perf_counter()
    metrics.INGEST_BATCHES.inc()
    metrics.INGEST_BATCH_FILES.observe(report.files)
    metrics.INGEST_SECONDS.observe(done - started)
    metrics.INGEST_LINES.inc(report.lines)
    metrics.INGEST_BAD_LINES.inc(report.bad_lines)
    metrics.INGEST_ERRORS.inc(len(report.errors))
    for since in queued.values():
        metrics.INGEST_LAG.observe(done - since)


READ_BUDGET = 1024 * 1024
"""About how many new bytes of one transcript a batch of the live path reads; a file with
more goes on in the batches that follow, so no batch (and no upload waiting for one) waits
long on one large file, whatever its lines."""


def _names(paths: Iterable[Path], root: Path) -> dict[str, Path]:
    """Each path by its name relative to ``root`` (as batch reports name files)."""
    return {os.path.relpath(os.path.abspath(path), root): path for path in paths}


class _Waiter:
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.report = BatchReport()
        self.error: Exception | None = None


Signature = tuple[int, int, int, int, int]  # device, inode, size, mtime and ctime in ns

SETTLED_NS = 100_000_000
"""How long a file must have been left alone before its signature is taken to say that
its bytes have not changed since: file times advance in clock ticks (a few ms), so an
in-place rewrite of the same size within the tick of a read would keep the signature."""


def signature(path: Path) -> tuple[Signature | None, bool]:
    """What ``os.stat`` says of ``path`` (None: nothing to stat), and whether the file was
    left alone long enough before now for the signature to be trusted (``SETTLED_NS``)."""
    now = time.time_ns()
    try:
        info = os.lstat(path)
    except OSError:
        return None, False
    sign = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    return sign, now - max(info.st_mtime_ns, info.st_ctime_ns) >= SETTLED_NS


class ReadStates:
    """The signature of each file as the batch that read it last found it (at most
    ``limit``, the most recent kept), so that a change event for a file that has not
    changed since can be dropped without reading it again.

    A signature is only remembered when it can be trusted: the file was settled, or it is
    an upload's own file, renamed into place whole, never written in place."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._read: OrderedDict[Path, Signature] = OrderedDict()

    def unread(
        self, paths: Iterable[Path], uploaded: set[Path], forced: set[Path]
    ) -> tuple[list[Path], dict[Path, Signature]]:
        """The paths to read (``forced`` ones always), and the signatures to remember once
        they are read."""
        wanted: list[Path] = []
        found: dict[Path, Signature] = {}
        for path in paths:
            sign, settled = signature(path)
            if sign is not None and path not in forced and self._read.get(path) == sign:
                metrics.INGEST_ECHOES.inc()
                continue
            wanted.append(path)
            if sign is not None and (settled or path in uploaded):
                found[path] = sign
        return wanted, found

    def remember(self, read: dict[Path, Signature], failed: set[Path]) -> None:
        for path, sign in read.items():
            self._read.pop(path, None)
            if path not in failed:
                self._read[path] = sign
        while len(self._read) > self.limit:
            self._read.popitem(last=False)

    def forget(self) -> None:
        self._read.clear()


class IngestQueue:
    def __init__(self, pipeline: Ingest) -> None:
        self.pipeline = pipeline
        self.listeners: list[BatchListener] = []
        self._pending: dict[Path, float] = {}  # path → when it was first queued
        self._waiting: list[_Waiter] = []
        self._arrivals: list[tuple[Path, Arrival]] = []
        self._forced: set[Path] = set()  # asked for by ingest(): read even if unchanged
        self.read_states = ReadStates()
        self._wakeup = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._batch = anyio.Lock()  # held by a batch from its first read to its commit

    def put(self, paths: Iterable[Path]) -> None:
        """Queue paths (from the event loop's thread); returns at once."""
        now = time.perf_counter()
        for path in paths:
            self._pending.setdefault(path, now)
        if self._pending:
            self._idle = anyio.Event() if self._idle.is_set() else self._idle
            self._wakeup.set()

    async def ingest(self, paths: Iterable[Path]) -> BatchReport:
        """Queue paths and wait until they are read to their end (a large file takes
        several batches); returns what those batches read of them."""
        paths = list(paths)
        if not paths:
            return BatchReport()  # no batch would ever come for nothing
        report = await self._ingest_once(paths)
        total = BatchReport(files=report.files)
        total.add(report)
        names = _names(paths, self.pipeline.root)
        while report.unfinished:
            mine = [names[name] for name in report.unfinished if name in names]
            if not mine:
                break
            report = await self._ingest_once(mine)
            total.add(report)
        total.unfinished = []
        return total

    async def _ingest_once(self, paths: list[Path]) -> BatchReport:
        waiter = _Waiter()
        self._waiting.append(waiter)
        self._forced.update(paths)
        self.put(paths)
        await waiter.done.wait()
        return waiter.report

    async def arrive(self, path: Path, arrival: Arrival) -> BatchReport:
        """Queue an upload's file with its record, and wait for the batch that commits
        both; returns its report. Should that batch fail, the record is stored on its own
        (the file listed as pending, for the scan to read again) before this returns, and
        only if that fails too does this raise."""
        waiter = _Waiter()
        self._waiting.append(waiter)
        self._arrivals.append((path, arrival))
        self.put([path])
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.report

    @property
    def depth(self) -> int:
        """Paths waiting for the next batch."""
        return len(self._pending)

    async def idle(self) -> None:
        """Wait until everything queued so far has been stored."""
        await self._idle.wait()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """No batch runs inside: one under way finishes first, the next waits. For a
        change that batches must not straddle (``reprocess`` forgetting every offset: a
        batch that read a file's offset before and stored after would resume from it).
        What batches read before counts as unread after it."""
        async with self._batch:
            self.read_states.forget()
            yield

    def _run_batch(
        self,
        paths: Sequence[Path],
        arrivals: Sequence[tuple[Path, Arrival]],
        forced: set[Path],
    ) -> BatchReport:
        """One batch, in a worker thread: what changed since it was last read (and what
        ``forced`` names), and the uploads' records."""
        uploaded = {path for path, _ in arrivals}
        wanted, signatures = self.read_states.unread(paths, uploaded, forced | uploaded)
        report = self.pipeline.run(
            wanted, arrivals=[arrival for _, arrival in arrivals], budget=READ_BUDGET
        )
        failed = {self.pipeline.root / name for name, _ in report.errors}
        failed |= {
            self.pipeline.audit_root / name.removeprefix("audit/") for name, _ in report.errors
        }
        failed |= {self.pipeline.root / name for name in report.unfinished}  # read on
        self.read_states.remember(signatures, failed)
        return report

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            queued, self._pending = self._pending, {}
            waiting, self._waiting = self._waiting, []
            arrivals, self._arrivals = self._arrivals, []
            forced, self._forced = self._forced, set()
            report = BatchReport()
            started = time.perf_counter()
            error: Exception | None = None
            try:
                async with self._batch:
                    report = await anyio.to_thread.run_sync(
                        self._run_batch, list(queued), arrivals, forced
                    )
            except Exception as exc:
                log.exception("ingest batch of %d paths failed; the next scan retries", len(queued))
                report.errors.append(("(batch)", f"ingest failed: {exc}"))
                if arrivals:
                    report, error = await self._record_alone(arrivals, report.errors)
            else:
                _measure(report, queued, started)
                for path, reason in report.errors:
                    log.warning("ingest: %s: %s", path, reason)
                self.put(self.pipeline.root / name for name in report.unfinished)
            if report.versions:
                for listener in self.listeners:
                    await listener(report)
            for waiter in waiting:
                waiter.report = report
                waiter.error = error
                waiter.done.set()
            if not self._pending:
                self._idle.set()

    async def _record_alone(
        self, arrivals: Sequence[tuple[Path, Arrival]], errors: list[tuple[str, str]]
    ) -> tuple[BatchReport, Exception | None]:
        """After a failed batch: the uploads' records on their own, so that their 200s
        hold; the error to raise to the uploads if even that fails."""
        try:
            async with self._batch:
                report = await anyio.to_thread.run_sync(
                    self.pipeline.record_arrivals, [arrival for _, arrival in arrivals]
                )
        except Exception as exc:
            log.exception("%d uploads could not be recorded", len(arrivals))
            return BatchReport(errors=errors), exc
        report.errors += errors
        return report, None
