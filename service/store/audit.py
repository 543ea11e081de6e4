"""Audit events: stored exactly once by id, read newest first with keyset pagination."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import msgspec
import pyarrow as pa

from service.models import AuditEvent, AuditPage, AuditRow, SyncPage, iso
from service.store import KEYED_CHUNK, keyed, users

if TYPE_CHECKING:
    from service.store import Cursor

log = logging.getLogger("agnes.audit")

QUERY_PREFIX = "query."
SYNC_ACTIONS = ("sync.trigger", "manifest.fetch", "session.upload", "local_md.upload")

SCAN_FROM = 16 * KEYED_CHUNK

_encode_params = msgspec.json.Encoder(order="sorted").encode
_decode_params = msgspec.json.Decoder(dict).decode


def insert_events(cur: Cursor, events: list[AuditEvent]) -> list[str]:
    """Store events not stored yet; returns the user id of each event stored now."""
    return [user_id for user_id, _ in store_new_events(cur, events)]


def store_new_events(cur: Cursor, events: Sequence[AuditEvent]) -> list[tuple[str, str]]:
    """Store the events not stored yet, in one statement however many; returns the
    (user id, action) of each event stored now.

    Every event must carry its id already. Duplicates inside ``events`` are dropped here,
    because DuckDB keeps only the first of two rows with one key in an ``ON CONFLICT``
    statement without saying so. Which ids are stored already is asked of the primary
    key's index (:func:`existing_ids`): an anti-join instead scans every stored id, 0.4 to
    1 s per statement with 5 million events.
    """
    unique: dict[str, AuditEvent] = {}
    reused: set[str] = set()
    for event in events:
        assert event.id is not None, "audit events get their id before they are stored"
        if unique.setdefault(event.id, event) != event:
            reused.add(event.id)
    stored = existing_ids(cur, list(unique)) if unique else set()
    if stored:
        reused.update(conflicting_ids(cur, [unique[event_id] for event_id in stored]))
    if reused:
        log.warning(
            "%d audit event ids were reused for other content; the first event of each is"
            " kept, the others are dropped: %s",
            len(reused),
            _some(reused),
        )
    rows = [event for event_id, event in unique.items() if event_id not in stored]
    if not rows:
        return []
    unknown = users.unknown_user_ids(cur, [event.user_id for event in rows])
    if unknown:
        log.warning(
            "%d audit events name no known user (stored, but shown to no one): user ids %s",
            sum(event.user_id in unknown for event in rows),
            _some(unknown),
        )
    table = pa.table(
        {
            "id": pa.array([e.id for e in rows], pa.string()),
            "ts": pa.array([e.timestamp for e in rows], pa.timestamp("us", tz="UTC")),
            "user_id": pa.array([e.user_id for e in rows], pa.string()),
            "action": pa.array([e.action for e in rows], pa.string()),
            "resource": pa.array([e.resource for e in rows], pa.string()),
            "params": pa.array([_encode_params(e.params).decode() for e in rows], pa.string()),
            "result": pa.array([e.result for e in rows], pa.string()),
            "duration_ms": pa.array([e.duration_ms for e in rows], pa.float64()),
            "client_kind": pa.array([e.client_kind for e in rows], pa.string()),
            "client_ip": pa.array([e.client_ip for e in rows], pa.string()),
            "correlation_id": pa.array([e.correlation_id for e in rows], pa.string()),
        }
    )
    cur.register("incoming_events", table)
    try:
        cur.execute(
            "INSERT INTO audit_events SELECT i.*, ? FROM incoming_events i", [datetime.now(UTC)]
        )
    finally:
        cur.unregister("incoming_events")
    return [(e.user_id, e.action) for e in rows]


def _some(values: Iterable[str], shown: int = 5) -> str:
    ordered = sorted(values)
    more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
    return ", ".join(ordered[:shown]) + more


_STORED = (
    "id, ts, user_id, action, resource, params, result, duration_ms, client_kind, client_ip,"
    " correlation_id"
)


def _as_stored(event: AuditEvent) -> tuple[object, ...]:
    """An event's columns after ``id`` as :func:`store_new_events` stores them."""
    return (
        event.timestamp,
        event.user_id,
        event.action,
        event.resource,
        _encode_params(event.params).decode(),
        event.result,
        event.duration_ms,
        event.client_kind,
        event.client_ip,
        event.correlation_id,
    )


def insert_fresh_events(cur: Cursor, events: Sequence[AuditEvent]) -> None:
    """Store events this server has just made for a signed-in user (a new uuid4 id each,
    the time in UTC), such as an upload's: nothing about them needs checking, so one
    plain INSERT (the checks of :func:`store_new_events` are two to three statements)."""
    now = datetime.now(UTC)
    for start in range(0, len(events), KEYED_CHUNK):
        chunk = events[start : start + KEYED_CHUNK]
        cur.execute(
            f"INSERT INTO audit_events ({_STORED}, ingested_at) VALUES "
            + ", ".join(f"({', '.join('?' * 12)})" for _ in chunk),
            [value for event in chunk for value in (event.id, *_as_stored(event), now)],
        )


def conflicting_ids(cur: Cursor, events: Sequence[AuditEvent]) -> list[str]:
    """The ids of ``events`` (prepared: id set, time in UTC) that are stored already with
    other content: an id reused for another event, which storing would drop."""
    by_id = {event.id: event for event in events if event.id is not None}
    found: list[str] = []
    for where, params in keyed("id", list(by_id)):
        for row in cur.execute(
            f"SELECT {_STORED} FROM audit_events WHERE {where}", params
        ).fetchall():
            if tuple(row[1:]) != _as_stored(by_id[row[0]]):
                found.append(str(row[0]))
    return sorted(found)


def existing_ids(cur: Cursor, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` are stored already: looked up in the primary key's index, id by
    id; more than ``SCAN_FROM`` in one scan of every stored id instead (a scan costs as
    much as a few thousand lookups)."""
    found: set[str] = set()
    bulk = "VARCHAR" if len(ids) > SCAN_FROM else None
    for where, params in keyed("id", ids, bulk_type=bulk):
        rows = cur.execute(f"SELECT id FROM audit_events WHERE {where}", params).fetchall()
        found.update(str(r[0]) for r in rows)
    return found


def tab_of(action: str) -> str | None:
    """The dashboard tab that shows events of ``action``, if any."""
    if action.startswith(QUERY_PREFIX):
        return "queries"
    if action in SYNC_ACTIONS:
        return "sync"
    return None


class PageCursor(msgspec.Struct, array_like=True, frozen=True):
    """Where a page ended: the (timestamp, id) of its last row."""

    ts: datetime
    id: str


def encode_cursor(position: PageCursor | None) -> str | None:
    if position is None:
        return None
    return base64.urlsafe_b64encode(msgspec.json.encode(position)).decode().rstrip("=")


def decode_cursor(value: str | None) -> PageCursor | None:
    """The position a ``next_cursor`` stands for; ValueError for anything else."""
    if not value:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        position = msgspec.json.decode(raw, type=PageCursor)
        ts = position.ts if position.ts.tzinfo else position.ts.replace(tzinfo=UTC)
        return PageCursor(ts=ts.astimezone(UTC), id=position.id)
    except (binascii.Error, msgspec.ValidationError, msgspec.DecodeError, OverflowError) as exc:
        # OverflowError: a time that is before year 1 or after 9999 once in UTC
        raise ValueError("cursor is not one this server gave out") from exc


WINDOWS = (timedelta(days=14), timedelta(days=90), None)
"""How far back a page looks first, then next, before it looks at everything.

Events lie in user order up to the last rewrite and in time order after it (see
:mod:`service.store.layout`): the user's condition skips the other users' row groups of the
ordered part, and a bound on the timestamp skips the older row groups of the tail. A page
found within a window is the same as without it, since every event outside is older than
every event inside. Most users fill a page within two weeks; one who does not costs a
second or third look."""

_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _page(
    cur: Cursor, user_id: str, *, kind: str, limit: int, after: PageCursor | None
) -> tuple[list[AuditRow], str | None]:
    """One page of a user's events, newest first; the user filter comes before the limit."""
    if kind == "queries":
        where = "user_id = ? AND starts_with(action, ?)"
        params: list[object] = [user_id, QUERY_PREFIX]
    else:
        where = f"user_id = ? AND action IN ({', '.join('?' * len(SYNC_ACTIONS))})"
        params = [user_id, *SYNC_ACTIONS]
    if after is not None:
        where += " AND (ts < ? OR (ts = ? AND id < ?))"
        params += [after.ts, after.ts, after.id]
    newest = after.ts if after is not None else datetime.now(UTC)
    for window in WINDOWS:
        if window is not None and newest - _EARLIEST < window:
            continue  # the window would start before year 1: nothing is older, look at all
        bound = "" if window is None else " AND ts >= ?"
        rows = cur.execute(
            "SELECT id, ts, action, resource, params, result, duration_ms, client_kind,"
            f" client_ip, correlation_id FROM audit_events WHERE {where}{bound}"
            " ORDER BY ts DESC, id DESC LIMIT ?",
            [*params, *([] if window is None else [newest - window]), limit + 1],
        ).fetchall()
        if len(rows) > limit:
            break
    more = len(rows) > limit
    rows = rows[:limit]
    result = [
        AuditRow(
            id=r[0],
            timestamp=iso(r[1]) or "",
            action=r[2],
            resource=r[3],
            params=_decode_params(r[4]),
            result=r[5],
            duration_ms=r[6],
            client_kind=r[7],
            client_ip=r[8],
            correlation_id=r[9],
        )
        for r in rows
    ]
    next_cursor = PageCursor(ts=rows[-1][1], id=rows[-1][0]) if more and rows else None
    return result, encode_cursor(next_cursor)


def queries_page(
    cur: Cursor, user_id: str, *, limit: int, after: PageCursor | None = None
) -> AuditPage:
    rows, next_cursor = _page(cur, user_id, kind="queries", limit=limit, after=after)
    return AuditPage(limit=limit, rows=rows, next_cursor=next_cursor)


def sync_page(
    cur: Cursor, user_id: str, *, limit: int, after: PageCursor | None = None
) -> SyncPage:
    rows, next_cursor = _page(cur, user_id, kind="sync", limit=limit, after=after)
    pulled = cur.execute("SELECT last_pull_at FROM users WHERE id = ?", [user_id]).fetchone()
    return SyncPage(
        limit=limit,
        rows=rows,
        next_cursor=next_cursor,
        last_pull_at=iso(pulled[0]) if pulled else None,
    )
