"""Audit events: stored exactly once by id, read newest first with keyset pagination."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from service.models import AuditEvent, AuditPage, AuditRow, SyncPage, iso

if TYPE_CHECKING:
    from service.store import Cursor

QUERY_PREFIX = "query."
SYNC_ACTIONS = ("sync.trigger", "manifest.fetch", "session.upload")

_encode_params = msgspec.json.Encoder(order="sorted").encode
_decode_params = msgspec.json.Decoder(dict).decode


def insert_events(cur: Cursor, events: list[AuditEvent]) -> list[str]:
    """Store events not stored yet; returns the user id of each event stored now.

    Every event must carry its id already. Duplicates inside ``events`` are dropped here,
    because DuckDB keeps only the first of two rows with one key in an ``ON CONFLICT``
    statement without saying so.
    """
    unique: dict[str, AuditEvent] = {}
    for event in events:
        assert event.id is not None, "audit events get their id before they are stored"
        unique.setdefault(event.id, event)
    if not unique:
        return []
    now = datetime.now(UTC)
    rows = [
        (
            e.id,
            e.timestamp,
            e.user_id,
            e.action,
            e.resource,
            _encode_params(e.params).decode(),
            e.result,
            e.duration_ms,
            e.client_kind,
            e.client_ip,
            e.correlation_id,
            now,
        )
        for e in unique.values()
    ]
    existing = {
        str(row[0])
        for row in cur.execute(
            "SELECT id FROM audit_events WHERE id IN (SELECT unnest(?))", [list(unique)]
        ).fetchall()
    }
    new_rows = [row for row in rows if row[0] not in existing]
    if new_rows:
        cur.executemany(
            "INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", new_rows
        )
    return [str(row[2]) for row in new_rows]


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
        return msgspec.json.decode(raw, type=PageCursor)
    except (binascii.Error, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError("cursor is not one this server gave out") from exc


def _page(
    cur: Cursor, user_id: str, *, kind: str, limit: int, after: PageCursor | None
) -> tuple[list[AuditRow], str | None]:
    """One page of a user's events, newest first; the user filter comes before the limit."""
    if kind == "queries":
        where = "user_id = ? AND starts_with(action, ?)"
        params: list[object] = [user_id, QUERY_PREFIX]
    else:
        where = "user_id = ? AND action IN (?, ?, ?)"
        params = [user_id, *SYNC_ACTIONS]
    if after is not None:
        where += " AND (ts < ? OR (ts = ? AND id < ?))"
        params += [after.ts, after.ts, after.id]
    rows = cur.execute(
        "SELECT id, ts, action, resource, params, result, duration_ms, client_kind, client_ip,"
        f" correlation_id FROM audit_events WHERE {where} ORDER BY ts DESC, id DESC LIMIT ?",
        [*params, limit + 1],
    ).fetchall()
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
