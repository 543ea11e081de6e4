"""``POST /api/upload/local-md``: the analyst's ``CLAUDE.local.md``, which the original
``agnes push`` sends after the transcripts, kept as their latest copy; and
``GET /api/me/local-md``, which gives it back.

The copy is written to a temporary name beside its target and renamed into place, so a
reader never sees half of it, and a refused upload leaves the previous copy as it was.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
from litestar import Request, Response, get, post
from litestar.params import JSONBody

from service import operations
from service.api.errors import ApiError, storage_error
from service.api.openapi import errors
from service.models import AuditEvent, Caller, LocalMdResult, LocalMdUpload
from service.plugins.live import LivePlugin
from service.plugins.store import StorePlugin
from service.settings import UPLOAD_TEMP_PREFIX

__all__ = ["MAX_LOCAL_MD_BYTES", "get_local_md", "local_md_path", "upload_local_md"]

MAX_LOCAL_MD_BYTES = 1024 * 1024
"""The largest ``CLAUDE.local.md`` kept, in UTF-8 bytes."""
MAX_BODY_BYTES = 6 * MAX_LOCAL_MD_BYTES + 1024
"""The largest JSON body read: escaping (``\\u0001``) may make the text up to six times
longer in JSON than in UTF-8; the text's own size is checked once decoded."""
ACTION = "local_md.upload"


def local_md_path(request: Request[Caller, Any, Any]) -> Path:
    folder = StorePlugin.of(request).settings.local_md_dir
    return folder / f"{request.user.user_id}.md"


def _replace(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f"{UPLOAD_TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
    try:
        with open(temp, "xb") as out:
            out.write(data)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


@post(
    "/api/upload/local-md",
    status_code=200,
    request_max_body_size=MAX_BODY_BYTES,
    responses=errors(400, 401, 403, 413, 507),
)
async def upload_local_md(
    request: Request[Caller, Any, Any], data: JSONBody[LocalMdUpload]
) -> LocalMdResult:
    """Keep the caller's ``CLAUDE.local.md`` (UTF-8 text, at most 1 MiB) as their latest
    copy; the upload shows on the Sync tab as ``local_md.upload``."""
    started = time.perf_counter()
    try:
        encoded = data.content.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800") is no text
        raise ApiError(400, "invalid_text", "content is not valid Unicode text") from None
    if len(encoded) > MAX_LOCAL_MD_BYTES:
        raise ApiError(
            413, "too_large", f"CLAUDE.local.md may be at most {MAX_LOCAL_MD_BYTES} bytes"
        )
    try:
        await anyio.to_thread.run_sync(_replace, local_md_path(request), encoded)
    except OSError as exc:
        raise storage_error(exc, "CLAUDE.local.md") from None
    caller = request.user
    event = AuditEvent(
        id=str(uuid.uuid4()),
        timestamp=datetime.now(UTC),
        user_id=caller.user_id,
        action=ACTION,
        resource="CLAUDE.local.md",
        params={"size": len(encoded)},
        result="ok",
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
        client_kind="api",
        client_ip=request.client.host if request.client else None,
    )
    await operations.keep_event(StorePlugin.of(request).store, LivePlugin.of(request).hub, event)
    return LocalMdResult(status="ok", user=caller.email, size=len(encoded))


@get(
    "/local-md",
    media_type="text/markdown",
    responses=errors(401, 404),
)
async def get_local_md(request: Request[Caller, Any, Any]) -> Response[bytes]:
    """The caller's latest ``CLAUDE.local.md``, as uploaded."""
    try:
        body = await anyio.to_thread.run_sync(local_md_path(request).read_bytes)
    except FileNotFoundError:
        raise ApiError(404, "not_found", "no CLAUDE.local.md uploaded yet") from None
    return Response(
        body,
        media_type="text/markdown",
        headers={"Cache-Control": "private, no-cache"},
    )
