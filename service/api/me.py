"""``/api/me``: the caller's own identity, statistics and files, and nobody else's.

Every handler takes the user id from the authenticated caller, never from the request.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal, cast

from litestar import MediaType, Request, Response, Router, get
from litestar.params import FromPath, Parameter, QueryParameter
from litestar.response import File, Stream

from service import export
from service.api import local_md
from service.api.errors import ApiError
from service.api.openapi import NOT_MODIFIED, CsvOperation, FileOperation, errors
from service.api.uploads import target_name
from service.models import AuditPage, BlockStats, Caller, Me, SessionsPage, SyncPage, TokenStats
from service.payloads import (
    COMPRESS_FROM,
    BlocksQuery,
    QueriesQuery,
    Query,
    SessionsQuery,
    SyncQuery,
    TokensQuery,
    this_minute,
    today,
)
from service.plugins.live import LivePlugin
from service.plugins.store import StorePlugin
from service.store import Store, audit, files
from service.store.stats import MAX_DAYS, Window

__all__ = [
    "NO_CACHE",
    "PRECOMPRESSED",
    "answer",
    "answer_as",
    "csv_file",
    "router",
    "stats_route",
    "token_limit",
    "window_of",
]

MAX_OFFSET = 2**53 - 1
"""The largest offset taken (a larger one is a 400, not a 500): the largest integer that a
JSON number holds exactly, so the ``maximum`` in ``/schema`` is the bound checked here (the
database itself would take up to 2**63 - 1)."""

Limit = Annotated[int, Parameter(ge=1, le=200, description="Rows per page (1 to 200).")]
PageCursorParam = Annotated[
    str | None, Parameter(description="`next_cursor` of the previous page; absent: first page.")
]
Format = Annotated[
    Literal["json", "csv"],
    QueryParameter(
        name="format",
        description="`csv`: a CSV file (attachment) of every row the query selects, not one"
        " page: `limit`, `offset` and `cursor` do not apply.",
    ),
]


def decode_cursor(value: str | None) -> audit.PageCursor | None:
    try:
        return audit.decode_cursor(value)
    except ValueError as exc:
        raise ApiError(400, "invalid_cursor", str(exc)) from None


DaysParam = Annotated[
    str | None,
    Parameter(
        description=f"The last N local days, today included (1 to {MAX_DAYS}), or `all`"
        " (since the first activity).",
        pattern=r"^(all|[0-9]{1,6})$",
    ),
]
FromParam = Annotated[
    str | None,
    QueryParameter(
        name="from",
        description="First local day (YYYY-MM-DD, in `tz`) of the window; alone, it runs to today.",
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    ),
]
ToParam = Annotated[
    str | None,
    Parameter(
        description="Last local day (YYYY-MM-DD, in `tz`) of the window, included; needs `from`.",
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    ),
]
ProjectParam = Annotated[
    str | None,
    Parameter(
        description="A project's `key`: only that project's sessions and tokens ('' : those"
        " without a project)."
    ),
]
TzParam = Annotated[str, Parameter(description="IANA time zone that days are counted in.")]
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _date(value: str, name: str) -> date:
    try:
        if not _DATE.fullmatch(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "invalid_window", f"{name} must be a date YYYY-MM-DD") from None


def window_of(
    days: str | None, start: str | None, end: str | None, tz: str, default: Window | None
) -> Window | None:
    """The window that ``days`` or ``from``/``to`` select (``default`` when none is
    given), checked: 400 for what DESIGN.md's "Windows" does not allow."""
    if days is not None and (start is not None or end is not None):
        raise ApiError(400, "invalid_window", "give days, or from and to, not both")
    if days is not None:
        if days == "all":
            return Window(days=None, all=True)
        if not days.isdigit() or not 1 <= int(days) <= MAX_DAYS:
            raise ApiError(400, "invalid_window", f"days must be 1 to {MAX_DAYS}, or all")
        return Window(days=int(days))
    if start is None:
        if end is not None:
            raise ApiError(400, "invalid_window", "to needs from")
        return default
    first = _date(start, "from")
    last = _date(end, "to") if end is not None else date.fromisoformat(today(tz)[:10])
    if first > last:
        raise ApiError(400, "invalid_window", f"from ({first}) is after to ({last})")
    if (last - first).days + 1 > MAX_DAYS:
        raise ApiError(400, "invalid_window", f"a window spans at most {MAX_DAYS} days")
    return Window(days=None, start=first.isoformat(), end=last.isoformat())


def _check_tz(request: Request[Any, Any, Any], tz: str) -> None:
    if tz not in StorePlugin.of(request).time_zones:
        raise ApiError(400, "invalid_tz", f"unknown time zone {tz!r}: give an IANA name")


def _store(request: Request[Any, Any, Any]) -> Store:
    return StorePlugin.of(request).store


async def answer(request: Request[Caller, Any, Any], query: Query) -> Response[Any]:
    """The caller's answer to ``query`` with its ETag, or ``304`` when the client's
    ``If-None-Match`` is still current: while the answer's tab has not changed, both come
    from memory (:class:`~service.payloads.Payloads`), so polling costs no database read.
    A client that takes gzip gets the answer gzipped once, not on every request."""
    payloads = LivePlugin.of(request).hub.payloads
    user_id = request.user.user_id
    sent = request.headers.get("if-none-match")
    if sent:
        etag = await payloads.current_etag(user_id, query, sent)
        if etag is not None:
            return Response(None, status_code=304, headers={"ETag": etag, **NO_CACHE})
    payload = await payloads.get(user_id, query)
    headers = {"ETag": payload.etag, "Vary": "Accept-Encoding", **NO_CACHE}
    body = payload.body
    if len(body) >= COMPRESS_FROM and "gzip" in request.headers.get("accept-encoding", ""):
        body = payloads.gzipped(user_id, query, payload)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=MediaType.JSON, headers=headers)


def csv_file(request: Request[Caller, Any, Any], query: Query, tz: str = "UTC") -> Response[Any]:
    """Every row ``query`` selects as a CSV attachment, streamed a page at a time."""
    name = f"agnes-{query.tab}-{today(tz)[:10]}.csv"
    rows = export.stream(_store(request), request.user.user_id, query)
    headers = {"Content-Disposition": f'attachment; filename="{name}"', **NO_CACHE}
    return cast(Response[Any], Stream(rows, media_type=export.MEDIA_TYPE, headers=headers))


async def answer_as(
    request: Request[Caller, Any, Any], query: Query, form: str, tz: str = "UTC"
) -> Response[Any]:
    if form == "csv":
        return csv_file(request, query, tz)
    return await answer(request, query)


PRECOMPRESSED = "precompressed"
"""Route option of the handlers that gzip their answers themselves (the app's compression
leaves them alone)."""


NO_CACHE = {"Cache-Control": "private, no-cache"}


def stats_route(path: str) -> get:
    """A ``GET /api/me/stats/*`` answer: JSON with its ETag (``304`` when current), gzipped
    by the handler itself, or every row as CSV with ``format=csv``."""
    return get(
        path,
        responses={**errors(400, 401), **NOT_MODIFIED},
        opt={PRECOMPRESSED: True},
        operation_class=CsvOperation,
    )


@get("/", responses=errors(401))
async def me(request: Request[Caller, Any, Any]) -> Me:
    caller = request.user
    return Me(id=caller.user_id, email=caller.email, is_admin=caller.is_admin)


@stats_route("/stats/sessions")
async def stats_sessions(
    request: Request[Caller, Any, Any],
    limit: Limit = 50,
    offset: Annotated[int, Parameter(ge=0, le=MAX_OFFSET, description="Rows to skip.")] = 0,
    days: DaysParam = None,
    start: FromParam = None,
    to: ToParam = None,
    project: ProjectParam = None,
    tz: TzParam = "UTC",
    form: Format = "json",
) -> Response[SessionsPage]:
    """The caller's sessions, newest first; files not processed yet are ``pending``. A
    window keeps the sessions that started on its days (default: every session)."""
    _check_tz(request, tz)
    window = window_of(days, start, to, tz, None)
    query = SessionsQuery(
        limit=limit,
        offset=offset,
        window=window,
        project=project,
        tz=tz,
        today=today(tz) if window is not None else "",
    )
    return await answer_as(request, query, form)


@stats_route("/stats/tokens")
async def stats_tokens(
    request: Request[Caller, Any, Any],
    days: DaysParam = None,
    start: FromParam = None,
    to: ToParam = None,
    project: ProjectParam = None,
    tz: TzParam = "UTC",
    form: Format = "json",
) -> Response[TokenStats]:
    """Daily tokens over the window (default: the last 30 days; zeros included) and the
    window's totals, models and projects; by model, by project, top sessions and totals
    over the whole history."""
    _check_tz(request, tz)
    window = window_of(days, start, to, tz, Window())
    assert window is not None
    query = TokensQuery(window=window, tz=tz, project=project, today=today(tz))
    return await answer_as(request, query, form, tz)


MAX_TOKEN_LIMIT = 2**53 - 1
MAX_BLOCK_DAYS = 365
"""``days=N`` of the blocks answer (a window of dates may span up to ``MAX_DAYS``)."""


def token_limit(value: str | None) -> int | str | None:
    """``token_limit``: a whole number of tokens (1 or more), or ``max``."""
    if value is None or value == "":
        return None
    if value == "max":
        return value
    if value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_TOKEN_LIMIT:
        return int(value)
    raise ApiError(
        400,
        "invalid_token_limit",
        f"token_limit must be a whole number of tokens or max, not {value!r}",
    )


@stats_route("/stats/blocks")
async def stats_blocks(
    request: Request[Caller, Any, Any],
    days: Annotated[
        str | None,
        Parameter(
            description="Blocks that started in the last N local days, today included (1 to"
            f" {MAX_BLOCK_DAYS}; default 3), or `all`.",
            pattern=r"^(all|[0-9]{1,6})$",
        ),
    ] = None,
    start: FromParam = None,
    to: ToParam = None,
    tz: Annotated[
        str, Parameter(description="IANA time zone of the days (the window and today).")
    ] = "UTC",
    token_limit_: Annotated[
        str | None,
        QueryParameter(
            name="token_limit",
            description="A token limit for the percentages: a number, or `max` (the largest"
            " total of your earlier, finished blocks).",
        ),
    ] = None,
    form: Format = "json",
) -> Response[BlockStats]:
    """Your 5-hour blocks that started in the window or are active, newest first; the
    active one's burn rate and projection; today's tokens; sessions active in the last 10
    minutes. Computed as of the current minute (``as_of``)."""
    _check_tz(request, tz)
    window = window_of(days, start, to, tz, Window(days=3))
    assert window is not None
    if window.days is not None and window.days > MAX_BLOCK_DAYS:
        raise ApiError(400, "invalid_window", f"days must be 1 to {MAX_BLOCK_DAYS}, or all")
    query = BlocksQuery(
        days=window.days,
        start=window.start,
        end=window.end,
        tz=tz,
        token_limit=token_limit(token_limit_),
        as_of=this_minute(),
    )
    return await answer_as(request, query, form, tz)


@stats_route("/stats/queries")
async def stats_queries(
    request: Request[Caller, Any, Any],
    limit: Limit = 50,
    cursor: PageCursorParam = None,
    form: Format = "json",
) -> Response[AuditPage]:
    """The caller's ``query.*`` audit events, newest first."""
    if form == "csv":
        return csv_file(request, QueriesQuery())
    return await answer(request, QueriesQuery(limit=limit, after=decode_cursor(cursor)))


@stats_route("/stats/sync")
async def stats_sync(
    request: Request[Caller, Any, Any],
    limit: Limit = 50,
    cursor: PageCursorParam = None,
    form: Format = "json",
) -> Response[SyncPage]:
    """The caller's syncs, manifest fetches and uploads, newest first, and the last pull."""
    if form == "csv":
        return csv_file(request, SyncQuery())
    return await answer(request, SyncQuery(limit=limit, after=decode_cursor(cursor)))


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
    root = StorePlugin.of(request).settings.sessions_dir.resolve()
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
        stats_blocks,
        stats_queries,
        stats_sync,
        download_session,
        local_md.get_local_md,
    ],
    tags=["me"],
)
