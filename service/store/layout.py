"""Keeping a per-user table in user order as it grows.

A per-user read (a tab's first page) finds a user's rows by the zone maps of ``user_id``
(each row group's min and max), which skip row groups only where the rows lie ordered by
user. Migrations write the tables in that order, but every row added later goes at the
end, in time order, where every user's read scans it, and a first page reads all of the
tail, since it holds every user's newest rows (what that costs: ``bench/README.md``).

``table_layout`` records, per table kept here, the rowid below which its rows lie in user
order. Once a table's tail reaches :data:`TAIL_ROWS`, :func:`plan` ... :func:`finish`
write the table again in user order without stopping ingest:

1. :func:`plan` (a read) splits the rows below the table's current end into steps of about
   :data:`STEP_ROWS` rows each by user (a user's rows are never split);
2. :func:`begin` creates an empty copy of the table (same columns, keys and defaults) and
   an unindexed table for the tail;
3. :func:`step` runs one short write transaction, so ingest's batches run between them:
   the first steps copy the unsorted tail into the tail table, :data:`STEP_ROWS` rows by
   rowid, each sorted by user (reading the tail once; a step that picked its users' rows
   out of the tail itself would read all of it); the others copy one step's users' rows,
   from the ordered part and the tail table, ordered by user;
4. :func:`finish`, one transaction: copies the rows added since the plan, checks the copy
   holds as many rows as the table, and puts the copy in the table's place.

Why a copy and not the tail deleted and written again in place: a row deleted from a
table with an index costs DuckDB far more at commit than appending one (a row group's
worth holds the writer for seconds); and rows written in place in several transactions
would land in the same row groups as ingest's rows of every user, whose zone maps then
cover everyone. The copy only works for a table that ingest never updates nor deletes
from (:data:`KEPT`: ``audit_events``); :func:`finish` refuses to swap when the counts
differ. Readers see the old table until the swap commits, then the new one: every answer
is the same. A process killed midway leaves only the unfinished copy, which
:func:`drop_leftovers` removes at the next start.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from service.store import Cursor

KEPT = {"audit_events": "user_id, ts, id"}
"""The tables kept in user order here, each with its order. Each must be append-only (no
UPDATE or DELETE anywhere) and have no index but its primary key."""

ROW_GROUP = 122_880
"""Rows in one of DuckDB's row groups, the unit its zone maps skip."""

TAIL_ROWS = ROW_GROUP // 2
"""A table is written again in user order once this many rows lie after its ordered part
(half a row group), or a 64th of the table if that is more, so that a rewrite copies at
most about 64 rows for each row added since the one before."""

TAIL_SHARE = 64
"""The tail a table of many rows may reach, as a share of its rows (see :data:`TAIL_ROWS`)."""

STEP_ROWS = 8_192
"""Rows copied in one write transaction (one user's rows are never split, so a step holds
more when one user has more). Most of a step's time goes to the copy's primary key, and
now and then its commit also checkpoints, which takes longer (``bench/README.md``)."""

SUFFIX = "_layout_next"
"""The copy's name is the table's with this suffix."""

TAIL_SUFFIX = "_layout_tail"
"""The tail table's name is the table's with this suffix."""


class Plan(msgspec.Struct, frozen=True):
    """A rewrite of ``table``: the rows below rowid ``upto``; those from ``sorted_below``
    up are the tail, staged ``step_rows`` at a time; then copy ``i`` holds the users from
    ``bounds[i]`` (inclusive; None: from the first) to ``bounds[i + 1]`` (exclusive;
    None: to the last)."""

    table: str
    upto: int
    sorted_below: int
    step_rows: int
    bounds: list[str | None]

    @property
    def stages(self) -> int:
        return -(-(self.upto - self.sorted_below) // self.step_rows)

    @property
    def steps(self) -> int:
        return self.stages + len(self.bounds) - 1


def _order(table: str) -> str:
    if table not in KEPT:
        raise ValueError(f"{table} is not kept in user order here")
    return KEPT[table]


def _sorted_below(cur: Cursor, table: str) -> int:
    row = cur.execute(
        "SELECT sorted_below FROM table_layout WHERE table_name = ?", [table]
    ).fetchone()
    return int(row[0]) if row else 0


def tail_rows(cur: Cursor, table: str) -> int:
    """Rows of ``table`` that lie after its ordered part (all of them if none is known)."""
    _order(table)
    sorted_below = _sorted_below(cur, table)
    counted = cur.execute(
        f"SELECT count(*) FROM {table} WHERE rowid >= ?", [sorted_below]
    ).fetchone()
    return int(counted[0]) if counted else 0


def due(cur: Cursor, tail: int | None = None) -> list[str]:
    """The kept tables whose unsorted tail holds ``tail`` rows or more (None: the larger
    of :data:`TAIL_ROWS` and the table's rows / :data:`TAIL_SHARE`)."""
    found = []
    for table in KEPT:
        threshold = tail if tail is not None else max(TAIL_ROWS, _count(cur, table) // TAIL_SHARE)
        if tail_rows(cur, table) >= threshold:
            found.append(table)
    return found


def plan(cur: Cursor, table: str, step_rows: int = STEP_ROWS) -> Plan:
    """Steps of about ``step_rows`` rows over the rows now in ``table``, by user."""
    _order(table)
    row = cur.execute(f"SELECT coalesce(max(rowid) + 1, 0) FROM {table}").fetchone()
    upto = int(row[0]) if row else 0
    bounds: list[str | None] = [None]
    rows = 0
    for user_id, count in cur.execute(
        f"SELECT user_id, count(*) FROM {table} WHERE rowid < ? GROUP BY user_id ORDER BY user_id",
        [upto],
    ).fetchall():
        if rows and rows + count > step_rows:
            bounds.append(str(user_id))
            rows = 0
        rows += int(count)
    bounds.append(None)
    sorted_below = min(_sorted_below(cur, table), upto)
    return Plan(table, upto, sorted_below, step_rows, bounds)


def begin(cur: Cursor, plan: Plan) -> None:
    """Create the empty copy of the plan's table (a leftover one goes first)."""
    table = plan.table
    row = cur.execute(
        "SELECT sql FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?", [table]
    ).fetchone()
    assert row is not None, table
    indexes = cur.execute(
        "SELECT count(*) FROM duckdb_indexes() WHERE table_name = ?", [table]
    ).fetchone()
    if indexes and indexes[0]:
        raise ValueError(f"{table} has an index its copy would not get")
    ddl, found = re.subn(rf"^CREATE TABLE {table}\(", f"CREATE TABLE {table}{SUFFIX}(", str(row[0]))
    assert found == 1, row[0]
    cur.execute(f"DROP TABLE IF EXISTS {table}{SUFFIX}")
    cur.execute(ddl)
    cur.execute(f"DROP TABLE IF EXISTS {table}{TAIL_SUFFIX}")
    cur.execute(f"CREATE TABLE {table}{TAIL_SUFFIX} AS SELECT * FROM {table} LIMIT 0")


def step(cur: Cursor, plan: Plan, index: int) -> int:
    """Run step ``index`` of the plan (below :attr:`Plan.steps`); returns the rows it
    wrote: a stage of the tail, then a copy of some users' rows into the copy."""
    table, order = plan.table, _order(plan.table)
    if index < plan.stages:
        start = plan.sorted_below + index * plan.step_rows
        row = cur.execute(
            f"INSERT INTO {table}{TAIL_SUFFIX} SELECT * FROM {table}"
            f" WHERE rowid >= ? AND rowid < ? ORDER BY {order}",
            [start, min(start + plan.step_rows, plan.upto)],
        ).fetchone()
        return int(row[0]) if row else 0
    index -= plan.stages
    low, high = plan.bounds[index], plan.bounds[index + 1]
    users = ""
    params: list[object] = []
    if low is not None:
        users += " AND user_id >= ?"
        params.append(low)
    if high is not None:
        users += " AND user_id < ?"
        params.append(high)
    row = cur.execute(
        f"INSERT INTO {table}{SUFFIX} SELECT * FROM (SELECT * FROM {table}"
        f" WHERE rowid < ?{users} UNION ALL SELECT * FROM {table}{TAIL_SUFFIX} WHERE true{users})"
        f" ORDER BY {order}",
        [plan.sorted_below, *params, *params],
    ).fetchone()
    return int(row[0]) if row else 0


class NotAppendOnlyError(Exception):
    """The table lost or changed rows while it was copied: the copy is not swapped in."""


def finish(cur: Cursor, plan: Plan) -> int:
    """Copy the rows added since the plan, and put the copy in the table's place; returns
    the rows now in the ordered part (those after it were added during the rewrite)."""
    table, copied = plan.table, f"{plan.table}{SUFFIX}"
    ordered = _count(cur, copied)
    cur.execute(
        f"INSERT INTO {copied} SELECT * FROM {table} WHERE rowid >= ? ORDER BY {_order(table)}",
        [plan.upto],
    )
    if _count(cur, copied) != _count(cur, table):
        raise NotAppendOnlyError(
            f"{table} holds {_count(cur, table)} rows, its copy {_count(cur, copied)}"
        )
    cur.execute(f"DROP TABLE {table}")
    cur.execute(f"ALTER TABLE {copied} RENAME TO {table}")
    cur.execute(f"DROP TABLE {table}{TAIL_SUFFIX}")
    cur.execute(
        "INSERT INTO table_layout VALUES (?, ?)"
        " ON CONFLICT (table_name) DO UPDATE SET sorted_below = excluded.sorted_below",
        [table, ordered],
    )
    return ordered


def drop_leftovers(cur: Cursor) -> list[str]:
    """Drop the copies and tail tables a rewrite that never finished left (a killed
    process); returns their tables."""
    left = [
        str(name)
        for (name,) in cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
            " AND (suffix(table_name, ?) OR suffix(table_name, ?)) ORDER BY table_name",
            [SUFFIX, TAIL_SUFFIX],
        ).fetchall()
    ]
    for name in left:
        cur.execute(f"DROP TABLE {name}")
    return sorted({name.removesuffix(SUFFIX).removesuffix(TAIL_SUFFIX) for name in left})


def _count(cur: Cursor, table: str) -> int:
    row = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0
