"""Usage entry copies: every usage line read is stored as a copy of its response, with a
flag saying whether it is the response's winner (:mod:`service.ingest.plan` decides).
An ingest batch finds the stored copies of the responses it touches by ``message_key``,
inserts its new copies, and flips the flags of stored copies that start or stop winning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from service.ingest.plan import NewCopy, StoredCopy, Winners
from service.ingest.pricing import cost_usd
from service.ingest.transcript import UsageEntry
from service.store import bulk, keyed, one_of

if TYPE_CHECKING:
    from service.store import Cursor

__all__ = ["delete_of_files", "flip", "insert", "message_key", "stored"]


def message_key(user_id: str, message_id: str) -> int:
    """The indexed key of one user's response: the first 8 bytes of the MD5 of
    ``user_id/message_id`` read little-endian, shifted right by one bit to fit a BIGINT
    (what migration 0002 computes in SQL). Two responses may share a key: readers compare
    the ids too."""
    digest = hashlib.md5(f"{user_id}/{message_id}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "little") >> 1


_ENTRY_COLUMNS = (
    "message_id, request_id, session_id, ts, model, input_tokens, output_tokens,"
    " cache_creation_tokens, cache_creation_5m, cache_creation_1h, cache_read_tokens,"
    " is_sidechain, speed, file_name, line_key, user_id, session_file, winner, rowid,"
    " cost_usd::DECIMAL(38, 12)::VARCHAR"
)
"""A stored copy as :func:`_stored_copy` takes it. Its cost comes as the sums in SQL take
it (as text: DuckDB hands text back faster than decimals), so a session's kept sums
change by exactly what summing its winners again would."""


def _stored_copy(row: tuple[Any, ...]) -> StoredCopy:
    *fields, user_id, session_file, winner, rowid, cost = row
    entry = UsageEntry(*fields)  # _ENTRY_COLUMNS starts with its fields in order
    entry.timestamp = entry.timestamp.astimezone(UTC)  # as the parser gives it
    return StoredCopy(rowid, user_id, session_file, entry, winner, _decimal(cost))


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def delete_of_files(cur: Cursor, paths: list[str]) -> list[StoredCopy]:
    """Delete the copies of files read again from the start; returns them."""
    if not paths:
        return []
    where, params = one_of("file_path", paths)
    rows = cur.execute(
        f"DELETE FROM usage_entries WHERE {where} RETURNING {_ENTRY_COLUMNS}", params
    ).fetchall()
    return [_stored_copy(row) for row in rows]


def stored(cur: Cursor, message_ids: Mapping[str, set[str]]) -> dict[str, list[StoredCopy]]:
    """Each user's stored copies of the given responses, found by ``message_key``."""
    keys = sorted({message_key(u, m) for u, mids in message_ids.items() for m in mids})
    found: dict[str, list[StoredCopy]] = {}
    for where, params in keyed("message_key", keys, bulk_type="BIGINT"):
        for row in cur.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM usage_entries WHERE {where}", params
        ).fetchall():
            copy = _stored_copy(row)
            if copy.entry.message_id in message_ids.get(copy.user_id, ()):
                found.setdefault(copy.user_id, []).append(copy)
    return found


_COPY_COLUMNS = {
    "user_id": pa.string(),
    "file_path": pa.string(),
    "line_key": pa.string(),
    "file_name": pa.string(),
    "session_file": pa.string(),
    "message_id": pa.string(),
    "request_id": pa.string(),
    "session_id": pa.string(),
    "ts": pa.timestamp("us", tz="UTC"),
    "model": pa.string(),
    "input_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "cache_read_tokens": pa.int64(),
    "cache_creation_tokens": pa.int64(),
    "cache_creation_5m": pa.int64(),
    "cache_creation_1h": pa.int64(),
    "is_sidechain": pa.bool_(),
    "speed": pa.string(),
    "cost_usd": pa.float64(),
    "winner": pa.bool_(),
    "message_key": pa.int64(),
}


def insert(cur: Cursor, copies: Sequence[NewCopy], winners: Winners) -> list[Decimal | None]:
    """Insert the new copies, each with its winner flag; returns each one's exact cost, in
    order.

    The insert hands back each cost with its exact value, matched by the cost itself (see
    ``_exact_costs``), so copies that share a line key (or anything else) cannot mix up
    theirs."""
    entries = [c.entry for c in copies]
    floats = [cost_usd(e) for e in entries]
    returned = bulk.insert(
        cur,
        "usage_entries",
        _COPY_COLUMNS,
        [
            [c.user_id for c in copies],
            [c.file_path for c in copies],
            [e.line_key for e in entries],
            [e.file_name for e in entries],
            [c.session_file for c in copies],
            [e.message_id for e in entries],
            [e.request_id for e in entries],
            [e.session_id for e in entries],
            [e.timestamp for e in entries],
            [e.model for e in entries],
            [e.input_tokens for e in entries],
            [e.output_tokens for e in entries],
            [e.cache_read_tokens for e in entries],
            [e.cache_creation_tokens for e in entries],
            [e.cache_creation_5m for e in entries],
            [e.cache_creation_1h for e in entries],
            [e.is_sidechain for e in entries],
            [e.speed for e in entries],
            floats,
            [winners.wins(e) for e in entries],
            [
                None if c.entry.message_id is None else message_key(c.user_id, c.entry.message_id)
                for c in copies
            ],
        ],
        few=4 * bulk.FEW,
        returning="cost_usd, cost_usd::DECIMAL(38, 12)::VARCHAR",
    )
    return _exact_costs(floats, returned)


def _exact_costs(
    floats: list[float | None], returned: list[tuple[Any, ...]]
) -> list[Decimal | None]:
    """Each copy's exact cost, in order, from the (cost, exact text) pairs an insert hands
    back: the conversion depends on the cost alone, so each distinct one is read once."""
    exact = {cost: _decimal(text) for cost, text in returned}
    return [None if cost is None else exact[cost] for cost in floats]


def flip(cur: Cursor, rowids: Sequence[int]) -> None:
    """Flip the winner flags of the stored copies at ``rowids``."""
    for where, params in keyed("rowid", rowids):
        cur.execute(f"UPDATE usage_entries SET winner = NOT winner WHERE {where}", params)
