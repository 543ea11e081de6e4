"""Inserting rows in one statement: a few as parameters, many as an Arrow table.

Registering an Arrow table has a fixed cost that is most of a live update's budget, so a
handful of rows goes as one ``INSERT ... VALUES`` with parameters; past that, parameters
cost more per row than the table does, and a backfill's thousands of rows go as one
table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from service.store import Cursor

__all__ = ["FEW", "insert"]

FEW = 8
"""Up to this many rows go as parameters, by default."""


def _placeholder(kind: pa.DataType) -> str:
    """A parameter of a column's type: a list needs its type spelled out (an empty Python
    list has none)."""
    if pa.types.is_list(kind) and pa.types.is_string(kind.value_type):
        return "?::VARCHAR[]"
    return "?"


def insert(
    cur: Cursor,
    table: str,
    columns: Mapping[str, pa.DataType],
    data: Sequence[Sequence[object]],
    *,
    few: int = FEW,
    on_conflict: str = "",
    order_by: str = "",
    returning: str = "",
) -> list[tuple[Any, ...]]:
    """Insert rows into ``table``; ``data`` holds one sequence per column of ``columns``
    (name → Arrow type), in that order, all of the same length. ``on_conflict`` (e.g.
    ``"ON CONFLICT (path) DO UPDATE SET ..."``) and ``returning`` (the ``RETURNING``
    columns) end the statement; ``order_by`` orders the rows of a table (parameters are
    inserted in the order given). Returns what ``returning`` asks for, one row per row."""
    count = len(data[0]) if data else 0
    if not count:
        return []
    names = ", ".join(columns)
    tail = f" {on_conflict}" if on_conflict else ""
    if returning:
        tail += f" RETURNING {returning}"
    if count <= few:
        row = f"({', '.join(_placeholder(kind) for kind in columns.values())})"
        result = cur.execute(
            f"INSERT INTO {table} ({names}) VALUES {', '.join([row] * count)}{tail}",
            [value for values in zip(*data, strict=True) for value in values],
        )
        return result.fetchall() if returning else []
    arrow = pa.table(
        {
            name: pa.array(column, kind)
            for (name, kind), column in zip(columns.items(), data, strict=True)
        }
    )
    view = f"new_{table}"
    cur.register(view, arrow)
    try:
        order = f" ORDER BY {order_by}" if order_by else ""
        result = cur.execute(f"INSERT INTO {table} ({names}) SELECT * FROM {view}{order}{tail}")
        return result.fetchall() if returning else []
    finally:
        cur.unregister(view)
