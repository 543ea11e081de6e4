"""The reads behind ``/api/me/stats/sessions`` and ``/api/me/stats/tokens``.

Every query takes the caller's user id and filters by it first: nothing here can return
another user's rows.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from service.ingest.accounting import SYNTHETIC_MODEL
from service.ingest.names import session_of_file
from service.models import (
    ModelTokens,
    ProjectTokens,
    SessionRow,
    SessionsPage,
    TokenCounts,
    TokenDay,
    TokenStats,
    TokenWindow,
    TopSession,
    iso,
)
from service.store import keyed, one_of, users

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


class _Details(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A session's row as the Sessions tab shows it, in ``_SESSION_DETAILS``' order."""

    session_file: str = ""
    session_id: str | None = None
    ended_at: datetime | None = None
    active_seconds: int = 0
    wall_seconds: int = 0
    user_messages: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float | None = None
    primary_model: str | None = None
    project: str | None = None
    project_key: str = ""


_SESSION_DETAILS = ", ".join(_Details.__struct_fields__)
_NOT_READ = _Details()
"""What a file not read yet shows."""


def sessions_page(
    cur: Cursor,
    user_id: str,
    *,
    limit: int,
    offset: int,
    window: Window | None = None,
    tz: str = "UTC",
    project: str | None = None,
) -> SessionsPage:
    """One page of the user's sessions, newest first, in two steps: the page's files from
    the few columns that order them, then the details of just those sessions (bounded by
    their start times, which lets the database skip all other row groups).

    ``window`` keeps the sessions that started on its days in ``tz`` (a file not read yet:
    that arrived then); ``project`` (a key) those of one project (files not read yet have
    none)."""
    conditions = []
    params: dict[str, object] = {"user": user_id, "limit": limit, "offset": offset}
    if window is not None and not window.all:  # all: every session
        _, _, since, until = _bounds(cur, user_id, window, tz)
        conditions.append("coalesce(s.started_at, f.first_seen_at) >= $since")
        conditions.append("coalesce(s.started_at, f.first_seen_at) < $until")
        params.update(since=since, until=until)
    if project is not None:
        conditions.append("s.project_key = $project")
        params["project"] = project
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    listed = f"""
        WITH f AS (SELECT name, first_seen_at, status, error FROM files
                   WHERE user_id = $user AND NOT is_subagent),
             s AS (SELECT session_file, started_at, project_key FROM sessions
                   WHERE user_id = $user)
        SELECT f.name, f.status, f.error, s.session_file IS NOT NULL, s.started_at,
               f.first_seen_at
        FROM f LEFT JOIN s ON s.session_file = f.name
        {where}
    """
    page = cur.execute(
        f"""
        SELECT *, count(*) OVER () AS total FROM ({listed})
        ORDER BY coalesce(started_at, first_seen_at) DESC, name DESC
        LIMIT $limit OFFSET $offset
        """,
        params,
    ).fetchall()
    if page:
        total = int(page[0][6])
    else:  # past the last page (or none at all): the count needs a query of its own
        del params["limit"], params["offset"]
        counted = cur.execute(f"SELECT count(*) FROM ({listed})", params).fetchone()
        total = int(counted[0]) if counted else 0
    started = [r[4] for r in page if r[3] and r[4] is not None]
    details: dict[str, _Details] = {}
    if started:
        # The page is a stretch of the listing in start order, so the user's sessions that
        # started within its first and last start are the page's own (and the odd one of
        # another project, or tied at an end): read them all and keep the page's. A list
        # of the page's names as a condition costs the database several times more.
        wanted = {r[0] for r in page if r[4] is not None}
        same_project = "" if project is None else " AND project_key = ?"
        details.update(
            (r[0], _Details(*r))
            for r in cur.execute(
                f"SELECT {_SESSION_DETAILS} FROM sessions WHERE user_id = ?"
                f" AND started_at BETWEEN ? AND ?{same_project}",
                [user_id, min(started), max(started), *([] if project is None else [project])],
            ).fetchall()
            if r[0] in wanted
        )
    undated = [r[0] for r in page if r[3] and r[4] is None]
    if undated:  # sessions without a start time: rare, and not bounded by one
        where, names = one_of("session_file", undated)
        details.update(
            (r[0], _Details(*r))
            for r in cur.execute(
                f"SELECT {_SESSION_DETAILS} FROM sessions WHERE user_id = ? AND {where}",
                [user_id, *names],
            ).fetchall()
        )
    rows = []
    for name, status, error, _, started_at, _, _ in page:
        d = details.get(name, _NOT_READ)
        tokens = (d.input_tokens, d.output_tokens, d.cache_read_tokens, d.cache_creation_tokens)
        rows.append(
            SessionRow(
                session_file=name,
                session_id=d.session_id,
                started_at=iso(started_at),
                ended_at=iso(d.ended_at),
                active_seconds=d.active_seconds,
                wall_seconds=d.wall_seconds,
                user_messages=d.user_messages,
                tool_calls=d.tool_calls,
                tool_errors=d.tool_errors,
                input_tokens=d.input_tokens,
                output_tokens=d.output_tokens,
                cache_read_tokens=d.cache_read_tokens,
                cache_creation_tokens=d.cache_creation_tokens,
                tokens_total=sum(tokens),
                cost_usd=d.cost_usd,
                primary_model=d.primary_model,
                processed=status == "processed",
                pipeline_status=status,
                error=error,
                download_url=download_url(name),
                project=d.project,
                project_key=d.project_key,
            )
        )
    return SessionsPage(total=total, offset=offset, limit=limit, rows=rows)


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """Which local days (in the answer's time zone) an answer covers: the last ``days``
    (today included), every day since the user's first activity (``all``), or the dates
    ``start`` to ``end`` (both included; ``end`` None: today). Checked by the API."""

    days: int | None = 30
    all: bool = False
    start: str | None = None
    end: str | None = None


MAX_DAYS = 3660
"""The longest window, in days."""


def _resolve(cur: Cursor, user_id: str, window: Window, tz: str) -> tuple[date, date]:
    """The window's first and last local day."""
    # (every result is fetched to its end: token_stats reads on by Arrow, which DuckDB
    # refuses while a result is unfinished)
    today: date = cur.execute("SELECT (now() AT TIME ZONE $tz)::DATE", {"tz": tz}).fetchall()[0][0]
    if window.start is not None:
        first = date.fromisoformat(window.start)
        last = date.fromisoformat(window.end) if window.end is not None else today
        return first, last
    if window.all:  # the longest window; token_stats moves its start to the first activity
        return today - timedelta(days=MAX_DAYS - 1), today
    return today - timedelta(days=(window.days or 1) - 1), today


def _bounds(
    cur: Cursor, user_id: str, window: Window, tz: str
) -> tuple[date, date, datetime, datetime]:
    """The window's first and last local day, and the instants it starts and ends at."""
    first, last = _resolve(cur, user_id, window, tz)
    bounds = cur.execute(
        "SELECT timezone($tz, $first::TIMESTAMP), timezone($tz, $after::TIMESTAMP)",
        {"tz": tz, "first": first, "after": last + timedelta(days=1)},
    ).fetchall()[0]
    return first, last, bounds[0], bounds[1]


_GROUP_SUMS = (
    "sum(entries)::BIGINT, sum(input_tokens)::BIGINT, sum(output_tokens)::BIGINT,"
    " sum(cache_read_tokens)::BIGINT, sum(cache_creation_tokens)::BIGINT,"
    " floor(sum(cost))::BIGINT, ((sum(cost) - floor(sum(cost))) * 1000000000000)::BIGINT,"
    " sum(unpriced)::BIGINT"
)
"""A group's sums: entries, the four token counts, the exact cost (a DECIMAL(38, 12)) as
whole dollars and picodollars (two BIGINTs: handing DECIMAL values to Python as
``Decimal`` objects costs more than the rest of the answer), and the unpriced entries."""

PICO = 10**12
"""Picodollars in a dollar: the buckets' costs have 12 places."""


def _columns(cur: Cursor, sql: str, params: dict[str, object]) -> list[list[Any]]:
    """A grouped read's columns as Python lists (by Arrow: several times cheaper than a
    tuple per row), with each group's cost in picodollars (an exact int) in one column.
    Every result before it must have been fetched to its end (DuckDB refuses otherwise)."""
    table = cur.sql(sql, params=params).to_arrow_table()
    columns = [column.to_pylist() for column in table.columns]
    unpriced = columns.pop()
    picos = columns.pop()
    dollars = columns.pop()
    columns.append([d * PICO + p for d, p in zip(dollars, picos, strict=True)])
    columns.append(unpriced)
    return columns


class _Rows:
    """Groups of bucket sums as columns (each group one session's): sums over any of
    them, by index."""

    __slots__ = ("files", "sums")

    def __init__(self, files: list[str], sums: list[list[int]]) -> None:
        self.files = files
        self.sums = sums  # entries, input, output, read, creation, cost (picodollars), unpriced

    def counts(self, rows: Sequence[int]) -> dict[str, Any]:
        """The fields of a TokenCounts of ``rows`` (sessions: the distinct files)."""
        sums = [sum(map(column.__getitem__, rows)) for column in self.sums]
        return _counts(sums, len(set(map(self.files.__getitem__, rows))))


def _counts(sums: Sequence[int], sessions: int) -> dict[str, Any]:
    """The fields of a TokenCounts from seven sums (entries, four token counts, cost in
    picodollars, unpriced entries): the cost is 0 without entries and None when none of
    them has a price, else the exact sum rounded to 9 places (by way of the double
    nearest it)."""
    entries, inp, out, read, create, cost, unpriced = sums
    return {
        "input": inp,
        "output": out,
        "cache_read": read,
        "cache_creation": create,
        "total": inp + out + read + create,
        "cost_usd": None if entries and entries == unpriced else round(cost / PICO, 9),
        "sessions": sessions,
    }


_NO_SUMS = _counts((0, 0, 0, 0, 0, 0, 0), 0)


def _group(keys: list[Any], rows: Iterable[int]) -> dict[Any, list[int]]:
    """``rows`` by their value in ``keys``."""
    groups: dict[Any, list[int]] = {}
    for row in rows:
        key = keys[row]
        found = groups.get(key)
        if found is None:
            groups[key] = [row]
        else:
            found.append(row)
    return groups


def _by_model(sums: _Rows, groups: dict[str | None, list[int]]) -> list[ModelTokens]:
    rows = [
        ModelTokens(model=model, **sums.counts(rows))
        for model, rows in groups.items()
        if model is not None and model != SYNTHETIC_MODEL
    ]
    return sorted(rows, key=lambda m: (-m.total, m.model))


class _Project(msgspec.Struct):
    counts: dict[str, Any]
    latest: int  # µs since the epoch: the start of its latest bucket
    latest_file: str  # the session with usage in that bucket (the last by name)


def _by_project(
    sums: _Rows, latest: list[int], groups: dict[str, list[int]]
) -> dict[str, _Project]:
    projects = {}
    for key, rows in groups.items():
        when, session_file = max(
            zip(map(latest.__getitem__, rows), map(sums.files.__getitem__, rows), strict=True)
        )
        projects[key] = _Project(sums.counts(rows), when, session_file)
    return projects


def token_stats(
    cur: Cursor, user_id: str, *, window: Window, tz: str, project: str | None = None
) -> TokenStats:
    """The tokens answer, from ``usage_buckets`` (each user's winning entries summed per
    15-minute UTC bucket, session and model): the window's days in ``tz`` (empty ones
    zero), its totals, models and projects, and the same over the whole history, with
    the 10 largest sessions. ``project`` (a key) narrows every number to that project,
    except the list of projects over the whole history (what a picker offers).

    One statement reads the user's rows (they lie together: the table is written ordered
    by user) twice: the whole history grouped by session and model (a few thousand groups
    at most; their day is None), and the window's rows (of the project) grouped by local
    day, session and model (a few hundred for 30 days). They come as columns; the groups
    are summed here, the costs exactly (as integers of picodollars) and rounded once. The
    few sessions the answer names are found by their key."""
    first, last, since, until = _bounds(cur, user_id, window, tz)
    # (times as microseconds: DuckDB hands TIMESTAMPTZ values over several times slower)
    days, files, models, keys, latest, earliest, *sums = _columns(
        cur,
        "SELECT NULL::VARCHAR, session_file, model, any_value(project_key),"
        f" epoch_us(max(bucket)), epoch_us(min(bucket)), {_GROUP_SUMS} FROM usage_buckets"
        " WHERE user_id = $user GROUP BY session_file, model"
        " UNION ALL"
        " SELECT (bucket AT TIME ZONE $tz)::DATE::VARCHAR AS day, session_file, model,"
        f" any_value(project_key), epoch_us(max(bucket)), NULL, {_GROUP_SUMS}"
        " FROM usage_buckets WHERE user_id = $user AND bucket >= $since AND bucket < $until"
        " AND ($project::VARCHAR IS NULL OR project_key = $project)"
        " GROUP BY day, session_file, model",
        {"user": user_id, "since": since, "until": until, "tz": tz, "project": project},
    )
    groups = _Rows(files, sums)
    lifetime = [row for row, day in enumerate(days) if day is None]
    in_window = [row for row, day in enumerate(days) if day is not None]
    projects = _by_project(groups, latest, _group(keys, lifetime))
    mine = lifetime if project is None else [row for row in lifetime if keys[row] == project]
    by_day = _group(days, in_window)
    if window.all and (not mine or _utc(min(map(earliest.__getitem__, mine))) >= since):
        # from the first activity to today (a first activity further back: MAX_DAYS)
        first = date.fromisoformat(min(by_day)) if by_day else last
    span = (last - first).days + 1
    daily = []
    for n in range(span):
        day = (first + timedelta(days=n)).isoformat()
        rows = by_day.get(day)
        daily.append(TokenDay(day=day, **(groups.counts(rows) if rows else _NO_SUMS)))
    by_model = _group(models, mine)
    unpriced = sorted(
        str(model)
        for model, rows in by_model.items()
        if model is not None and model != SYNTHETIC_MODEL and any(map(sums[6].__getitem__, rows))
    )
    per_file: dict[str, int] = {}
    for row in mine:
        session_file = files[row]
        total = sums[1][row] + sums[2][row] + sums[3][row] + sums[4][row]
        per_file[session_file] = per_file.get(session_file, 0) + total
    top = heapq.nsmallest(10, per_file.items(), key=lambda f: (-f[1], f[0]))
    top_files = {f for f, _ in top}
    top_rows = _group(files, [row for row in mine if files[row] in top_files])
    named = [f for f, _ in top] + [p.latest_file for p in projects.values()]
    sessions = _sessions_by_key(cur, user_id, named)
    top_sessions = []
    for session_file, total in top:
        session_id, started_at, primary_model, _ = sessions.get(
            session_file, (session_of_file(session_file), None, None, None)
        )
        top_sessions.append(
            TopSession(
                session_file=session_file,
                session_id=session_id,
                started_at=iso(started_at),
                primary_model=primary_model,
                total=total,
                cost_usd=groups.counts(top_rows[session_file])["cost_usd"],
            )
        )
    paths = {key: sessions.get(p.latest_file, (None,) * 4)[3] for key, p in projects.items()}
    window_projects = _by_project(groups, latest, _group(keys, in_window))
    return TokenStats(
        days=span,
        tz=tz,
        daily=daily,
        by_model=_by_model(groups, by_model),
        top_sessions=top_sessions,
        totals=TokenCounts(**groups.counts(mine)),
        unpriced_models=unpriced,
        by_project=_projects(projects, paths),
        window=TokenWindow(
            from_=first.isoformat(),
            to=last.isoformat(),
            totals=TokenCounts(**groups.counts(in_window)),
            by_model=_by_model(groups, _group(models, in_window)),
            by_project=_projects(window_projects, paths),
        ),
        project=project,
    )


BUCKET = timedelta(minutes=15)


def _utc(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


Described = tuple[str, Any, str | None, str | None]
"""A session's id, start, primary model and project path."""


def _sessions_by_key(cur: Cursor, user_id: str, session_files: list[str]) -> dict[str, Described]:
    """What the answer says of a few sessions (the top ones, and each project's latest),
    found by the sessions table's key."""
    found: dict[str, Described] = {}
    keys = sorted({f"{user_id}/{f}" for f in session_files})
    for where, params in keyed("key", keys):
        for session_file, session_id, started, model, path in cur.execute(
            "SELECT session_file, session_id, started_at, primary_model, project FROM sessions"
            f" WHERE {where}",
            params,
        ).fetchall():
            found[session_file] = (session_id, started, model, path)
    return found


def _bucket_end(start: datetime, now: datetime) -> datetime:
    """The end of the bucket that starts at ``start``, or ``now`` while it lasts (a bucket of
    9999-12-31 23:45 ends past the last time Python can hold)."""
    return now if start >= now - BUCKET else start + BUCKET


def _projects(groups: dict[str, _Project], paths: dict[str, str | None]) -> list[ProjectTokens]:
    """Project rows, largest first, each with the path of its latest session, and when it
    was last active: the end of its latest 15-minute bucket with usage (now, while that
    bucket lasts)."""
    now = datetime.now(UTC)
    rows = [
        ProjectTokens(
            project=paths.get(key) if key else None,
            key=key,
            last_active=iso(_bucket_end(_utc(p.latest), now)),
            **p.counts,
        )
        for key, p in groups.items()
    ]
    return sorted(rows, key=lambda p: (-p.total, p.key))


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
