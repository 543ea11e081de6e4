"""``POST /api/upload/sessions``: a transcript arrives.

The body is parsed as it streams in: the ``file`` part goes through gunzip (for ``.gz``
names) straight into a temporary file beside its target, never into memory whole, and is
renamed into place only once it is complete and within the size limit. A watcher therefore
never sees half an upload, and a refused upload leaves nothing behind: not a temp file, and
not a damaged earlier version of the same name (a full disk is a ``507``, see
:func:`~service.api.errors.storage_error`).
"""

from __future__ import annotations

import os
import re
import secrets
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import anyio.to_thread
import multipart
from litestar import Request, post
from litestar.exceptions import HTTPException
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

from service.api.errors import ApiError, storage_error
from service.api.openapi import errors
from service.ingest.pipeline import session_file_of
from service.models import AuditEvent, Caller, UploadResult
from service.plugins.ingest import IngestPlugin
from service.settings import UPLOAD_TEMP_PREFIX
from service.store.files import Arrival

__all__ = [
    "MAX_SESSION_BYTES",
    "MULTIPART_OVERHEAD",
    "receive_file",
    "target_name",
    "upload_session",
]

MAX_SESSION_BYTES = 50 * 1024 * 1024
"""The largest transcript accepted, counted after gunzip."""

MULTIPART_OVERHEAD = 1024 * 1024
FILENAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
"""A valid name, matched whole (``fullmatch``: ``$`` would also match before a final ``\\n``)."""
FLUSH_BYTES = 1024 * 1024
INFLATE_BYTES = 1024 * 1024
"""The most a gzip upload is inflated at a time before it is written out."""


def target_name(filename: str | None) -> str:
    """The name a valid upload is stored under (``.gz`` dropped), or a 400."""
    if not filename or not FILENAME.fullmatch(filename) or filename.startswith("."):
        raise ApiError(
            400,
            "invalid_filename",
            "filename must be 1 to 200 characters of A-Z a-z 0-9 . _ - and not start with a dot",
        )
    name = filename.removesuffix(".gz")
    if not name or name.startswith(".") or name in {".", ".."}:
        raise ApiError(400, "invalid_filename", f"{filename!r} leaves no name once .gz is removed")
    return name


class _TooLarge(Exception):
    pass


class _BadGzip(Exception):
    pass


@dataclass
class _IncomingFile:
    """One upload on its way to disk; every method runs in a worker thread."""

    target: Path
    gzipped: bool
    temp: Path = field(init=False)
    size: int = 0
    _out: IO[bytes] | None = None
    _inflater: Any = None

    def __post_init__(self) -> None:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.temp = self.target.parent / f"{UPLOAD_TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
        self._out = open(self.temp, "xb")  # noqa: SIM115 - closed in finish() or discard()
        if self.gzipped:
            self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    def write(self, data: bytes) -> None:
        """Take the next bytes of the upload; gzip is inflated at most
        :data:`INFLATE_BYTES` at a time, each piece written out before the next is made,
        so however far the input inflates, an upload holds little more than that."""
        if self._inflater is None:
            self._emit(data)
            return
        try:
            while True:
                most = min(MAX_SESSION_BYTES - self.size + 1, INFLATE_BYTES)
                out = self._inflater.decompress(data, most)
                self._emit(out)
                data = self._inflater.unconsumed_tail
                if self._inflater.eof:  # a new gzip member may follow (concatenated gzip)
                    data = self._inflater.unused_data + data
                    if not data:
                        return
                    self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                elif not data and len(out) < most:
                    return  # all input taken and nothing more held back for output
        except zlib.error as exc:
            raise _BadGzip(str(exc)) from None

    def _emit(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_SESSION_BYTES:
            raise _TooLarge
        assert self._out is not None
        self._out.write(data)

    def finish(self) -> None:
        if self._inflater is not None:
            self.write(b"")  # whatever the inflater still holds
            if not self._inflater.eof:
                raise _BadGzip("the gzip stream ends early")
        assert self._out is not None
        self._out.close()
        os.replace(self.temp, self.target)

    def discard(self) -> None:
        try:
            if self._out is not None:
                self._out.close()  # raises again for a buffered tail a full disk refused
        except OSError:
            pass  # what it could not write is being thrown away anyway
        finally:
            self.temp.unlink(missing_ok=True)


async def receive_file(request: Request[Any, Any, Any], folder: Path) -> tuple[str, int]:
    """Stream the ``file`` part of a multipart body to ``folder``; returns (name, size)."""
    content_type, options = multipart.parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get("boundary")
    if content_type != "multipart/form-data" or not boundary:
        raise ApiError(400, "invalid_upload", "send multipart/form-data with a 'file' field")
    parser = multipart.PushMultipartParser(boundary, max_segment_count=16)
    incoming: _IncomingFile | None = None
    receiving = False
    done = False
    pending = bytearray()

    async def flush() -> None:
        if pending and incoming is not None:
            data = bytes(pending)
            pending.clear()
            await anyio.to_thread.run_sync(incoming.write, data)

    try:
        async for chunk in request.stream():
            for event in parser.parse(chunk):
                if isinstance(event, multipart.MultipartSegment):
                    receiving = event.name == "file" and incoming is None and not done
                    if receiving:
                        name = target_name(event.filename)
                        gz = bool(event.filename and event.filename.endswith(".gz"))
                        incoming = await anyio.to_thread.run_sync(_IncomingFile, folder / name, gz)
                elif event is None:
                    if receiving:
                        done, receiving = True, False
                elif receiving:
                    pending += event
                    if len(pending) >= FLUSH_BYTES:
                        await flush()
        parser.close()
        if incoming is None or not done:
            raise ApiError(400, "invalid_upload", "the form has no complete 'file' field")
        await flush()
        await anyio.to_thread.run_sync(incoming.finish)
        return incoming.target.name, incoming.size
    except _TooLarge:
        raise ApiError(
            413, "too_large", f"a transcript may be at most {MAX_SESSION_BYTES} bytes"
        ) from None
    except _BadGzip as exc:
        raise ApiError(400, "invalid_gzip", f"the file is not valid gzip: {exc}") from None
    except multipart.MultipartError as exc:
        raise ApiError(400, "invalid_upload", f"malformed multipart body: {exc}") from None
    except OSError as exc:  # a full disk, a used-up quota, a read-only file system
        raise storage_error(exc, "the upload") from None
    except HTTPException as exc:
        if exc.status_code == 413:
            raise ApiError(
                413, "too_large", f"a transcript may be at most {MAX_SESSION_BYTES} bytes"
            ) from None
        raise
    finally:
        if incoming is not None and incoming.temp.exists():
            await anyio.to_thread.run_sync(incoming.discard)


@dataclass
class _UploadOperation(Operation):
    """The upload reads its body as a stream, so its OpenAPI request body is declared here."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="One transcript, optionally gzipped (name ending in .gz).",
            content={
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        required=["file"],
                        properties={
                            "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                        },
                    )
                )
            },
        )


@post(
    "/api/upload/sessions",
    status_code=200,
    request_max_body_size=MAX_SESSION_BYTES + MULTIPART_OVERHEAD,
    operation_class=_UploadOperation,
    responses=errors(400, 401, 403, 413, 507),
)
async def upload_session(request: Request[Caller, Any, Any]) -> UploadResult:
    """Store one session transcript under the caller's folder; the same name replaces.

    Answered once the file is in place and the ingest batch that read it (with the
    ``session.upload`` event) is committed: its numbers are in every answer from then on
    (of a large file, its first part: the batches that follow read the rest)."""
    started = time.perf_counter()
    caller = request.user
    queue = IngestPlugin.of(request).queue
    folder = queue.pipeline.root / caller.user_id
    name, size = await receive_file(request, folder)
    event = AuditEvent(
        id=str(uuid.uuid4()),
        timestamp=datetime.now(UTC),
        user_id=caller.user_id,
        action="session.upload",
        resource=name,
        params={"size": size},
        result="ok",
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
        client_kind="api",
        client_ip=request.client.host if request.client else None,
    )
    # Stored, with its audit event, by the ingest batch that reads it (group commit): the
    # uploads that come meanwhile share its transaction. The hub hears of it from the batch.
    session_file, is_subagent = session_file_of(name)
    arrival = Arrival(
        path=f"{caller.user_id}/{name}",
        user_id=caller.user_id,
        name=name,
        session_file=session_file,
        is_subagent=is_subagent,
        size=size,
        event=event,
    )
    await queue.arrive(folder / name, arrival)
    return UploadResult(status="ok", filename=name, size=size)
