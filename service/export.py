"""CSV export: every row an answer of ``/api/me/stats/*`` selects, not one page of it.

The file is made from the same answers the JSON endpoints give (:func:`read_answer`), page
after page, so a filter or a column added to an answer shows in its export as well. The
pages are read in one snapshot of the database (:meth:`Store.snapshot`), so a row that
arrives or moves during a long download is neither missed nor written twice, and each page
is encoded and sent before the next is read: the memory an export takes does not grow with
its length.

A cell that a spreadsheet would run as a formula (one beginning with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return) is written with a leading ``'``. Audit events' resources
and params are written by other services and may carry anything.
"""

from __future__ import annotations

import csv
import io
import typing
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from service.models import AuditPage, SessionsPage, SyncPage
from service.payloads import QueriesQuery, Query, SessionsQuery, SyncQuery, read_answer
from service.store import Snapshot, Store, audit

__all__ = ["CHUNK_ROWS", "FORMULA_STARTS", "cell", "encode", "export_rows", "header", "stream"]

CHUNK_ROWS = 2000
"""Rows read, encoded and sent at a time."""
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MEDIA_TYPE = "text/csv"
"""Sent as ``text/csv; charset=utf-8`` (Litestar adds the charset)."""

_json = msgspec.json.Encoder(order="sorted").encode


@dataclass(frozen=True)
class Export:
    """Where an answer keeps its rows (``rows``, ``daily``, ``blocks``) and which columns
    lead (a tokens day starts with its date, which its type declares last)."""

    rows: str = "rows"
    first: tuple[str, ...] = ()


EXPORTS = {
    "sessions": Export(),
    "tokens": Export(rows="daily", first=("day",)),
    "queries": Export(),
    "sync": Export(),
    "blocks": Export(rows="blocks"),
}


def cell(value: Any) -> str:
    """One value as spreadsheet-safe text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = value if isinstance(value, str) else _json(value).decode()
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def row_type(answer_type: type[msgspec.Struct], spec: Export) -> type[msgspec.Struct]:
    """The Struct of one row of ``answer_type`` (from its ``list[...]`` annotation)."""
    hints = typing.get_type_hints(answer_type)
    (item,) = typing.get_args(hints[spec.rows])
    if not (isinstance(item, type) and issubclass(item, msgspec.Struct)):
        raise TypeError(f"{answer_type.__name__}.{spec.rows} is no list of Structs")
    return item


def header(answer_type: type[msgspec.Struct], spec: Export) -> list[str]:
    names = list(row_type(answer_type, spec).__struct_fields__)
    return [*spec.first, *(n for n in names if n not in spec.first)]


def encode(rows: Iterable[Sequence[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(rows)
    return out.getvalue().encode()


def _cells(columns: list[str], rows: Iterable[msgspec.Struct]) -> Iterable[list[str]]:
    for row in rows:
        yield [cell(getattr(row, name)) for name in columns]


async def export_rows(
    snapshot: Snapshot, user_id: str, query: Query
) -> AsyncIterator[tuple[type[msgspec.Struct], list[msgspec.Struct]]]:
    """Every row ``query`` selects, a page at a time (with the answer's type): sessions by
    offset, audit events by their keyset cursor, a tokens or blocks answer whole."""
    spec = EXPORTS[query.tab]
    if isinstance(query, SessionsQuery):
        offset = 0
        while True:
            page = msgspec.structs.replace(query, limit=CHUNK_ROWS, offset=offset)
            answer = await snapshot.read(read_answer, user_id, page)
            assert isinstance(answer, SessionsPage)
            rows = list(getattr(answer, spec.rows))
            yield type(answer), rows
            offset += len(rows)
            if not rows or offset >= answer.total:
                return
    elif isinstance(query, QueriesQuery | SyncQuery):
        after = None
        while True:
            cursor_page = msgspec.structs.replace(query, limit=CHUNK_ROWS, after=after)
            answer = await snapshot.read(read_answer, user_id, cursor_page)
            assert isinstance(answer, AuditPage | SyncPage)
            yield type(answer), list(getattr(answer, spec.rows))
            after = audit.decode_cursor(answer.next_cursor)
            if after is None:
                return
    else:
        answer = await snapshot.read(read_answer, user_id, query)
        yield type(answer), list(getattr(answer, spec.rows))


async def stream(store: Store, user_id: str, query: Query) -> AsyncIterator[bytes]:
    """The CSV file of ``query``'s rows for ``user_id``: a header line, then every row."""
    spec = EXPORTS[query.tab]
    columns: list[str] | None = None
    async with store.snapshot() as snapshot:
        async for answer_type, rows in export_rows(snapshot, user_id, query):
            chunk = b""
            if columns is None:
                columns = header(answer_type, spec)
                chunk = encode([columns])
            yield chunk + encode(_cells(columns, rows))
