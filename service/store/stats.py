"""The reads behind ``/api/me/stats/sessions`` and ``/api/me/stats/tokens``.

Every query takes the caller's user id and filters by it first: nothing here can return
another user's rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from service.ingest.accounting import SYNTHETIC_MODEL
from service.ingest.transcript import session_of_file
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


_SESSION_DETAILS = (
    "session_file, session_id, ended_at, active_seconds, wall_seconds, user_messages,"
    " tool_calls, tool_errors, input_tokens, output_tokens, cache_read_tokens,"
    " cache_creation_tokens, cost_usd, primary_model, project, project_key"
)


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
    for name, status, error, _, started_at, _, _ in page:
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
                project=d[14] if d else None,
                project_key=d[15] if d else "",
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
    row = cur.execute("SELECT (now() AT TIME ZONE $tz)::DATE", {"tz": tz}).fetchone()
    assert row is not None
    today: date = row[0]
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
    ).fetchone()
    assert bounds is not None
    return first, last, bounds[0], bounds[1]


_BUCKET_SUMS = (
    "coalesce(sum(entries), 0), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),"
    " coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_creation_tokens), 0),"
    " coalesce(sum(cost), 0)::DOUBLE, coalesce(sum(unpriced), 0), count(DISTINCT session_file)"
)


_NO_SUMS = (0, 0, 0, 0, 0, 0.0, 0, 0)


def _counts(sums: Sequence[Any]) -> dict[str, Any]:
    """The fields of a TokenCounts from the eight values of ``_BUCKET_SUMS``: the cost is
    0 without entries and None when none of them has a price."""
    entries, inp, out, read, create, cost, unpriced, sessions = sums
    return {
        "input": int(inp),
        "output": int(out),
        "cache_read": int(read),
        "cache_creation": int(create),
        "total": int(inp + out + read + create),
        "cost_usd": None if entries and entries == unpriced else round(float(cost), 9),
        "sessions": int(sessions),
    }


def _by_model(groups: dict[str | None, _Sums]) -> list[ModelTokens]:
    rows = [
        ModelTokens(model=model, **sums.counts())
        for model, sums in groups.items()
        if model is not None and model != SYNTHETIC_MODEL
    ]
    return sorted(rows, key=lambda m: (-m.total, m.model))


def token_stats(
    cur: Cursor, user_id: str, *, window: Window, tz: str, project: str | None = None
) -> TokenStats:
    """The tokens answer, from ``usage_buckets`` (each user's winning entries summed per
    15-minute UTC bucket, session and model): the window's days in ``tz`` (empty ones
    zero), its totals, models and projects, and the same over the whole history, with
    the 10 largest sessions. ``project`` (a key) narrows every number to that project,
    except the list of projects over the whole history (what a picker offers).

    The user's rows are read once (they lie together: the table is written ordered by
    user), grouped by session and model (a few thousand groups at most) and, for the
    window, by local day; the rest is summed here. The few sessions the answer names are
    found by their key."""
    first, last, since, until = _bounds(cur, user_id, window, tz)
    w = "FILTER (WHERE bucket >= $since AND bucket < $until)"
    rows = cur.execute(
        f"""
        WITH mine AS MATERIALIZED (
            SELECT bucket, session_file, model, project_key, entries, input_tokens,
                   output_tokens, cache_read_tokens, cache_creation_tokens, cost, unpriced
            FROM usage_buckets WHERE user_id = $user
        )
        -- (sums as BIGINT, times as microseconds: DuckDB hands HUGEINT and TIMESTAMPTZ
        -- values to Python several times slower)
        SELECT NULL AS day, session_file, model, any_value(project_key),
               epoch_us(max(bucket)), sum(entries)::BIGINT, sum(input_tokens)::BIGINT,
               sum(output_tokens)::BIGINT, sum(cache_read_tokens)::BIGINT,
               sum(cache_creation_tokens)::BIGINT, sum(cost)::DOUBLE, sum(unpriced)::BIGINT,
               coalesce(sum(entries) {w}, 0)::BIGINT, coalesce(sum(input_tokens) {w}, 0)::BIGINT,
               coalesce(sum(output_tokens) {w}, 0)::BIGINT,
               coalesce(sum(cache_read_tokens) {w}, 0)::BIGINT,
               coalesce(sum(cache_creation_tokens) {w}, 0)::BIGINT,
               coalesce(sum(cost) {w}, 0)::DOUBLE, coalesce(sum(unpriced) {w}, 0)::BIGINT,
               epoch_us(max(bucket) {w}), epoch_us(min(bucket))
        FROM mine GROUP BY session_file, model
        UNION ALL
        SELECT (bucket AT TIME ZONE $tz)::DATE::VARCHAR AS day, session_file, NULL,
               any_value(project_key), NULL, sum(entries)::BIGINT, sum(input_tokens)::BIGINT,
               sum(output_tokens)::BIGINT, sum(cache_read_tokens)::BIGINT,
               sum(cache_creation_tokens)::BIGINT, sum(cost)::DOUBLE, sum(unpriced)::BIGINT,
               NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM mine WHERE bucket >= $since AND bucket < $until
        GROUP BY day, session_file
        """,
        {"user": user_id, "since": since, "until": until, "tz": tz},
    ).fetchall()
    totals, window_totals = _Sums(), _Sums()
    models: dict[str | None, _Sums] = {}
    window_models: dict[str | None, _Sums] = {}
    files: dict[str, _Sums] = {}
    projects: dict[str, _Sums] = {}
    window_projects: dict[str, _Sums] = {}
    days: dict[str, _Sums] = {}
    earliest: int | None = None  # µs
    for day, session_file, model, key, latest, *sums in rows:
        lifetime, windowed, window_latest = sums[:7], sums[7:14], sums[14]
        if day is not None:
            if project is None or key == project:
                days.setdefault(day, _Sums()).add(session_file, lifetime)
            continue
        projects.setdefault(key, _Sums()).add(session_file, lifetime, latest)
        if project is not None and key != project:
            continue
        earliest = sums[15] if earliest is None else min(earliest, sums[15])
        totals.add(session_file, lifetime)
        models.setdefault(model, _Sums()).add(session_file, lifetime)
        files.setdefault(session_file, _Sums()).add(session_file, lifetime)
        if windowed[0]:
            window_totals.add(session_file, windowed)
            window_models.setdefault(model, _Sums()).add(session_file, windowed)
            window_projects.setdefault(key, _Sums()).add(session_file, windowed, window_latest)
    if window.all and (earliest is None or _utc(earliest) >= since):
        # from the first activity to today (a first activity further back: MAX_DAYS)
        first = date.fromisoformat(min(days)) if days else last
    span = (last - first).days + 1
    daily = []
    for n in range(span):
        day = (first + timedelta(days=n)).isoformat()
        counts = days[day].counts() if day in days else _counts(_NO_SUMS)
        daily.append(TokenDay(day=day, **counts))
    unpriced = sorted(
        str(m)
        for m, sums in models.items()
        if m is not None and m != SYNTHETIC_MODEL and sums.unpriced
    )
    top = sorted(files.items(), key=lambda f: (-f[1].total, f[0]))[:10]
    named = [f for f, _ in top] + [p.latest_file for p in projects.values() if p.latest_file]
    sessions = _sessions_by_key(cur, user_id, named)
    top_sessions = []
    for session_file, file_sums in top:
        counts = file_sums.counts()
        session_id, started_at, primary_model, _ = sessions.get(
            session_file, (session_of_file(session_file), None, None, None)
        )
        top_sessions.append(
            TopSession(
                session_file=session_file,
                session_id=session_id,
                started_at=iso(started_at),
                primary_model=primary_model,
                total=counts["total"],
                cost_usd=counts["cost_usd"],
            )
        )
    paths = {key: sessions.get(p.latest_file or "", (None,) * 4)[3] for key, p in projects.items()}
    return TokenStats(
        days=span,
        tz=tz,
        daily=daily,
        by_model=_by_model(models),
        top_sessions=top_sessions,
        totals=TokenCounts(**totals.counts()),
        unpriced_models=unpriced,
        by_project=_projects(projects, paths),
        window=TokenWindow(
            from_=first.isoformat(),
            to=last.isoformat(),
            totals=TokenCounts(**window_totals.counts()),
            by_model=_by_model(window_models),
            by_project=_projects(window_projects, paths),
        ),
        project=project,
    )


BUCKET = timedelta(minutes=15)


def _utc(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


class _Sums:
    """Sums of bucket groups (entries, four token counts, cost, unpriced entries), the
    sessions they come from, and the latest bucket among them (with its session)."""

    __slots__ = ("cost", "files", "latest", "latest_file", "values")

    def __init__(self) -> None:
        self.values = [0, 0, 0, 0, 0, 0]  # entries, input, output, read, creation, unpriced
        self.cost: list[float] = []
        self.files: set[str] = set()
        self.latest: int | None = None  # µs since the epoch
        self.latest_file: str | None = None

    def add(self, session_file: str, sums: Sequence[Any], latest: int | None = None) -> None:
        entries, inp, out, read, create, cost, unpriced = sums
        v = self.values
        v[0] += entries
        v[1] += inp
        v[2] += out
        v[3] += read
        v[4] += create
        v[5] += unpriced
        self.cost.append(cost)
        self.files.add(session_file)
        if latest is not None and (
            self.latest is None or (latest, session_file) > (self.latest, self.latest_file or "")
        ):
            self.latest, self.latest_file = latest, session_file

    @property
    def total(self) -> int:
        return int(sum(self.values[1:5]))

    @property
    def unpriced(self) -> int:
        return int(self.values[5])

    def counts(self) -> dict[str, Any]:
        entries, inp, out, read, create, unpriced = self.values
        return _counts(
            (entries, inp, out, read, create, math.fsum(self.cost), unpriced, len(self.files))
        )


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


def _projects(groups: dict[str, _Sums], paths: dict[str, str | None]) -> list[ProjectTokens]:
    """Project rows, largest first, each with the path of its latest session, and when it
    was last active: the end of its latest 15-minute bucket with usage (now, while that
    bucket lasts)."""
    now = datetime.now(UTC)
    rows = [
        ProjectTokens(
            project=paths.get(key) if key else None,
            key=key,
            last_active=(
                iso(_bucket_end(_utc(sums.latest), now)) if sums.latest is not None else None
            ),
            **sums.counts(),
        )
        for key, sums in groups.items()
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
