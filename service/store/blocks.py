"""The ``blocks`` table (5-hour blocks per user) and the read behind
``/api/me/stats/blocks``.

Ingest keeps the table current in the batch's own transaction (:func:`refresh`): for each
user whose winning entries changed, the blocks are made again from the first entry of the
block that holds (or precedes) the earliest change, up to the first later block that still
opens where it did. Only that user's winning entries of that stretch are read, bounded by
time; entries are stored about in time order, so the database skips every older row group.
For the live pattern (a response appended now) that is the current block's entries.

:func:`rebuild` makes every block again from all winning entries (the migration that adds
the table; ``reprocess`` empties it with the rest and re-reading fills it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from service.ingest.blocks import (
    BLOCK_LENGTH,
    Block,
    BlockEntry,
    build,
    burn_rate,
    end_of,
    opens_block,
)
from service.ingest.plan import Span
from service.models import (
    ActiveBlock,
    BlockRow,
    BlockStats,
    RecentSession,
    TokenDay,
    iso,
)
from service.store import bulk, keyed

if TYPE_CHECKING:
    from service.store import Cursor

__all__ = [
    "RECENT_SESSIONS",
    "TokenLimit",
    "block_stats",
    "forget",
    "rebuild",
    "refresh",
    "stored_blocks",
    "winning_entries",
]

RECENT_SESSIONS = timedelta(minutes=10)
"""A session counts as active while its last line is at most this old."""

_BLOCK_COLUMNS = (
    "start_at, first_at, last_at, entries, models, input_tokens, output_tokens,"
    " cache_read_tokens, cache_creation_tokens, cost_usd"
)
_ENTRY_COLUMNS = (
    "epoch_us(ts), model, input_tokens, output_tokens, cache_read_tokens,"
    " cache_creation_tokens, cost_usd"
)
"""A winning entry as :class:`BlockEntry` takes it (the time as an integer: DuckDB hands
back integers far faster than aware datetimes)."""


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _block(row: Sequence[Any]) -> Block:
    return Block(
        start=_utc(row[0]),
        first_at=_utc(row[1]),
        last_at=_utc(row[2]),
        entries=row[3],
        models=list(row[4]),
        input_tokens=row[5],
        output_tokens=row[6],
        cache_read_tokens=row[7],
        cache_creation_tokens=row[8],
        cost_usd=row[9],
    )


def _entry(row: Sequence[Any]) -> BlockEntry:
    return BlockEntry(*row)


def winning_entries(
    cur: Cursor, user_id: str, since: datetime | None = None, before: datetime | None = None
) -> list[BlockEntry]:
    """The user's winning entries with ``since <= ts < before`` (either bound optional),
    in time order."""
    where = ["user_id = ?", "winner"]
    params: list[object] = [user_id]
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    if before is not None:
        where.append("ts < ?")
        params.append(before)
    # Sorted here: an ORDER BY costs DuckDB several times what reading these rows does.
    rows = cur.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM usage_entries WHERE {' AND '.join(where)}", params
    ).fetchall()
    return sorted((_entry(r) for r in rows), key=lambda e: e.ts)


def stored_blocks(cur: Cursor, user_id: str, since: datetime | None = None) -> list[Block]:
    """The user's stored blocks that start at ``since`` or later, oldest first."""
    return [b for _, b in _stored(cur, user_id, since)]


def _earlier(moment: datetime) -> datetime | None:
    """5 hours before ``moment``; None (no bound) before the first hours of year 1."""
    return (
        moment - BLOCK_LENGTH if moment - datetime.min.replace(tzinfo=UTC) > BLOCK_LENGTH else None
    )


def _stored(cur: Cursor, user_id: str, since: datetime | None) -> list[tuple[int, Block]]:
    """One user's stored blocks (with their rowids) from ``since`` on, oldest first, for a
    read: ``user_id = ?`` lets DuckDB skip other users' row groups, which the batch's join
    (:func:`_stored_of`) cannot."""
    where = "user_id = ?"
    params: list[object] = [user_id]
    if since is not None:
        where += " AND start_at >= ?"
        params.append(since)
    rows = cur.execute(f"SELECT rowid, {_BLOCK_COLUMNS} FROM blocks WHERE {where}", params)
    return sorted(((int(r[0]), _block(r[1:])) for r in rows.fetchall()), key=lambda p: p[1].start)


def _floor(bounds: Iterable[datetime | None]) -> datetime | None:
    """The earliest of ``bounds``; None (no bound) if any is None or there are none."""
    found: datetime | None = None
    for bound in bounds:
        if bound is None:
            return None
        found = bound if found is None else min(found, bound)
    return found


def _stored_of(
    cur: Cursor, since: Mapping[str, datetime | None]
) -> dict[str, list[tuple[int, Block]]]:
    """Each user's stored blocks (with their rowids) that start at that user's ``since``
    or later (all when None), oldest first: one statement for every user of a batch."""
    floor = _floor(since.values())
    rows = cur.execute(
        f"""
        SELECT user_id, rowid, {_BLOCK_COLUMNS}
        FROM blocks
        JOIN (SELECT unnest($users::VARCHAR[]) AS user_id,
                     unnest($since::TIMESTAMPTZ[]) AS since) USING (user_id)
        WHERE (since IS NULL OR start_at >= since)
          AND ($floor::TIMESTAMPTZ IS NULL OR start_at >= $floor::TIMESTAMPTZ)
        """,
        {"users": list(since), "since": list(since.values()), "floor": floor},
    ).fetchall()
    found: dict[str, list[tuple[int, Block]]] = {}
    for row in rows:
        found.setdefault(str(row[0]), []).append((int(row[1]), _block(row[2:])))
    for pairs in found.values():
        pairs.sort(key=lambda p: p[1].start)
    return found


def _entries_of(
    cur: Cursor, ranges: Mapping[str, tuple[datetime, datetime | None]]
) -> dict[str, list[BlockEntry]]:
    """Each user's winning entries with ``since <= ts < before`` (``before`` None: no
    bound), in time order: one statement for every user of a batch. The earliest ``since``
    is also a bound of its own, so the database skips the row groups before it."""
    rows = cur.execute(
        f"""
        SELECT user_id, {_ENTRY_COLUMNS}
        FROM usage_entries
        JOIN (SELECT unnest($users::VARCHAR[]) AS user_id,
                     unnest($since::TIMESTAMPTZ[]) AS since,
                     unnest($before::TIMESTAMPTZ[]) AS before) USING (user_id)
        WHERE winner AND ts >= since AND (before IS NULL OR ts < before)
          AND ts >= $floor::TIMESTAMPTZ
        """,
        {
            "users": list(ranges),
            "since": [r[0] for r in ranges.values()],
            "before": [r[1] for r in ranges.values()],
            "floor": min(r[0] for r in ranges.values()),
        },
    ).fetchall()
    found: dict[str, list[BlockEntry]] = {user_id: [] for user_id in ranges}
    for row in rows:
        found[str(row[0])].append(_entry(row[1:]))
    for entries in found.values():
        # Sorted here: an ORDER BY costs DuckDB several times what reading these rows does.
        entries.sort(key=lambda e: e.ts)
    return found


def refresh(cur: Cursor, spans: Mapping[str, Span]) -> None:
    """Bring the blocks of the users in ``spans`` up to date after their winning entries
    changed between the two times of each span (entries that became or stopped being
    winners, at their timestamps). Call it in the transaction that changed them.

    Every user of the batch is served by the same two statements (their stored blocks
    around the change, then their entries from there to the next later block); only a
    change that moves where a later block opens reads that user's next stretch alone."""
    if not spans:
        return
    users = sorted(spans)
    # A block that starts more than 5 hours before the change cannot take it in.
    old_of = _stored_of(cur, {u: _earlier(spans[u].earliest) for u in users})
    plans: dict[str, tuple[datetime, list[tuple[int, Block]]]] = {}
    for user_id in users:
        earliest, latest = spans[user_id].earliest, spans[user_id].latest
        old = old_of.get(user_id, [])
        before = [pair for pair in old if pair[1].first_at <= earliest]
        # Blocks from the one holding (or preceding) the change are made again; an entry
        # after a block that started long before opens a new one anyway.
        since = before[-1][1].first_at if before else earliest
        later = [pair for pair in old if pair[1].first_at > latest]
        plans[user_id] = (since, later)
    first_reads = _entries_of(
        cur,
        {
            u: (since, later[0][1].first_at if later else None)
            for u, (since, later) in plans.items()
        },
    )
    gone: list[int] = []
    made: list[tuple[str, Block]] = []
    for user_id in users:
        since, later = plans[user_id]
        entries = first_reads[user_id]
        stops = [block.first_at for _, block in later] + [None]
        for index, until in enumerate(stops):
            if index:  # the previous stop's first entry joined the block before it: go on
                entries += winning_entries(cur, user_id, stops[index - 1], until)
            new = build(entries)
            if until is None or not new or opens_block(new[-1].start, new[-1].last_at, until):
                # From ``until`` on nothing changed and its block opens where it did (as it
                # does when nothing comes before it any more): the old blocks stand.
                break
        replaced = [
            (rowid, block)
            for rowid, block in old_of.get(user_id, [])
            if block.first_at >= since and (until is None or block.first_at < until)
        ]
        kept = {_key(block) for _, block in replaced}
        fresh = {_key(block) for block in new}
        gone += [rowid for rowid, block in replaced if _key(block) not in fresh]
        made += [(user_id, block) for block in new if _key(block) not in kept]
    for where, params in keyed("rowid", gone):
        cur.execute(f"DELETE FROM blocks WHERE {where}", params)
    _insert(cur, made)


def _key(block: Block) -> tuple[Any, ...]:
    """Every stored value of a block: an unchanged block is neither deleted nor written."""
    return (
        block.start,
        block.first_at,
        block.last_at,
        block.entries,
        tuple(block.models),
        block.input_tokens,
        block.output_tokens,
        block.cache_read_tokens,
        block.cache_creation_tokens,
        block.cost_usd,
    )


_STAMP = pa.timestamp("us", tz="UTC")
_COLUMNS = {
    "user_id": pa.string(),
    "start_at": _STAMP,
    "first_at": _STAMP,
    "last_at": _STAMP,
    "entries": pa.int64(),
    "models": pa.list_(pa.string()),
    "input_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "cache_read_tokens": pa.int64(),
    "cache_creation_tokens": pa.int64(),
    "cost_usd": pa.float64(),
}


def _insert(cur: Cursor, made: Sequence[tuple[str, Block]]) -> None:
    blocks = [b for _, b in made]
    data: list[Sequence[object]] = [
        [u for u, _ in made],
        [b.start for b in blocks],
        [b.first_at for b in blocks],
        [b.last_at for b in blocks],
        [b.entries for b in blocks],
        [b.models for b in blocks],
        [b.input_tokens for b in blocks],
        [b.output_tokens for b in blocks],
        [b.cache_read_tokens for b in blocks],
        [b.cache_creation_tokens for b in blocks],
        [b.cost_usd for b in blocks],
    ]
    bulk.insert(cur, "blocks", _COLUMNS, data, few=2 * bulk.FEW)


REBUILD_USERS = 50
"""Users whose entries :func:`rebuild` reads at a time (one scan per group)."""


def rebuild(cur: Cursor, user_ids: Iterable[str] | None = None) -> int:
    """Make the blocks of ``user_ids`` (default: every user with entries) again from all
    their winning entries; returns how many blocks there are now."""
    if user_ids is None:
        cur.execute("DELETE FROM blocks")
        rows = cur.execute("SELECT DISTINCT user_id FROM usage_entries WHERE winner").fetchall()
        wanted = sorted(str(r[0]) for r in rows)
    else:
        wanted = sorted(set(user_ids))
        for where, params in keyed("user_id", wanted):
            cur.execute(f"DELETE FROM blocks WHERE {where}", params)
    count = 0
    for first in range(0, len(wanted), REBUILD_USERS):
        group = wanted[first : first + REBUILD_USERS]
        table = cur.sql(
            f"SELECT user_id, {_ENTRY_COLUMNS} FROM usage_entries"
            " WHERE winner AND user_id IN (SELECT unnest($group::VARCHAR[])) ORDER BY user_id, ts",
            params={"group": group},
        ).to_arrow_table()
        columns = [column.to_pylist() for column in table.columns]
        made: list[tuple[str, Block]] = []
        user: str | None = None
        entries: list[BlockEntry] = []
        for user_id, *row in zip(*columns, strict=True):
            if user_id != user:
                if user is not None:
                    made += [(user, b) for b in build(entries)]
                user, entries = user_id, []
            entries.append(BlockEntry(*row))
        if user is not None:
            made += [(user, b) for b in build(entries)]
        count += len(made)
        _insert(cur, made)
    return count


def forget(cur: Cursor) -> None:
    """Drop every block (``reprocess``: re-reading the files makes them again)."""
    cur.execute("DELETE FROM blocks")


# -- the read behind /api/me/stats/blocks ---------------------------------------------------

TokenLimit = int | str | None
"""A number of tokens, ``"max"`` (the largest total of the user's earlier, finished
blocks), or None."""


def _row(block: Block, now: datetime) -> BlockRow:
    return BlockRow(
        start=iso(block.start),
        end=iso(block.end),
        last_activity=iso(block.last_at),
        is_active=block.is_active(now),
        entries=block.entries,
        models=block.models,
        input=block.input_tokens,
        output=block.output_tokens,
        cache_read=block.cache_read_tokens,
        cache_creation=block.cache_creation_tokens,
        total=block.total,
        cost_usd=block.cost_usd,
    )


def _percent(part: float | None, limit: int | None) -> float | None:
    if part is None or not limit:
        return None
    return round(part / limit * 100, 2)


def _active(block: Block, now: datetime, limit: int | None) -> ActiveBlock:
    """The active block's burn rate and where it ends up at that rate, as of ``now``."""
    remaining = max(0.0, (block.end - now).total_seconds())
    rate = burn_rate(block)
    projected_total: int | None = None
    projected_cost: float | None = None
    if rate is not None:
        projected_total = round(block.total + rate.tokens_per_minute * remaining / 60)
        if rate.cost_per_hour is not None and block.cost_usd is not None:
            projected_cost = round(block.cost_usd + rate.cost_per_hour * remaining / 3600, 9)
    return ActiveBlock(
        start=iso(block.start),
        end=iso(block.end),
        remaining_seconds=int(remaining),
        tokens_per_minute=None if rate is None else round(rate.tokens_per_minute, 3),
        cost_per_hour=None
        if rate is None or rate.cost_per_hour is None
        else round(rate.cost_per_hour, 9),
        projected_total=projected_total,
        projected_cost_usd=projected_cost,
        percent_of_limit=_percent(block.total, limit),
        projected_percent_of_limit=_percent(projected_total, limit),
    )


def _local_day(cur: Cursor, moment: datetime, tz: str) -> date:
    row = cur.execute("SELECT ($at AT TIME ZONE $tz)::DATE", {"at": moment, "tz": tz}).fetchone()
    assert row is not None
    day: date = row[0]
    return day


def block_stats(
    cur: Cursor,
    user_id: str,
    *,
    days: int | None,
    tz: str,
    token_limit: TokenLimit,
    now: datetime,
    start: date | None = None,
    end: date | None = None,
) -> BlockStats:
    """The user's blocks that started in the window or are active at ``now``, newest
    first; the active one's burn rate and projection; today's tokens in ``tz``; the
    sessions active in the last 10 minutes. The window is the local days in ``tz`` from
    ``start`` to ``end`` (None: today), both included, when ``start`` is given; else the
    last ``days`` days, today included; else (``days`` None) every block. A window that
    runs to today also holds blocks stamped later (a clock set ahead)."""
    row = cur.execute("SELECT ($now AT TIME ZONE $tz)::DATE", {"now": now, "tz": tz}).fetchone()
    assert row is not None
    today: date = row[0]
    if start is not None:
        first: date | None = start
        last = end if end is not None else today
    else:
        first = None if days is None else today - timedelta(days=days - 1)
        last = today
    day = timedelta(days=1)
    bounds = cur.execute(
        """
        SELECT timezone($tz, $first::TIMESTAMP), timezone($tz, $after::TIMESTAMP),
               timezone($tz, $today::TIMESTAMP), timezone($tz, $tomorrow::TIMESTAMP)
        """,
        {
            "tz": tz,
            "first": first or today,
            "after": last + day if last < date.max else None,
            "today": today,
            "tomorrow": today + day if today < date.max else None,
        },
    ).fetchone()
    assert bounds is not None
    window_start, window_end, day_start, day_end = bounds
    since = None if first is None else _utc(window_start)
    # A window that ends today keeps what a clock set ahead wrote too (nothing hidden).
    until = None if window_end is None or start is None or end is None else _utc(window_end)
    stored = stored_blocks(cur, user_id, None if since is None else min(since, now - BLOCK_LENGTH))
    shown = [
        b
        for b in reversed(stored)
        if b.is_active(now)
        or ((since is None or b.start >= since) and (until is None or b.start < until))
    ]
    if first is None:  # every block: the window runs from the day of the first one
        first = min((_local_day(cur, b.start, tz) for b in stored[:1]), default=today)

    limit: int | None = None
    if token_limit == "max":
        row = cur.execute(
            "SELECT max(input_tokens + output_tokens + cache_read_tokens"
            " + cache_creation_tokens) FROM blocks WHERE user_id = ? AND start_at <= ?",
            [user_id, now - BLOCK_LENGTH],
        ).fetchone()
        limit = int(row[0]) if row and row[0] is not None else None
    elif isinstance(token_limit, int):
        limit = token_limit
    active = next((b for b in shown if b.is_active(now)), None)

    sums = cur.execute(
        """
        SELECT coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),
               coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_creation_tokens), 0),
               round(fsum(cost_usd), 9), count(DISTINCT session_file)
        FROM usage_entries WHERE user_id = ? AND winner AND ts >= ? AND ts < ?
        """,
        [user_id, day_start, day_end],
    ).fetchone()
    assert sums is not None
    inp, out, read, write, cost, sessions = sums
    recent = cur.execute(
        "SELECT session_file, session_id, started_at, ended_at, primary_model,"
        " input_tokens + output_tokens + cache_read_tokens + cache_creation_tokens, cost_usd"
        " FROM sessions WHERE user_id = ? AND ended_at >= ? ORDER BY ended_at DESC, session_file",
        [user_id, now - RECENT_SESSIONS],
    ).fetchall()
    return BlockStats(
        days=(last - first).days + 1,
        tz=tz,
        as_of=iso(now),
        token_limit=limit,
        blocks=[_row(b, now) for b in shown],
        active=None if active is None else _active(active, now, limit),
        last_block_end=iso(stored[-1].end) if stored else _last_end(cur, user_id),
        today=TokenDay(
            day=today.isoformat(),
            input=inp,
            output=out,
            cache_read=read,
            cache_creation=write,
            total=inp + out + read + write,
            cost_usd=cost,
            sessions=sessions,
        ),
        active_sessions=[
            RecentSession(
                session_file=r[0],
                session_id=r[1],
                started_at=iso(r[2]),
                ended_at=iso(r[3]),
                primary_model=r[4],
                total=r[5],
                cost_usd=r[6],
            )
            for r in recent
        ],
    )


def _last_end(cur: Cursor, user_id: str) -> str | None:
    row = cur.execute("SELECT max(start_at) FROM blocks WHERE user_id = ?", [user_id]).fetchone()
    return iso(end_of(_utc(row[0]))) if row and row[0] is not None else None
