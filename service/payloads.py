"""Tab payloads: each answer of ``/api/me/stats/*`` computed once per change and shared by
the REST endpoints and the live push.

A :class:`Query` names one answer (a tab and its normalized parameters). :class:`Payloads`
keeps the encoded answers with their ETags in memory, least recently used first out once
they hold more than ``max_bytes``, and knows every user's current version without asking
the database: the hub tells it each committed change (:meth:`Payloads.changed`), with the
tabs that changed.

An answer stays valid while its tab does not change: an audit event makes the Queries tab
and its ETag new, and leaves the Tokens answer (and its ETag) as they were. So:

- a request whose ``If-None-Match`` is current is a ``304`` decided in memory;
- a request for an answer in memory is its stored bytes;
- anything else is read from one database snapshot (the version and the answer together),
  once however many requests wait for it, and kept.
"""

from __future__ import annotations

import gzip
import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import ClassVar, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import msgspec

from service.models import TAB_NAMES
from service.store import Cursor, Store, audit, blocks, stats, users

__all__ = [
    "COMPRESS_FROM",
    "DEFAULT_MAX_BYTES",
    "BlocksQuery",
    "Payload",
    "Payloads",
    "QueriesQuery",
    "Query",
    "SessionsQuery",
    "SyncQuery",
    "TokensQuery",
    "first_page",
    "read_answer",
    "this_minute",
    "today",
]

DEFAULT_MAX_BYTES = 128 * 2**20
"""Encoded answers kept in memory, gzip included (what a user's tabs take: bench/README)."""
ENTRY_OVERHEAD = 400
"""Bytes an entry costs beyond its bodies (key, ETag, bookkeeping), for the memory bound."""
COMPRESS_FROM = 1024
"""Answers from this many bytes are sent gzipped to clients that take it."""
GZIP_LEVEL = 6
"""Made once per answer; 9 takes 1.5 to 2 times as long for 2 to 3% less."""


class SessionsQuery(msgspec.Struct, frozen=True, tag="sessions"):
    """A page of sessions; ``window`` None: every session."""

    tab: ClassVar[str] = "sessions"
    limit: int = 50
    offset: int = 0
    window: stats.Window | None = None
    project: str | None = None
    tz: str = "UTC"
    today: str = ""
    """The date in ``tz`` when asked, when a window is given (see TokensQuery)."""


class TokensQuery(msgspec.Struct, frozen=True, tag="tokens"):
    tab: ClassVar[str] = "tokens"
    window: stats.Window = stats.Window()
    tz: str = "UTC"
    project: str | None = None
    today: str = ""
    """The date in ``tz`` when asked (:func:`today`): the daily window moves at midnight
    even when no data changes, so the date is part of the answer's name."""


class BlocksQuery(msgspec.Struct, frozen=True, tag="blocks"):
    tab: ClassVar[str] = "blocks"
    days: int | None = 3  # None: every block (``days=all``), or the dates below
    start: str | None = None  # a window of local dates (``from``/``to``), both included
    end: str | None = None
    tz: str = "UTC"
    token_limit: int | str | None = None  # tokens, or "max"
    as_of: str = ""
    """The minute asked in (:func:`this_minute`): the answer depends on the clock (which
    block is active, time left, the projection, the window, today), so the minute is part
    of its name. Blocks end on the hour, so none is called active past its end."""


class QueriesQuery(msgspec.Struct, frozen=True, tag="queries"):
    tab: ClassVar[str] = "queries"
    limit: int = 50
    after: audit.PageCursor | None = None


class SyncQuery(msgspec.Struct, frozen=True, tag="sync"):
    tab: ClassVar[str] = "sync"
    limit: int = 50
    after: audit.PageCursor | None = None


Query: TypeAlias = SessionsQuery | TokensQuery | QueriesQuery | SyncQuery | BlocksQuery


def today(tz: str) -> str:
    """The date in ``tz`` (the hour in UTC for a name ICU knows and zoneinfo does not)."""
    try:
        return datetime.now(ZoneInfo(tz)).date().isoformat()
    except (ZoneInfoNotFoundError, ValueError):
        return datetime.now(UTC).strftime("%Y-%m-%dT%H")


def this_minute() -> str:
    """The start of the current minute in UTC, as :class:`BlocksQuery` takes it."""
    return datetime.now(UTC).replace(second=0, microsecond=0).isoformat()


def first_page(tab: str, tz: str) -> Query:
    """What a dashboard shows of ``tab`` before it pages (tokens: 30 days in ``tz``)."""
    if tab == "sessions":
        return SessionsQuery()
    if tab == "tokens":
        return TokensQuery(tz=tz, today=today(tz))
    if tab == "queries":
        return QueriesQuery()
    if tab == "blocks":
        return BlocksQuery(tz=tz, as_of=this_minute())
    return SyncQuery()


def _read(cur: Cursor, user_id: str, query: Query) -> msgspec.Struct:
    if isinstance(query, SessionsQuery):
        return stats.sessions_page(
            cur,
            user_id,
            limit=query.limit,
            offset=query.offset,
            window=query.window,
            tz=query.tz,
            project=query.project,
        )
    if isinstance(query, TokensQuery):
        return stats.token_stats(
            cur, user_id, window=query.window, tz=query.tz, project=query.project
        )
    if isinstance(query, QueriesQuery):
        return audit.queries_page(cur, user_id, limit=query.limit, after=query.after)
    if isinstance(query, BlocksQuery):
        return blocks.block_stats(
            cur,
            user_id,
            days=query.days,
            tz=query.tz,
            token_limit=query.token_limit,
            now=datetime.fromisoformat(query.as_of),
            start=None if query.start is None else date.fromisoformat(query.start),
            end=None if query.end is None else date.fromisoformat(query.end),
        )
    return audit.sync_page(cur, user_id, limit=query.limit, after=query.after)


_encode = msgspec.json.Encoder().encode


def _tag(query: Query) -> str:
    return hashlib.blake2b(_encode(query), digest_size=6).hexdigest()


@dataclass(eq=False, slots=True)
class Payload:
    """One encoded answer, read at ``version`` of its user's data."""

    version: int
    etag: str
    body: bytes
    _gzipped: bytes | None = None

    @property
    def gzipped(self) -> bytes:
        """The body gzipped, made on first use and kept with it."""
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, GZIP_LEVEL, mtime=0)
        return self._gzipped

    @property
    def size(self) -> int:
        return len(self.body) + len(self._gzipped or b"") + ENTRY_OVERHEAD


Key: TypeAlias = tuple[str, Query]


@dataclass(eq=False)
class _UserState:
    """What is known of one user's data in memory: the version, and the version at which
    each tab last changed (a tab not named changed at ``since`` at the latest)."""

    version: int
    since: int
    tab_changed: dict[str, int] = field(default_factory=dict)
    keys: set[Key] = field(default_factory=set)

    def changed_at(self, tab: str) -> int:
        return self.tab_changed.get(tab, self.since)


class Payloads:
    def __init__(self, store: Store, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[Key, Payload] = OrderedDict()
        self._users: dict[str, _UserState] = {}
        self._computing: dict[Key, anyio.Event] = {}

    @property
    def known_users(self) -> int:
        return len(self._users)

    # -- versions ----------------------------------------------------------------------

    async def load_versions(self) -> None:
        """Learn every user's version in one read (at start-up; the rest come by
        :meth:`changed`). A user met before this finishes is read alone."""
        for user_id, version in (await self.store.read(users.all_versions)).items():
            self._learn(user_id, version)

    async def version(self, user_id: str) -> int:
        """The user's current version, from memory once known."""
        state = self._users.get(user_id)
        if state is None:
            state = self._learn(user_id, await self.store.read(users.get_version, user_id))
        return state.version

    def _learn(self, user_id: str, version: int) -> _UserState:
        """A version read from the database: what changed before it is unknown, so every
        tab counts as changed at it."""
        state = self._users.get(user_id)
        if state is None:
            state = self._users[user_id] = _UserState(version=version, since=version)
        elif version > state.version:
            self.changed({user_id: version})
        return self._users[user_id]

    def changed(
        self, versions: Mapping[str, int], tabs: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        """Committed changes: each user's new version and the tabs that changed in it (every
        tab when not said). Answers of those tabs are dropped; the others stay current."""
        for user_id, version in versions.items():
            changed = frozenset(TAB_NAMES if tabs is None else tabs.get(user_id, TAB_NAMES))
            state = self._users.get(user_id)
            if state is None:
                self._users[user_id] = _UserState(version=version, since=version)
                continue
            if version <= state.version:
                continue  # old news: a read already saw this version
            state.version = version
            for tab in changed:
                state.tab_changed[tab] = version
            for key in [k for k in state.keys if k[1].tab in changed]:
                self._drop(key)

    # -- answers -----------------------------------------------------------------------

    async def current_etag(self, user_id: str, query: Query, if_none_match: str) -> str | None:
        """The ETag the client sent in ``If-None-Match``, if its answer is still current.

        An ETag ``W/"V-tag"`` names the answer to ``query`` at version V; it is current when
        the query's tab has not changed since V. Decided in memory."""
        state = self._users.get(user_id)
        if state is None:
            await self.version(user_id)
            state = self._users[user_id]
        tag = _tag(query)
        changed_at = state.changed_at(query.tab)
        for sent in if_none_match.split(","):
            version, _, sent_tag = sent.strip().removeprefix("W/").strip('"').partition("-")
            current = version.isdigit() and changed_at <= int(version) <= state.version
            if sent_tag == tag and current:
                return f'W/"{int(version)}-{tag}"'
        return None

    async def get(self, user_id: str, query: Query) -> Payload:
        """The current answer to ``query`` for ``user_id``: kept, or read now (once, however
        many ask at the same time)."""
        key: Key = (user_id, query)
        while True:
            payload = self._current(key)
            if payload is not None:
                return payload
            pending = self._computing.get(key)
            if pending is None:
                break
            await pending.wait()  # then look again: it may have failed, or be stale already
        done = self._computing[key] = anyio.Event()
        try:
            version, answer = await self.store.read(stats.versioned, user_id, _read, query)
            state = self._learn(user_id, version)
            payload = Payload(
                version=version, etag=f'W/"{version}-{_tag(query)}"', body=_encode(answer)
            )
            if version >= state.changed_at(query.tab):
                self._keep(key, payload, state)
            return payload
        finally:
            del self._computing[key]
            done.set()

    async def snapshot(self, user_id: str, tz: str) -> tuple[int, dict[str, Payload]]:
        """The first page of every tab and the version they are current at."""
        version = await self.version(user_id)
        return version, await self.first_pages(user_id, TAB_NAMES, tz)

    async def first_pages(self, user_id: str, tabs: Iterable[str], tz: str) -> dict[str, Payload]:
        """The first page of each of ``tabs``, read at the same time (each from its own
        snapshot), so a push waits for the slowest tab rather than for all in turn."""
        pages: dict[str, Payload] = {}

        async def read(tab: str) -> None:
            pages[tab] = await self.get(user_id, first_page(tab, tz))

        async with anyio.create_task_group() as group:
            for tab in tabs:
                group.start_soon(read, tab)
        return {tab: pages[tab] for tab in TAB_NAMES if tab in pages}

    def gzipped(self, user_id: str, query: Query, payload: Payload) -> bytes:
        """``payload``'s body gzipped, and the entry's size counted again if it grew."""
        before = payload.size
        body = payload.gzipped
        if self._entries.get((user_id, query)) is payload:
            self.size += payload.size - before
            self._evict()
        return body

    # -- memory ------------------------------------------------------------------------

    def _current(self, key: Key) -> Payload | None:
        payload = self._entries.get(key)
        if payload is None:
            return None
        state = self._users[key[0]]
        if payload.version < state.changed_at(key[1].tab):
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return payload

    def _keep(self, key: Key, payload: Payload, state: _UserState) -> None:
        if key in self._entries:
            self._drop(key)
        self._entries[key] = payload
        state.keys.add(key)
        self.size += payload.size
        self._evict()

    def _evict(self) -> None:
        while self.size > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: Key) -> None:
        payload = self._entries.pop(key, None)
        if payload is not None:
            self.size -= payload.size
            self._users[key[0]].keys.discard(key)


def read_answer(cur: Cursor, user_id: str, query: Query) -> msgspec.Struct:
    """The answer to ``query`` read from ``cur`` as it is now (what :meth:`Payloads.get`
    keeps, without the version): for reads that page through a snapshot, like exports."""
    return _read(cur, user_id, query)
