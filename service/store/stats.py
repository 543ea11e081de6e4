"""The reads behind ``/api/me/stats/sessions`` and ``/api/me/stats/tokens``.

Every query takes the caller's user id and filters by it first: nothing here can return
another user's rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from service.ingest.accounting import SYNTHETIC_MODEL
from service.models import (
    ModelTokens,
    SessionRow,
    SessionsPage,
    TokenCounts,
    TokenDay,
    TokenStats,
    TopSession,
    iso,
)
from service.store import one_of, users

if TYPE_CHECKING:
    from service.store import Cursor

Q = TypeVar("Q")
T = TypeVar("T")


def time_zones(cur: Cursor) -> frozenset[str]:
    """The IANA names the database can convert to (the only ones ``tz`` may take)."""
    rows = cur.execute("SELECT name FROM pg_timezone_names()").fetchall()
    return frozenset(str(row[0]) for row in rows)


def download_url(session_file: str) -> str:
    return f"/api/me/sessions/{session_file}"


_SESSION_DETAILS = (
    "session_file, session_id, ended_at, active_seconds, wall_seconds, user_messages,"
    " tool_calls, tool_errors, input_tokens, output_tokens, cache_read_tokens,"
    " cache_creation_tokens, cost_usd, primary_model"
)


def sessions_page(cur: Cursor, user_id: str, *, limit: int, offset: int) -> SessionsPage:
    """One page of the user's sessions, newest first, in two steps: the page's files from
    the few columns that order them, then the details of just those sessions (bounded by
    their start times, which lets the database skip all other row groups)."""
    page = cur.execute(
        """
        WITH f AS (SELECT name, first_seen_at, status, error FROM files
                   WHERE user_id = $user AND NOT is_subagent),
             s AS (SELECT session_file, started_at FROM sessions WHERE user_id = $user)
        SELECT f.name, f.status, f.error, s.session_file IS NOT NULL, s.started_at,
               count(*) OVER () AS total
        FROM f LEFT JOIN s ON s.session_file = f.name
        ORDER BY coalesce(s.started_at, f.first_seen_at) DESC, f.name DESC
        LIMIT $limit OFFSET $offset
        """,
        {"user": user_id, "limit": limit, "offset": offset},
    ).fetchall()
    if page:
        total = int(page[0][5])
    else:  # past the last page (or none at all): the count needs a query of its own
        counted = cur.execute(
            "SELECT count(*) FROM files WHERE user_id = ? AND NOT is_subagent",
            [user_id],
        ).fetchone()
        total = int(counted[0]) if counted else 0
    started = [r[4] for r in page if r[3] and r[4] is not None]
    details: dict[str, tuple[Any, ...]] = {}
    if started:
        where, names = one_of("session_file", [r[0] for r in page if r[4] is not None])
        details.update(
            (r[0], r)
            for r in cur.execute(
                f"SELECT {_SESSION_DETAILS} FROM sessions WHERE user_id = ?"
                f" AND started_at BETWEEN ? AND ? AND {where}",
                [user_id, min(started), max(started), *names],
            ).fetchall()
        )
    undated = [r[0] for r in page if r[3] and r[4] is None]
    if undated:  # sessions without a start time: rare, and not bounded by one
        where, names = one_of("session_file", undated)
        details.update(
            (r[0], r)
            for r in cur.execute(
                f"SELECT {_SESSION_DETAILS} FROM sessions WHERE user_id = ? AND {where}",
                [user_id, *names],
            ).fetchall()
        )
    rows = []
    for name, status, error, _, started_at, _ in page:
        d = details.get(name)
        tokens = (d[8], d[9], d[10], d[11]) if d else (0, 0, 0, 0)
        rows.append(
            SessionRow(
                session_file=name,
                session_id=d[1] if d else None,
                started_at=iso(started_at),
                ended_at=iso(d[2]) if d else None,
                active_seconds=d[3] if d else 0,
                wall_seconds=d[4] if d else 0,
                user_messages=d[5] if d else 0,
                tool_calls=d[6] if d else 0,
                tool_errors=d[7] if d else 0,
                input_tokens=tokens[0],
                output_tokens=tokens[1],
                cache_read_tokens=tokens[2],
                cache_creation_tokens=tokens[3],
                tokens_total=sum(tokens),
                cost_usd=d[12] if d else None,
                primary_model=d[13] if d else None,
                processed=status == "processed",
                pipeline_status=status,
                error=error,
                download_url=download_url(name),
            )
        )
    return SessionsPage(total=total, offset=offset, limit=limit, rows=rows)


_SUMS = (
    "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),"
    " coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_creation_tokens), 0),"
    " round(fsum(cost_usd), 9), count(DISTINCT session_file)"
)


def _sums(row: tuple[int, int, int, int, float | None, int]) -> dict[str, Any]:
    """The fields of a TokenCounts from a row of ``_SUMS``."""
    inp, out, read, create, cost, sessions = row
    return {
        "input": inp,
        "output": out,
        "cache_read": read,
        "cache_creation": create,
        "total": inp + out + read + create,
        "cost_usd": cost,
        "sessions": sessions,
    }


def token_stats(cur: Cursor, user_id: str, *, days: int, tz: str) -> TokenStats:
    """Daily series of the last ``days`` days in ``tz`` (today included, empty days zero),
    and by-model, top sessions and totals over the user's whole history.

    The whole history is read once, in one scan with three groupings (by session file, by
    model, and all), and the days only from their window: entries are stored about in time
    order, so a bound on the timestamp lets the database skip every older row group."""
    window = cur.execute(
        "SELECT (now() AT TIME ZONE $tz)::DATE,"
        " timezone($tz, ((now() AT TIME ZONE $tz)::DATE - ($days - 1))::TIMESTAMP)",
        {"tz": tz, "days": days},
    ).fetchone()
    assert window is not None
    today, since = window
    by_day: dict[str, tuple[int, int, int, int, float | None, int]] = {
        str(label): tuple(sums)
        for label, *sums in cur.execute(
            f"""
            SELECT (ts AT TIME ZONE $tz)::DATE::VARCHAR AS day, {_SUMS}
            FROM usage_entries WHERE user_id = $user AND winner AND ts >= $since
            GROUP BY day
            """,
            {"tz": tz, "user": user_id, "since": since},
        ).fetchall()
    }
    first = today - timedelta(days=days - 1)
    daily = []
    for n in range(days):
        day = (first + timedelta(days=n)).isoformat()
        daily.append(TokenDay(day=day, **_sums(by_day.get(day, (0, 0, 0, 0, None, 0)))))

    history = cur.execute(
        f"""
        WITH g AS MATERIALIZED (
            SELECT GROUPING(session_file) = 0 AS by_file, GROUPING(model) = 0 AS by_model,
                   session_file, model, any_value(session_id) AS session_id, {_SUMS},
                   bool_or(cost_usd IS NULL) AS unpriced,
                   sum(input_tokens + output_tokens + cache_read_tokens
                       + cache_creation_tokens) AS total
            FROM usage_entries WHERE user_id = $user AND winner
            GROUP BY GROUPING SETS ((session_file), (model), ())
        )
        SELECT * FROM g WHERE NOT by_file
        UNION ALL
        (SELECT * FROM g WHERE by_file ORDER BY total DESC, session_file LIMIT 10)
        """,
        {"user": user_id},
    ).fetchall()
    by_model = []
    unpriced = []
    top = []
    totals = TokenCounts()
    for by_file, by_model_, session_file, model, session_id, *sums, no_price, total in history:
        if by_file:
            top.append((session_file, session_id, int(total), sums[4]))
        elif not by_model_:
            totals = TokenCounts(**_sums(tuple(sums)))
        elif model is not None and model != SYNTHETIC_MODEL:
            by_model.append(ModelTokens(model=model, **_sums(tuple(sums))))
            if no_price:
                unpriced.append(model)
    by_model.sort(key=lambda m: (-m.total, m.model))
    top.sort(key=lambda t: (-t[2], t[0]))
    where, names = one_of("session_file", [t[0] for t in top])
    described = {
        str(r[0]): r[1:]
        for r in cur.execute(
            "SELECT session_file, started_at, primary_model FROM sessions"
            f" WHERE user_id = ? AND {where}",
            [user_id, *names],
        ).fetchall()
    }
    return TokenStats(
        days=days,
        tz=tz,
        daily=daily,
        by_model=by_model,
        top_sessions=[
            TopSession(
                session_file=session_file,
                session_id=session_id,
                started_at=iso(described.get(session_file, (None, None))[0]),
                primary_model=described.get(session_file, (None, None))[1],
                total=total,
                cost_usd=cost,
            )
            for session_file, session_id, total, cost in top
        ],
        totals=totals,
        unpriced_models=sorted(unpriced),
    )


def versioned(
    cur: Cursor, user_id: str, read: Callable[[Cursor, str, Q], T], query: Q
) -> tuple[int, T]:
    """The user's version and ``read(cur, user_id, query)`` from one snapshot of the
    database, so an answer is never labelled with a version it does not show."""
    cur.begin()
    try:
        return users.get_version(cur, user_id), read(cur, user_id, query)
    finally:
        cur.rollback()  # nothing was written: ending the snapshot is all there is to do
