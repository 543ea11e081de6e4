"""The hub: who is watching whose data, and what to tell them when it changes.

After every committed change the touched users' new versions reach :meth:`Hub.notify`
with the tabs that changed. The hub's own task takes each changed tab's first page from
:class:`~service.payloads.Payloads` (read once per user version and time zone, after the
commit, so a payload is never older than its version; the same bytes answer REST) and
hands the same encoded message to every connection of that user. A
connection never blocks the hub: each has a small queue, and when a slow client lets it
fill up, its queued updates are dropped and it gets one fresh snapshot instead.

The hub also keeps, per user, the recent versions and what changed in them, so a
long-polling client learns which tabs to fetch again.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import anyio
import msgspec

from service import metrics
from service.models import TAB_NAMES, Caller, Credential, Snapshot, Update
from service.payloads import Payloads
from service.store import Store

__all__ = [
    "CHANGE_LOG",
    "QUEUE_LIMIT",
    "TICKET_SECONDS",
    "Connection",
    "Hub",
]

ALL_TABS = frozenset(TAB_NAMES)
QUEUE_LIMIT = 16
"""Messages a connection may have waiting before they are replaced by one snapshot."""
CHANGE_LOG = 256
TICKET_SECONDS = 60.0

_encode = msgspec.json.Encoder().encode
_TAB_SETS: dict[frozenset[str], frozenset[str]] = {}


@dataclass(eq=False)
class Connection:
    """One open socket, as the hub sees it: whose, in which time zone, what is queued."""

    caller: Caller
    tz: str
    credential: Credential = ("", "")  # what the socket opened with, checked again later
    until: datetime | None = None  # when that credential expires by itself, if ever
    version: int = 0
    pending: deque[tuple[int, bytes]] = field(default_factory=deque)
    needs_snapshot: bool = True
    closed_reason: str | None = None
    wakeup: anyio.Event = field(default_factory=anyio.Event)

    def offer(self, version: int, message: bytes) -> None:
        if self.needs_snapshot:
            return  # the snapshot to come is newer than this update anyway
        if len(self.pending) >= QUEUE_LIMIT:
            self.pending.clear()
            self.needs_snapshot = True
            metrics.SEND_QUEUE_OVERFLOWS.inc()
        else:
            self.pending.append((version, message))
        self.wakeup.set()

    def close(self, reason: str) -> None:
        self.closed_reason = reason
        self.wakeup.set()

    async def next_message(self, hub: Hub) -> bytes | None:
        """What to send next (waiting for it); None once the hub closed the connection."""
        while True:
            if self.closed_reason is not None:
                return None
            if self.needs_snapshot:
                self.needs_snapshot = False
                self.pending.clear()
                version, tabs = await hub.payloads.snapshot(self.caller.user_id, self.tz)
                self.version = version
                raw = {tab: msgspec.Raw(payload.body) for tab, payload in tabs.items()}
                return _encode(Snapshot(version=version, tabs=raw))
            while self.pending:
                version, message = self.pending.popleft()
                if version > self.version:
                    self.version = version
                    return message
            self.wakeup = anyio.Event()
            await self.wakeup.wait()


class Hub:
    def __init__(self, store: Store) -> None:
        self.payloads = Payloads(store)
        self._connections: dict[str, set[Connection]] = {}
        self._changes: dict[str, deque[tuple[int, frozenset[str]]]] = {}
        self._changed: dict[str, anyio.Event] = {}
        self._tickets: dict[str, tuple[Credential, float]] = {}
        self._outbox: deque[tuple[str, int, frozenset[str], float]] = deque()
        self._outbox_ready: anyio.Event | None = None

    # -- connections -----------------------------------------------------------------

    def connect(
        self,
        caller: Caller,
        tz: str,
        *,
        credential: Credential = ("", ""),
        until: datetime | None = None,
    ) -> Connection:
        connection = Connection(caller=caller, tz=tz, credential=credential, until=until)
        self._connections.setdefault(caller.user_id, set()).add(connection)
        metrics.CONNECTIONS.inc()
        return connection

    def disconnect(self, connection: Connection) -> None:
        mine = self._connections.get(connection.caller.user_id)
        if mine is not None and connection in mine:
            mine.discard(connection)
            metrics.CONNECTIONS.dec()
            if not mine:
                del self._connections[connection.caller.user_id]

    def close_where(
        self,
        reason: str,
        *,
        token_id: str | None = None,
        user_id: str | None = None,
        credential: Credential | None = None,
    ) -> int:
        """Close the live connections opened with a token, of a user, or opened with one
        credential (a browser session); returns how many."""
        closed = 0
        for mine in self._connections.values():
            for connection in mine:
                if (
                    connection.caller.token_id == token_id
                    or connection.caller.user_id == user_id
                    or connection.credential == credential
                ):
                    connection.close(reason)
                    closed += 1
        return closed

    def issue_ticket(self, credential: Credential) -> str:
        """A short-lived, single-use pass for opening a socket where cookies cannot go. It
        carries the credential it was issued for, not the caller: whoever redeems it checks
        that credential again."""
        now = time.monotonic()
        self._tickets = {t: v for t, v in self._tickets.items() if v[1] > now}
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = (credential, now + TICKET_SECONDS)
        return ticket

    def redeem_ticket(self, ticket: str) -> Credential | None:
        entry = self._tickets.pop(ticket, None)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    # -- changes ---------------------------------------------------------------------

    def notify(
        self, versions: Mapping[str, int], changed: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        """Tell everyone watching: ``versions`` are the users' new versions, ``changed`` the
        tabs that changed for each (all tabs when not said). Long-polls wake at once; socket
        updates are built by :meth:`run`, so neither a request nor ingest waits for them."""
        self.payloads.changed(versions, changed)
        for user_id, version in versions.items():
            tabs = frozenset((changed or {}).get(user_id, ALL_TABS)) & ALL_TABS
            # one object per set of tabs (there are 16), not one per change: the change
            # log keeps up to CHANGE_LOG entries for every user who ever changed
            tabs = _TAB_SETS.setdefault(tabs, tabs)
            if not tabs:
                continue
            self._changes.setdefault(user_id, deque(maxlen=CHANGE_LOG)).append((version, tabs))
            event = self._changed.pop(user_id, None)
            if event is not None:
                event.set()
            if user_id in self._connections:
                self._outbox.append((user_id, version, tabs, time.perf_counter()))
        if self._outbox and self._outbox_ready is not None:
            self._outbox_ready.set()

    async def run(self) -> None:
        """Build and hand out updates one after another, so they leave in version order."""
        await self.payloads.load_versions()
        while True:
            self._outbox_ready = anyio.Event()
            while self._outbox:
                await self._deliver(*self._outbox.popleft())
            await self._outbox_ready.wait()

    async def _deliver(
        self, user_id: str, version: int, tabs: frozenset[str], noticed: float
    ) -> None:
        """One payload per time zone in use, the same bytes for every socket in it."""
        by_zone: dict[str, list[Connection]] = {}
        for connection in self._connections.get(user_id, ()):
            by_zone.setdefault(connection.tz, []).append(connection)
        for tz, group in by_zone.items():
            pages = await self.payloads.first_pages(user_id, tabs, tz)
            raw = {tab: msgspec.Raw(payload.body) for tab, payload in pages.items()}
            message = _encode(Update(version=version, tabs=raw))
            for connection in group:
                connection.offer(version, message)
        if by_zone:
            metrics.PUSH_SECONDS.observe(time.perf_counter() - noticed)

    def changes_since(self, user_id: str, since: int) -> list[str]:
        log = self._changes.get(user_id)
        if not log or log[0][0] > since + 1:
            return sorted(ALL_TABS)  # older than what is remembered: assume everything
        changed: set[str] = set()
        for version, tabs in log:
            if version > since:
                changed |= tabs
        return sorted(changed) if changed else sorted(ALL_TABS)

    async def wait_for_change(self, user_id: str, since: int, seconds: float) -> int | None:
        """The user's version once it is past ``since``; None if ``seconds`` pass first."""
        with anyio.move_on_after(seconds):
            while True:
                event = self._changed.setdefault(user_id, anyio.Event())
                version = await self.payloads.version(user_id)
                if version > since:
                    return version
                await event.wait()
        return None
