"""How the CLI reaches the data: through the running server's loopback admin API, which it
finds in ``DATA_DIR/.admin.json``, or, when no server holds the data dir, on the database
directly. Either way it runs the same :mod:`service.operations`.

Kept free of web-framework imports: every CLI command loads this module (the HTTP client is
imported only when a server is there).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import msgspec

from service import operations
from service.ingest.backfill import archive_all
from service.ingest.pipeline import BatchReport
from service.operations import ProgressBar, no_bar
from service.settings import (
    Settings,
    SettingsError,
    duckdb_memory_limit,
    duckdb_threads,
    prepare_data_dir,
)
from service.store import Store, StoreLockedError
from service.store.users import ConflictError, NotFoundError

__all__ = [
    "SECRET_HEADER",
    "AdminClient",
    "AdminEndpoint",
    "AdminError",
    "open_store",
    "read_admin_file",
    "write_admin_file",
]

SECRET_HEADER = "x-agnes-admin-secret"
T = TypeVar("T")


class AdminEndpoint(msgspec.Struct, frozen=True):
    """What ``DATA_DIR/.admin.json`` tells the CLI about the server holding the data dir."""

    url: str
    secret: str
    pid: int


def write_admin_file(path: Path, endpoint: AdminEndpoint) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(msgspec.json.encode(endpoint))
    os.chmod(path, 0o600)


def read_admin_file(path: Path) -> AdminEndpoint | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=AdminEndpoint)
    except (OSError, msgspec.DecodeError, json.JSONDecodeError):
        return None


def open_store(settings: Settings) -> Store:
    prepare_data_dir(settings)
    memory_limit, threads = duckdb_memory_limit(settings), duckdb_threads(settings)
    try:  # a value DuckDB cannot take is a setting's error, said before the database opens
        duckdb.connect(":memory:", config={"memory_limit": memory_limit}).close()
    except duckdb.Error as exc:
        raise SettingsError(f"DuckDB memory limit {memory_limit!r}: {exc}") from None
    try:
        return Store(settings.db_path, memory_limit=memory_limit, threads=threads)
    except StoreLockedError as exc:
        raise SettingsError(str(exc)) from None


class AdminError(Exception):
    """An admin action that could not run, with a message for the operator."""


class AdminClient:
    """Runs an admin action (:mod:`service.operations`) on the database directly, or
    through the running server.

    Only ``create`` (``users add``) makes a data dir and database that are not there yet;
    every other command says that there is none, and makes nothing."""

    def __init__(self, data_dir: Path, *, create: bool = False) -> None:
        self.settings = Settings(data_dir=data_dir)
        self.create = create
        self.endpoint = self._live_server()

    def _live_server(self) -> AdminEndpoint | None:
        endpoint = read_admin_file(self.settings.admin_file)
        if endpoint is None:
            return None
        import httpx

        try:
            httpx.get(f"{endpoint.url}/api/health", timeout=2).raise_for_status()
        except httpx.HTTPError:
            return None  # a stale file from a server that is gone
        return endpoint

    def run(self, kind: type[T], fn: Callable[..., T], method: str, path: str, **args: Any) -> T:
        """``fn(cursor, **args)`` on the database, or the same through the server's admin API
        (whose request fields are named like ``fn``'s parameters)."""
        if self.endpoint is None:
            return self._direct(fn, **args)
        if method == "GET":
            request = {"params": {k: v for k, v in args.items() if v is not None}}
        else:
            request = {"json": args}
        return self.remote(kind, method, path, **request)

    def ingest(
        self, sources: list[tuple[Path, str]], folder: Path, *, bar: ProgressBar = no_bar
    ) -> BatchReport:
        """Copy ``(source, flat name)`` pairs into the archive ``folder`` and ingest them:
        through the running server's queue, else here (:func:`operations.ingest_here`)."""
        if self.endpoint is not None:
            paths = [str(p.resolve()) for p in archive_all(sources, folder)]
            return self.remote(BatchReport, "POST", "/ingest", json={"paths": paths})
        targets = [folder / name for _, name in sources]
        originals = [source for source, _ in sources]
        with self._opened() as store:
            return operations.ingest_here(store, self.settings, targets, sources=originals, bar=bar)

    def reprocess(self, *, bar: ProgressBar = no_bar) -> BatchReport:
        """:func:`operations.reprocess` through the running server, else
        :func:`operations.reprocess_here`."""
        if self.endpoint is not None:
            return self.remote(BatchReport, "POST", "/reprocess")
        with self._opened() as store:
            return operations.reprocess_here(store, self.settings, bar=bar)

    @contextmanager
    def _opened(self) -> Iterator[Store]:
        store = self.open()
        try:
            yield store
        finally:
            store.close()

    def open(self) -> Store:
        if not self.create:
            folder = self.settings.data_dir.resolve()
            if not folder.is_dir():
                raise AdminError(
                    f"no data dir {folder}: is --data-dir (AGNES_DATA_DIR) right?"
                    " `users add` or `serve` makes one"
                )
            if not self.settings.db_path.exists():
                raise AdminError(
                    f"no database in {folder} (no {self.settings.db_path.name}): is --data-dir"
                    " (AGNES_DATA_DIR) right? `users add` or `serve` makes one"
                )
        try:
            return open_store(self.settings)
        except SettingsError as exc:
            raise AdminError(f"{exc} (and no running server answered on its admin API)") from None

    def _direct(self, fn: Callable[..., T], **args: Any) -> T:
        with self._opened() as store:
            try:
                return store.write_sync(fn, **args)
            except (NotFoundError, ConflictError, ValueError) as exc:
                raise AdminError(str(exc)) from None

    def remote(self, kind: type[T], method: str, path: str, **request: Any) -> T:
        assert self.endpoint is not None
        import httpx

        headers = {SECRET_HEADER: self.endpoint.secret}
        try:
            response = httpx.request(
                method,
                f"{self.endpoint.url}/api/admin{path}",
                headers=headers,
                timeout=30,
                **request,
            )
        except httpx.HTTPError as exc:
            raise AdminError(f"the server at {self.endpoint.url} did not answer: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise AdminError(str(detail))
        return msgspec.json.decode(response.content, type=kind)
