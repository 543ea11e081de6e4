"""The reads behind ``/api/me/stats/sessions`` and ``/api/me/stats/tokens``.

Every query takes the caller's user id and filters by it first: nothing here can return
another user's rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
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
from service.store import users

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


def sessions_page(cur: Cursor, user_id: str, *, limit: int, offset: int) -> SessionsPage:
    rows = cur.execute(
        """
        SELECT f.name, s.session_id, s.started_at, s.ended_at,
               coalesce(s.active_seconds, 0), coalesce(s.wall_seconds, 0),
               coalesce(s.user_messages, 0), coalesce(s.tool_calls, 0),
               coalesce(s.tool_errors, 0), coalesce(s.input_tokens, 0),
               coalesce(s.output_tokens, 0), coalesce(s.cache_read_tokens, 0),
               coalesce(s.cache_creation_tokens, 0), s.cost_usd, s.primary_model,
               f.status, f.error, count(*) OVER () AS total
        FROM files f
        LEFT JOIN sessions s ON s.user_id = f.user_id AND s.session_file = f.name
        WHERE f.user_id = ? AND NOT f.is_subagent
        ORDER BY coalesce(s.started_at, f.first_seen_at) DESC, f.name DESC
        LIMIT ? OFFSET ?
        """,
        [user_id, limit, offset],
    ).fetchall()
    if rows:
        total = int(rows[0][17])
    else:  # past the last page (or none at all): the count needs a query of its own
        counted = cur.execute(
            "SELECT count(*) FROM files WHERE user_id = ? AND NOT is_subagent",
            [user_id],
        ).fetchone()
        total = int(counted[0]) if counted else 0
    return SessionsPage(
        total=total,
        offset=offset,
        limit=limit,
        rows=[
            SessionRow(
                session_file=r[0],
                session_id=r[1],
                started_at=iso(r[2]),
                ended_at=iso(r[3]),
                active_seconds=r[4],
                wall_seconds=r[5],
                user_messages=r[6],
                tool_calls=r[7],
                tool_errors=r[8],
                input_tokens=r[9],
                output_tokens=r[10],
                cache_read_tokens=r[11],
                cache_creation_tokens=r[12],
                tokens_total=r[9] + r[10] + r[11] + r[12],
                cost_usd=r[13],
                primary_model=r[14],
                processed=r[15] == "processed",
                pipeline_status=r[15],
                error=r[16],
                download_url=download_url(r[0]),
            )
            for r in rows
        ],
    )


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

    Three statements: every one costs the better part of a millisecond, and this answer is
    computed for every live update."""
    rows = cur.execute(
        f"""
        WITH window_start AS (
            SELECT (now() AT TIME ZONE $tz)::DATE AS today,
                   timezone($tz, ((now() AT TIME ZONE $tz)::DATE - ($days - 1))::TIMESTAMP)
                       AS since
        )
        SELECT 'day' AS kind, (ts AT TIME ZONE $tz)::DATE::VARCHAR AS label, {_SUMS}
        FROM usage_entries, window_start
        WHERE user_id = $user AND winner AND ts >= since
        GROUP BY label
        UNION ALL
        SELECT 'model', model, {_SUMS} FROM usage_entries
        WHERE user_id = $user AND winner AND model IS NOT NULL AND model <> $no_model
        GROUP BY model
        UNION ALL
        SELECT 'total', NULL, {_SUMS} FROM usage_entries WHERE user_id = $user AND winner
        UNION ALL
        SELECT 'unpriced', model, 0, 0, 0, 0, NULL, 0 FROM usage_entries
        WHERE user_id = $user AND winner AND cost_usd IS NULL AND model IS NOT NULL
              AND model <> $no_model
        GROUP BY model
        UNION ALL
        SELECT 'today', today::VARCHAR, 0, 0, 0, 0, NULL, 0 FROM window_start
        """,
        {"tz": tz, "user": user_id, "days": days, "no_model": SYNTHETIC_MODEL},
    ).fetchall()
    by_day: dict[str, tuple[int, int, int, int, float | None, int]] = {}
    by_model = []
    unpriced = []
    totals = TokenCounts()
    today = date.today()
    for kind, label, *sums in rows:
        if kind == "day":
            by_day[label] = tuple(sums)
        elif kind == "model":
            by_model.append(ModelTokens(model=label, **_sums(tuple(sums))))
        elif kind == "total":
            totals = TokenCounts(**_sums(tuple(sums)))
        elif kind == "unpriced":
            unpriced.append(label)
        else:
            today = date.fromisoformat(label)
    first = today - timedelta(days=days - 1)
    daily = []
    for n in range(days):
        day = (first + timedelta(days=n)).isoformat()
        daily.append(TokenDay(day=day, **_sums(by_day.get(day, (0, 0, 0, 0, None, 0)))))
    by_model.sort(key=lambda m: (-m.total, m.model))
    top = cur.execute(
        """
        SELECT u.session_file, any_value(u.session_id), any_value(s.started_at),
               any_value(s.primary_model),
               sum(u.input_tokens + u.output_tokens + u.cache_read_tokens
                   + u.cache_creation_tokens) AS total,
               round(fsum(u.cost_usd), 9)
        FROM usage_entries u
        LEFT JOIN sessions s ON s.user_id = u.user_id AND s.session_file = u.session_file
        WHERE u.user_id = ? AND u.winner
        GROUP BY u.session_file
        ORDER BY total DESC, u.session_file
        LIMIT 10
        """,
        [user_id],
    ).fetchall()
    return TokenStats(
        days=days,
        tz=tz,
        daily=daily,
        by_model=by_model,
        top_sessions=[
            TopSession(
                session_file=r[0],
                session_id=r[1],
                started_at=iso(r[2]),
                primary_model=r[3],
                total=int(r[4]),
                cost_usd=r[5],
            )
            for r in top
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
