"""The one queue every changed path goes through on its way into the store.

Producers (the upload handler, the watchers, the reconciling scan) ``put`` paths; a single
consumer takes everything waiting as one batch, so repeated changes of one path coalesce,
and runs it in a worker thread: ingest never blocks the event loop, and batches never
overlap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread

from service import metrics
from service.ingest.pipeline import BatchReport, Ingest

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


class _Waiter:
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.report = BatchReport()


class IngestQueue:
    def __init__(self, pipeline: Ingest) -> None:
        self.pipeline = pipeline
        self.listeners: list[BatchListener] = []
        self._pending: dict[Path, float] = {}  # path → when it was first queued
        self._waiting: list[_Waiter] = []
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
        """Queue paths and wait for the batch that stores them; returns its report."""
        paths = list(paths)
        if not paths:
            return BatchReport()  # no batch would ever come for nothing
        waiter = _Waiter()
        self._waiting.append(waiter)
        self.put(paths)
        await waiter.done.wait()
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
        batch that read a file's offset before and stored after would resume from it)."""
        async with self._batch:
            yield

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            queued, self._pending = self._pending, {}
            waiting, self._waiting = self._waiting, []
            report = BatchReport()
            started = time.perf_counter()
            try:
                async with self._batch:
                    report = await anyio.to_thread.run_sync(self.pipeline.run, list(queued))
            except Exception as exc:
                log.exception("ingest batch of %d paths failed; the next scan retries", len(queued))
                report.errors.append(("(batch)", f"ingest failed: {exc}"))
            else:
                _measure(report, queued, started)
                for path, reason in report.errors:
                    log.warning("ingest: %s: %s", path, reason)
                for listener in self.listeners:
                    await listener(report)
            for waiter in waiting:
                waiter.report = report
                waiter.done.set()
            if not self._pending:
                self._idle.set()
