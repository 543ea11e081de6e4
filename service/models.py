"""The domain vocabulary shared by the store, the API and the live push.

Every answer of the HTTP API is one of these Structs, so the OpenAPI document, the
REST answers and the websocket payloads cannot drift apart. Timestamps leave the service as
ISO 8601 strings with an explicit offset (``2026-01-01T09:30:00+00:00``), made by
:func:`iso`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, overload

import msgspec

__all__ = [
    "TAB_NAMES",
    "ActiveBlock",
    "AuditAccepted",
    "AuditEvent",
    "AuditPage",
    "AuditRow",
    "BlockRow",
    "BlockStats",
    "Caller",
    "Changes",
    "ClientMessage",
    "Credential",
    "Health",
    "LocalMdResult",
    "LocalMdUpload",
    "Manifest",
    "ManifestFile",
    "Me",
    "ModelTokens",
    "NewToken",
    "NonEmpty",
    "Ping",
    "Pong",
    "ProjectTokens",
    "RecentSession",
    "Resync",
    "SessionRow",
    "SessionsPage",
    "Snapshot",
    "SyncPage",
    "Tabs",
    "Ticket",
    "Timestamp",
    "TokenCounts",
    "TokenDay",
    "TokenInfo",
    "TokenStats",
    "TokenWindow",
    "TopSession",
    "Update",
    "UploadResult",
    "User",
    "iso",
]

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]

Timestamp = str
"""An ISO 8601 timestamp in UTC with an explicit ``+00:00`` offset."""


@overload
def iso(value: datetime) -> Timestamp: ...
@overload
def iso(value: None) -> None: ...
@overload
def iso(value: datetime | None) -> Timestamp | None: ...
def iso(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat()


Credential = tuple[str, str]
"""How a caller proved who they are: ``("bearer", token hash)`` or ``("cookie", session
hash)``; checked again wherever it is used later (a ticket redeemed, a socket held open)."""


class Caller(msgspec.Struct, frozen=True):
    """Who made a request, and how: every ``/api/me`` answer is scoped to ``user_id``."""

    user_id: str
    email: str
    is_admin: bool
    token_id: str
    is_service: bool
    via: str  # "bearer" | "cookie"
    csrf: str | None = None  # the session's CSRF token when ``via == "cookie"``


class User(msgspec.Struct, frozen=True):
    id: str
    email: str
    is_admin: bool
    is_active: bool = True
    created_at: Timestamp | None = None
    last_pull_at: Timestamp | None = None


class Me(msgspec.Struct, frozen=True):
    id: str
    email: str
    is_admin: bool


class TokenInfo(msgspec.Struct, frozen=True):
    """A token as it may be shown again: its prefix, never the token."""

    id: str
    user_email: str
    name: str
    prefix: str
    is_service: bool
    created_at: Timestamp
    expires_at: Timestamp | None
    revoked_at: Timestamp | None


class NewToken(msgspec.Struct, frozen=True):
    """A freshly created token: the only time the token itself is shown."""

    token: str
    info: TokenInfo


class Health(msgspec.Struct, frozen=True):
    status: str
    version: str


class UploadResult(msgspec.Struct, frozen=True):
    status: str
    filename: str
    size: int


class LocalMdUpload(msgspec.Struct, frozen=True):
    """The body of ``POST /api/upload/local-md``: the analyst's ``CLAUDE.local.md``."""

    content: str


class LocalMdResult(msgspec.Struct, frozen=True):
    status: str
    user: str
    size: int


class SessionRow(msgspec.Struct, frozen=True):
    session_file: str
    session_id: str | None
    started_at: Timestamp | None
    ended_at: Timestamp | None
    active_seconds: int
    wall_seconds: int
    user_messages: int
    tool_calls: int
    tool_errors: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    tokens_total: int
    cost_usd: float | None
    primary_model: str | None
    processed: bool
    pipeline_status: str  # pending | processed | error
    error: str | None
    download_url: str
    project: str | None = None  # the session's cwd; None: no line of it has one
    project_key: str = ""  # the project's key ('' without a project)


class SessionsPage(msgspec.Struct, frozen=True):
    total: int
    offset: int
    limit: int
    rows: list[SessionRow]


class TokenCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Token sums of some of a user's entries. ``cost_usd`` is 0 when there are none (a
    day without usage costs nothing) and None when there are some but none has a price."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    total: int = 0
    cost_usd: float | None = 0.0
    sessions: int = 0


class TokenDay(TokenCounts, frozen=True, kw_only=True):
    day: str  # YYYY-MM-DD in the requested time zone


class ModelTokens(TokenCounts, frozen=True, kw_only=True):
    model: str


class ProjectTokens(msgspec.Struct, frozen=True, kw_only=True):
    """One project's share: ``project`` is the path of its latest session (None: sessions
    without a cwd, whose ``key`` is ''); ``last_active`` the end of the latest 15-minute UTC
    period in which it had usage (now, while that period lasts)."""

    project: str | None
    key: str
    sessions: int
    input: int
    output: int
    cache_read: int
    cache_creation: int
    total: int
    cost_usd: float | None
    last_active: Timestamp | None


class TokenWindow(msgspec.Struct, frozen=True, kw_only=True):
    """The numbers of the selected window: ``from`` and ``to`` are local dates in the
    answer's ``tz``, both included."""

    from_: str = msgspec.field(name="from")
    to: str
    totals: TokenCounts
    by_model: list[ModelTokens]
    by_project: list[ProjectTokens]


class TopSession(msgspec.Struct, frozen=True):
    session_file: str
    session_id: str
    started_at: Timestamp | None
    primary_model: str | None
    total: int
    cost_usd: float | None


class TokenStats(msgspec.Struct, frozen=True, kw_only=True):
    """``days`` is the window's length and ``daily`` its days; ``by_model``, ``by_project``,
    ``top_sessions``, ``totals`` and ``unpriced_models`` cover the user's whole history
    (narrowed to one project by ``project``, except ``by_project``); ``window`` the
    window's numbers."""

    days: int
    tz: str
    daily: list[TokenDay]
    by_model: list[ModelTokens]
    top_sessions: list[TopSession]
    totals: TokenCounts
    unpriced_models: list[str]
    by_project: list[ProjectTokens]
    window: TokenWindow
    project: str | None = None


class BlockRow(msgspec.Struct, frozen=True):
    """One 5-hour block: flat values (``models`` a list of names), so a CSV row is the
    block's fields in order."""

    start: Timestamp
    end: Timestamp
    last_activity: Timestamp
    is_active: bool
    entries: int
    models: list[str]
    input: int
    output: int
    cache_read: int
    cache_creation: int
    total: int
    cost_usd: float | None


class ActiveBlock(msgspec.Struct, frozen=True):
    """The active block's pace: tokens and cost per unit of time between its first and
    last entry (None while those are one moment), where it ends up at that pace, and how
    much of the token limit that is (None without a limit); as of the answer's ``as_of``."""

    start: Timestamp
    end: Timestamp
    remaining_seconds: int
    tokens_per_minute: float | None
    cost_per_hour: float | None
    projected_total: int | None
    projected_cost_usd: float | None
    percent_of_limit: float | None
    projected_percent_of_limit: float | None


class RecentSession(msgspec.Struct, frozen=True):
    """A session whose latest line is at most 10 minutes older than ``as_of``."""

    session_file: str
    session_id: str
    started_at: Timestamp | None
    ended_at: Timestamp
    primary_model: str | None
    total: int
    cost_usd: float | None


class BlockStats(msgspec.Struct, frozen=True):
    """``/api/me/stats/blocks``: the blocks that started in the window or are active,
    newest first, computed as of ``as_of`` (the start of the minute the answer was made
    in, so a cached answer never outlives the block it calls active)."""

    days: int
    tz: str
    as_of: Timestamp
    token_limit: int | None
    blocks: list[BlockRow]
    active: ActiveBlock | None
    last_block_end: Timestamp | None
    today: TokenDay
    active_sessions: list[RecentSession]


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One audit event as other services write it (spool line or ``POST /api/audit/events``)."""

    id: NonEmpty | None = None
    timestamp: datetime
    user_id: NonEmpty
    action: NonEmpty
    resource: str | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    result: str | None = None
    duration_ms: float | None = None
    client_kind: str | None = None
    client_ip: str | None = None
    correlation_id: str | None = None


class AuditRow(msgspec.Struct, frozen=True):
    id: str
    timestamp: Timestamp
    action: str
    resource: str | None
    params: dict[str, Any]
    result: str | None
    duration_ms: float | None
    client_kind: str | None
    client_ip: str | None
    correlation_id: str | None


class AuditPage(msgspec.Struct, frozen=True):
    limit: int
    rows: list[AuditRow]
    next_cursor: str | None


class SyncPage(msgspec.Struct, frozen=True):
    limit: int
    rows: list[AuditRow]
    next_cursor: str | None
    last_pull_at: Timestamp | None


class AuditAccepted(msgspec.Struct, frozen=True):
    accepted: int
    stored: int  # new events; the rest were already stored (same id)


class ManifestFile(msgspec.Struct, frozen=True):
    name: str
    size: int
    download_url: str


class Manifest(msgspec.Struct, frozen=True):
    generated_at: Timestamp
    user_id: str
    files: list[ManifestFile]


# -- live updates ----------------------------------------------------------------------

TAB_NAMES = ("sessions", "tokens", "queries", "sync", "blocks")


Tabs = dict[str, msgspec.Raw]
"""The first page of dashboard tabs by name (:data:`TAB_NAMES`), each the encoded REST
answer (:class:`SessionsPage`, :class:`TokenStats`, :class:`AuditPage`, :class:`SyncPage`,
:class:`BlockStats`) as it is: encoded once, the same bytes for REST and every socket."""


class Snapshot(msgspec.Struct, frozen=True, tag="snapshot", tag_field="type"):
    """Sent when a socket opens (and after ``resync`` or an overflow): every tab."""

    version: int
    tabs: Tabs


class Update(msgspec.Struct, frozen=True, tag="update", tag_field="type"):
    """Sent after a change: only the tabs that changed."""

    version: int
    tabs: Tabs


class Ping(msgspec.Struct, frozen=True, tag="ping", tag_field="type"):
    pass


class Pong(msgspec.Struct, frozen=True, tag="pong", tag_field="type"):
    pass


class Resync(msgspec.Struct, frozen=True, tag="resync", tag_field="type"):
    pass


ClientMessage = Pong | Resync


class Ticket(msgspec.Struct, frozen=True):
    ticket: str


class Changes(msgspec.Struct, frozen=True):
    """The long-poll answer: the caller's version now, and which tabs changed since."""

    version: int
    changed: list[str]
