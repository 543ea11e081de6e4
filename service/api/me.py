"""``/api/me``: the caller's own identity, statistics and files, and nobody else's.

Every handler takes the user id from the authenticated caller, never from the request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from litestar import Request, Response, Router, get
from litestar.params import FromPath, Parameter
from litestar.response import File

from service.api import live
from service.api.errors import ApiError
from service.api.openapi import NOT_MODIFIED, FileOperation, errors
from service.api.uploads import target_name
from service.models import AuditPage, Caller, Me, SessionsPage, SyncPage, TokenStats
from service.store import Cursor, Store, audit, files, stats, users

T = TypeVar("T")

MAX_OFFSET = 2**53 - 1
"""The largest offset taken (a larger one is a 400, not a 500): the largest integer that a
JSON number holds exactly, so the ``maximum`` in ``/schema`` is the bound checked here (the
database itself would take up to 2**63 - 1)."""

Limit = Annotated[int, Parameter(ge=1, le=200, description="Rows per page (1 to 200).")]
PageCursorParam = Annotated[
    str | None, Parameter(description="`next_cursor` of the previous page; absent: first page.")
]


def decode_cursor(value: str | None) -> audit.PageCursor | None:
    try:
        return audit.decode_cursor(value)
    except ValueError as exc:
        raise ApiError(400, "invalid_cursor", str(exc)) from None


def _store(request: Request[Any, Any, Any]) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


async def answer(
    request: Request[Caller, Any, Any], compute: Callable[[Cursor], T], *, as_of: str = ""
) -> Response[T]:
    """``compute``'s answer with an ETag made of the caller's version and the query (and
    ``as_of``, for answers that also move with the clock), or ``304`` when the client has
    it already: polling an unchanged dashboard costs one point read."""
    store = _store(request)
    user_id = request.user.user_id
    query = "&".join(f"{k}={v}" for k, v in sorted(request.query_params.items()))
    key = f"{request.url.path}?{query}#{as_of}"
    tag = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
    cached = request.headers.get("if-none-match")
    if cached:
        version = await store.read(users.get_version, user_id)
        etag = f'W/"{version}-{tag}"'
        if etag in (t.strip() for t in cached.split(",")):
            return Response(None, status_code=304, headers={"ETag": etag, **NO_CACHE})  # type: ignore[arg-type]

    def versioned(cur: Cursor) -> tuple[int, T]:
        return users.get_version(cur, user_id), compute(cur)

    version, body = await store.read(versioned)
    return Response(body, headers={"ETag": f'W/"{version}-{tag}"', **NO_CACHE})


NO_CACHE = {"Cache-Control": "private, no-cache"}


@get("/", responses=errors(401))
async def me(request: Request[Caller, Any, Any]) -> Me:
    caller = request.user
    return Me(id=caller.user_id, email=caller.email, is_admin=caller.is_admin)


@get("/stats/sessions", responses={**errors(400, 401), **NOT_MODIFIED})
async def stats_sessions(
    request: Request[Caller, Any, Any],
    limit: Limit = 50,
    offset: Annotated[int, Parameter(ge=0, le=MAX_OFFSET, description="Rows to skip.")] = 0,
) -> Response[SessionsPage]:
    """The caller's sessions, newest first; files not processed yet are ``pending``."""
    user_id = request.user.user_id
    return await answer(
        request, lambda cur: stats.sessions_page(cur, user_id, limit=limit, offset=offset)
    )


@get("/stats/tokens", responses={**errors(400, 401), **NOT_MODIFIED})
async def stats_tokens(
    request: Request[Caller, Any, Any],
    days: Annotated[int, Parameter(ge=1, le=365, description="Days in the daily series.")] = 30,
    tz: Annotated[str, Parameter(description="IANA time zone that days are counted in.")] = "UTC",
) -> Response[TokenStats]:
    """Daily tokens over the window (zeros included); by model, top sessions, totals."""
    if tz not in request.app.state.time_zones:
        raise ApiError(400, "invalid_tz", f"unknown time zone {tz!r}: give an IANA name")
    user_id = request.user.user_id
    return await answer(
        request, lambda cur: stats.token_stats(cur, user_id, days=days, tz=tz), as_of=today(tz)
    )


def today(tz: str) -> str:
    """The date in ``tz``: the daily window moves at midnight even when no data changes."""
    try:
        return datetime.now(ZoneInfo(tz)).date().isoformat()
    except (ZoneInfoNotFoundError, ValueError):  # a name ICU knows and zoneinfo does not
        return datetime.now(UTC).strftime("%Y-%m-%dT%H")


@get("/stats/queries", responses={**errors(400, 401), **NOT_MODIFIED})
async def stats_queries(
    request: Request[Caller, Any, Any], limit: Limit = 50, cursor: PageCursorParam = None
) -> Response[AuditPage]:
    """The caller's ``query.*`` audit events, newest first."""
    after, user_id = decode_cursor(cursor), request.user.user_id
    return await answer(
        request, lambda cur: audit.queries_page(cur, user_id, limit=limit, after=after)
    )


@get("/stats/sync", responses={**errors(400, 401), **NOT_MODIFIED})
async def stats_sync(
    request: Request[Caller, Any, Any], limit: Limit = 50, cursor: PageCursorParam = None
) -> Response[SyncPage]:
    """The caller's syncs, manifest fetches and uploads, newest first, and the last pull."""
    after, user_id = decode_cursor(cursor), request.user.user_id
    return await answer(
        request, lambda cur: audit.sync_page(cur, user_id, limit=limit, after=after)
    )


@get(
    "/sessions/{filename:str}",
    media_type="application/x-ndjson",
    responses=errors(401, 404),
    operation_class=FileOperation,
)
async def download_session(request: Request[Caller, Any, Any], filename: FromPath[str]) -> File:
    """One of the caller's uploaded transcripts, as stored."""
    missing = ApiError(404, "not_found", f"no session file {filename!r}")
    try:
        name = target_name(filename)
    except ApiError:
        raise missing from None
    if name != filename:
        raise missing
    stored = await _store(request).read(files.find_path, request.user.user_id, name)
    if stored is None:
        raise missing
    root: Path = request.app.state.settings.sessions_dir.resolve()
    path = (root / stored).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise missing
    return File(path=path, filename=name, media_type="application/x-ndjson")


router = Router(
    "/api/me",
    route_handlers=[
        me,
        stats_sessions,
        stats_tokens,
        stats_queries,
        stats_sync,
        download_session,
        live.ticket,
        live.poll,
    ],
    tags=["me"],
)
