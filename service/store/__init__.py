"""The DuckDB store: one file in ``DATA_DIR``, one writer, a small pool of readers.

DuckDB allows one writer process, so a :class:`Store` owns the database file for as long
as it is open. Writes run one at a time, each in its own transaction; reads run on
per-thread cursors of the same connection, so they see the last committed state. The
async methods hop to worker threads: no DuckDB call ever runs on the event loop.

SQL lives in the modules of this package as plain functions that take a cursor first
(``users.add_user(cur, ...)``); callers hand them to :meth:`Store.read` or
:meth:`Store.write`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import anyio
import anyio.to_thread
import duckdb

from service.settings import duckdb_memory_limit, duckdb_threads
from service.store.migrations import migrate

__all__ = ["Cursor", "Snapshot", "Store", "StoreLockedError", "keyed", "one_of"]

Cursor = duckdb.DuckDBPyConnection
P = ParamSpec("P")
T = TypeVar("T")


def one_of(column: str, values: Sequence[str]) -> tuple[str, list[object]]:
    """SQL saying ``column`` is one of ``values``, with its parameters.

    A short list is spelled out (``IN (?, ?)``): DuckDB runs that about half a millisecond
    faster than unnesting a list parameter, and a live update makes several such reads.
    """
    if not values:
        return "false", []
    if len(values) <= 32:
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)
    return f"{column} IN (SELECT unnest(?::VARCHAR[]))", [list(values)]


KEYED_CHUNK = 1000


def keyed(
    column: str, values: Sequence[object], *, bulk_type: str | None = None
) -> Iterator[tuple[str, list[object]]]:
    """``column IN (...)`` over ``values``, in statements of up to ``KEYED_CHUNK`` constants.

    For a column with an index (a primary key, ``usage_entries.message_key``): DuckDB
    answers a spelled-out list from the index, key by key, but turns a list parameter
    longer than 32 into a scan of the whole table (bench/README, incremental.py). The
    condition must stand alone in its ``WHERE``: with another one beside it, DuckDB
    scans. With ``bulk_type`` (the column's SQL type), more values than one chunk go as
    one list parameter instead: one scan serves a bulk batch better than many chunks.
    """
    if bulk_type is not None and len(values) > KEYED_CHUNK:
        yield f"{column} IN (SELECT unnest(?::{bulk_type}[]))", [list(values)]
        return
    for start in range(0, len(values), KEYED_CHUNK):
        chunk = list(values[start : start + KEYED_CHUNK])
        yield f"{column} IN ({', '.join('?' * len(chunk))})", chunk


def memory_usage(cur: Cursor) -> int:
    """Bytes DuckDB's buffer manager holds now (``duckdb_memory()``)."""
    row = cur.execute("SELECT sum(memory_usage_bytes)::BIGINT FROM duckdb_memory()").fetchone()
    return int(row[0] or 0) if row else 0


_SIZE_UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def duckdb_settings(cur: Cursor) -> tuple[int, int]:
    """DuckDB's memory limit in bytes and its threads, as DuckDB has them."""
    row = cur.execute(
        "SELECT current_setting('memory_limit'), current_setting('threads')"
    ).fetchone()
    assert row is not None
    number, unit = str(row[0]).split()  # e.g. "6.0 GiB"
    return round(float(number) * _SIZE_UNITS[unit]), int(row[1])


class StoreLockedError(Exception):
    """Another process holds the database file."""


class Store:
    def __init__(
        self,
        path: Path,
        *,
        readers: int = 4,
        memory_limit: str | None = None,
        threads: int | None = None,
    ) -> None:
        """Open (and migrate) the database at ``path``. ``memory_limit`` (a DuckDB size,
        e.g. ``"2GiB"``) and ``threads`` default to what the machine gives this process
        (:func:`service.settings.duckdb_memory_limit`, :func:`~service.settings.duckdb_threads`)."""
        self.path = path
        config: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": memory_limit or duckdb_memory_limit(),
            "threads": threads or duckdb_threads(),
        }
        try:
            self._conn = duckdb.connect(str(path), config=config)
        except duckdb.IOException as exc:
            message = str(exc)
            if "lock" in message.lower():
                holder = re.search(r"PID (\d+)", message)
                who = f"process {holder.group(1)}" if holder else "another process"
                raise StoreLockedError(
                    f"database {path.resolve()} is locked by {who}: "
                    "is another agnes-activity server running on this data dir?"
                ) from None
            raise
        self._conn.execute("SET TimeZone = 'UTC'")
        self._write_lock = threading.Lock()
        self._writer = self._conn.cursor()
        self._local = threading.local()
        self._cursors: list[Cursor] = []
        self._readers = readers
        self._read_limiter: anyio.CapacityLimiter | None = None
        self._write_limiter: anyio.CapacityLimiter | None = None
        # DATA_DIR holds the database and user_sessions/ (Settings), where a migration
        # that needs the transcripts reads them
        self.schema_version = self.write_sync(migrate, sessions_dir=path.parent / "user_sessions")
        # migrations run under a lower limit and put back what DuckDB shows (rounded)
        self._conn.execute(f"SET memory_limit = '{config['memory_limit']}'")

    # -- synchronous API (CLI, worker threads) --------------------------------------------

    def read_sync(
        self, fn: Callable[Concatenate[Cursor, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        cur: Cursor | None = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self._conn.cursor()
            # Kept so close() can end them: a result left half-fetched keeps its cursor's
            # transaction open, and the closing checkpoint would wait for it forever.
            self._cursors.append(cur)
        try:
            return fn(cur, *args, **kw)
        finally:
            # A result left unfinished (a ``fetchone()``) keeps its cursor's transaction
            # open: every version written after it stays in memory until the cursor's
            # next statement (a leak while nobody reads), and DuckDB 2 refuses other work
            # on the cursor (``register``) meanwhile. Ending it costs next to nothing.
            cur.abort()

    def write_sync(
        self, fn: Callable[Concatenate[Cursor, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """Run ``fn`` in one transaction; on any exception nothing of it is kept."""
        with self._write_lock:
            cur = self._writer
            cur.begin()
            try:
                result = fn(cur, *args, **kw)
            except BaseException:
                cur.rollback()
                raise
            cur.commit()
            return result

    # -- async API (the web app) --------------------------------------------------------

    async def read(
        self, fn: Callable[Concatenate[Cursor, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        if self._read_limiter is None:
            self._read_limiter = anyio.CapacityLimiter(self._readers)
        call = partial(self.read_sync, fn, *args, **kw)
        return await anyio.to_thread.run_sync(call, limiter=self._read_limiter)

    async def write(
        self, fn: Callable[Concatenate[Cursor, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        if self._write_limiter is None:
            self._write_limiter = anyio.CapacityLimiter(1)
        call = partial(self.write_sync, fn, *args, **kw)
        return await anyio.to_thread.run_sync(call, limiter=self._write_limiter)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Snapshot]:
        """Several reads that see one state of the database, however long between them (an
        export that streams page after page to a slow client): a cursor of its own, in one
        transaction, ended when the block ends. Each read takes a reader slot only while it
        runs, so a slow client never holds one."""
        if self._read_limiter is None:
            self._read_limiter = anyio.CapacityLimiter(self._readers)
        limiter = self._read_limiter
        cur = await anyio.to_thread.run_sync(self._conn.cursor, limiter=limiter)
        try:
            await anyio.to_thread.run_sync(cur.begin, limiter=limiter)
            yield Snapshot(cur, limiter)
        finally:
            with anyio.CancelScope(shield=True):  # a client that went away still ends it
                await anyio.to_thread.run_sync(cur.close, limiter=limiter)

    def close(self) -> None:
        """Checkpoint so the next start finds a compact file with an empty WAL, then close."""
        with self._write_lock:
            for cur in self._cursors:
                cur.close()
            for _ in range(50):
                try:
                    self._writer.execute("CHECKPOINT")
                    break
                except duckdb.TransactionException:
                    time.sleep(0.02)  # a reader abandoned at shutdown is still finishing
            else:
                self._writer.execute("FORCE CHECKPOINT")
            self._conn.close()


class Snapshot:
    """Reads in one transaction (:meth:`Store.snapshot`)."""

    def __init__(self, cur: Cursor, limiter: anyio.CapacityLimiter) -> None:
        self._cur = cur
        self._limiter = limiter

    async def read(
        self, fn: Callable[Concatenate[Cursor, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        call = partial(fn, self._cur, *args, **kw)
        return await anyio.to_thread.run_sync(call, limiter=self._limiter)
