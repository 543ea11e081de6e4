"""The writes of one ingest batch, in one transaction: file offsets and states, usage
entry copies with their winner flags, session rows, audit spool events, errors and user
versions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
import pyarrow as pa

from service.ingest.accounting import (
    SYNTHETIC_MODEL,
    ModelTotals,
    dedup,
    session_id_of,
    summarize,
)
from service.ingest.pricing import cost_usd
from service.ingest.spool import SpoolResult
from service.ingest.transcript import TranscriptState, UsageEntry
from service.store import one_of, users
from service.store.spool import apply_spools

if TYPE_CHECKING:
    from service.store import Cursor

_state_decoder = msgspec.msgpack.Decoder(TranscriptState)
encode_state = msgspec.msgpack.Encoder().encode

_COPY_COLUMNS = (
    "user_id, file_path, line_key, file_name, session_file, message_id, request_id, session_id,"
    " ts, model, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,"
    " cache_creation_5m, cache_creation_1h, is_sidechain, speed, cost_usd, winner"
)
_ENTRY_COLUMNS = (
    "message_id, request_id, session_id, ts, model, input_tokens, output_tokens,"
    " cache_creation_tokens, cache_creation_5m, cache_creation_1h, cache_read_tokens,"
    " is_sidechain, speed, file_name, line_key, file_path, session_file"
)
# Stored copies come back through _entries(); keep these two lists in the same order.


class KnownFile(msgspec.Struct, frozen=True):
    """What the store remembers of a file between two reads of it."""

    path: str
    user_id: str | None
    size: int
    read_offset: int
    fingerprint: str | None
    state: bytes | None
    status: str


class FileResult(msgspec.Struct, kw_only=True):
    """One file's outcome in a batch: where reading stopped and what it found."""

    path: str  # relative to user_sessions/
    user_id: str | None
    name: str
    session_file: str
    is_subagent: bool
    size: int
    read_offset: int
    fingerprint: str | None
    state: TranscriptState | None
    entries: list[UsageEntry]
    reread: bool  # read from the start: this file's earlier copies are replaced
    error: str | None = None
    unchanged: bool = False  # nothing new since the last read: nothing to store or tell
    bytes_read: int = 0  # what this read added, for progress and reports
    lines_read: int = 0
    bad_lines_read: int = 0


TRANSCRIPT_TABS = frozenset({"sessions", "tokens"})


class BatchChanges(msgspec.Struct):
    """What a committed batch changed: each touched user's new version, and the dashboard
    tabs whose data changed for them (every user in ``versions`` is in ``changed``)."""

    versions: dict[str, int]
    changed: dict[str, set[str]]


def known_files(cur: Cursor, paths: Sequence[str]) -> dict[str, KnownFile]:
    where, params = one_of("path", paths)
    rows = cur.execute(
        "SELECT path, user_id, size, read_offset, fingerprint, state, status FROM files"
        f" WHERE {where}",
        params,
    ).fetchall()
    return {
        r[0]: KnownFile(
            path=r[0],
            user_id=r[1],
            size=r[2],
            read_offset=r[3],
            fingerprint=r[4],
            state=r[5],
            status=r[6],
        )
        for r in rows
    }


def unfinished_files(cur: Cursor) -> list[str]:
    """Files that still wait: pending, orphaned, or failed (for the reconciling scan)."""
    rows = cur.execute("SELECT path FROM files WHERE status <> 'processed'").fetchall()
    return [str(r[0]) for r in rows]


def _entries(rows: Iterable[tuple[object, ...]]) -> list[tuple[UsageEntry, str, str]]:
    """Stored copies back as entries, each with its file path and session file."""
    found = []
    for r in rows:
        entry = UsageEntry(
            message_id=r[0],  # type: ignore[arg-type]
            request_id=r[1],  # type: ignore[arg-type]
            session_id=r[2],  # type: ignore[arg-type]
            timestamp=r[3].astimezone(UTC),  # type: ignore[attr-defined]
            model=r[4],  # type: ignore[arg-type]
            input_tokens=r[5],  # type: ignore[arg-type]
            output_tokens=r[6],  # type: ignore[arg-type]
            cache_creation_tokens=r[7],  # type: ignore[arg-type]
            cache_creation_5m=r[8],  # type: ignore[arg-type]
            cache_creation_1h=r[9],  # type: ignore[arg-type]
            cache_read_tokens=r[10],  # type: ignore[arg-type]
            is_sidechain=r[11],  # type: ignore[arg-type]
            speed=r[12],  # type: ignore[arg-type]
            file_name=r[13],  # type: ignore[arg-type]
            line_key=r[14],  # type: ignore[arg-type]
        )
        found.append((entry, str(r[15]), str(r[16])))
    return found


def apply_batch(
    cur: Cursor, results: Sequence[FileResult], spools: Sequence[SpoolResult] = ()
) -> BatchChanges:
    """Store a batch of read files and bring every derived row they touch up to date.

    Dedup is redone only for the responses (``message.id``) the batch touched, over all
    of the user's copies of them, so the winner never depends on arrival order. Audit
    spool events are stored once by id. Returns the new version of every user whose data
    changed, with the tabs that changed for them.
    """
    now = datetime.now(UTC)
    touched_users: set[str] = set()
    touched_sessions: set[tuple[str, str]] = set()
    message_ids: dict[str, set[str]] = {}
    new_copies: list[tuple[UsageEntry, str, str, str]] = []  # entry, user, path, session file

    saved: list[FileResult] = []
    for result in results:
        if result.error is not None:
            _record_error(cur, result, now)
            continue
        if result.unchanged:
            continue  # e.g. the watcher's event for a file the upload handler queued already
        user_id = result.user_id
        assert user_id is not None and result.state is not None
        touched_users.add(user_id)
        touched_sessions.add((user_id, result.session_file))
        for entry in result.entries:
            new_copies.append((entry, user_id, result.path, result.session_file))
            if entry.message_id is not None:
                message_ids.setdefault(user_id, set()).add(entry.message_id)
        saved.append(result)
    reread = {r.path: r.user_id for r in saved if r.reread}
    if reread:
        where, params = one_of("file_path", sorted(reread))
        gone = cur.execute(
            f"DELETE FROM usage_entries WHERE {where} RETURNING user_id, message_id, session_file",
            params,
        ).fetchall()
        for user_id, message_id, session_file in gone:
            touched_sessions.add((user_id, session_file))
            if message_id is not None:
                message_ids.setdefault(user_id, set()).add(message_id)
    if saved:
        _save_files(cur, saved, now)

    winners_by_user: dict[str, set[int]] = {}
    changed: list[tuple[str, str, bool]] = []  # stored copies whose winner flag moved
    for user_id, mids in message_ids.items():
        where, params = one_of("message_id", sorted(mids))
        stored = cur.execute(
            f"SELECT {_ENTRY_COLUMNS}, winner FROM usage_entries WHERE user_id = ? AND {where}",
            [user_id, *params],
        ).fetchall()
        old = _entries(r[:-1] for r in stored)
        fresh = [entry for entry, uid, _, _ in new_copies if uid == user_id]
        winners = {id(w) for w in dedup([e for e, _, _ in old] + fresh)}
        winners_by_user[user_id] = winners
        for (entry, path, session_file), row in zip(old, stored, strict=True):
            is_winner = id(entry) in winners
            if is_winner != row[-1]:
                changed.append((path, entry.line_key, is_winner))
                touched_sessions.add((user_id, session_file))

    if new_copies:
        _insert_copies(cur, new_copies, winners_by_user)
    for path, line_key, is_winner in changed:
        cur.execute(
            "UPDATE usage_entries SET winner = ? WHERE file_path = ? AND line_key = ?",
            [is_winner, path, line_key],
        )
    _summarize(cur, touched_sessions)
    tabs_changed = {user_id: set(TRANSCRIPT_TABS) for user_id in touched_users}
    for user_id, tabs in apply_spools(cur, spools).items():
        tabs_changed.setdefault(user_id, set()).update(tabs)
    versions = users.bump_versions(cur, set(tabs_changed))
    return BatchChanges(versions=versions, changed=tabs_changed)


def _record_error(cur: Cursor, result: FileResult, now: datetime) -> None:
    cur.execute(
        """
        INSERT INTO files (path, user_id, name, session_file, is_subagent, size, status, error,
                           first_seen_at, processed_at)
        VALUES (?, ?, ?, ?, ?, ?, 'error', ?, ?, ?)
        ON CONFLICT (path) DO UPDATE SET status = 'error', error = excluded.error,
            user_id = excluded.user_id, processed_at = excluded.processed_at
        """,
        [
            result.path,
            result.user_id,
            result.name,
            result.session_file,
            result.is_subagent,
            result.size,
            result.error,
            now,
            now,
        ],
    )
    cur.execute("INSERT INTO processing_errors VALUES (?, ?, ?)", [result.path, now, result.error])


def unreadable(state: TranscriptState) -> str | None:
    """Why a file counts as bad as a whole: it has lines, and not one of them could be read."""
    bad = state.bad_lines + state.oversized_lines
    if state.lines and bad == state.lines:
        return f"not a transcript: none of its {state.lines} lines could be read"
    return None


SMALL_BATCH = 8
"""Up to this many rows go in as plain parameterized statements: registering an Arrow
table costs a few milliseconds, which is most of a live update's budget."""


def _save_files(cur: Cursor, saved: list[FileResult], now: datetime) -> None:
    states = [r.state for r in saved]
    if len(saved) <= SMALL_BATCH:
        for result, state in zip(saved, states, strict=True):
            assert state is not None
            error = unreadable(state)
            values = [
                result.user_id,
                result.size,
                result.read_offset,
                result.fingerprint,
                encode_state(state),
                "processed" if error is None else "error",
                error,
                state.lines,
                state.bad_lines + state.oversized_lines,
                now,
                result.path,
            ]
            updated = cur.execute(
                "UPDATE files SET user_id = ?, size = ?, read_offset = ?, fingerprint = ?,"
                " state = ?, status = ?, error = ?, lines = ?, bad_lines = ?, processed_at = ?"
                " WHERE path = ? RETURNING path",
                values,
            ).fetchall()
            if not updated:
                cur.execute(
                    "INSERT INTO files (user_id, size, read_offset, fingerprint, state, status,"
                    " error, lines, bad_lines, processed_at, path, name, session_file,"
                    " is_subagent, first_seen_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [*values, result.name, result.session_file, result.is_subagent, now],
                )
        return
    table = pa.table(
        {
            "path": [r.path for r in saved],
            "user_id": [r.user_id for r in saved],
            "name": [r.name for r in saved],
            "session_file": [r.session_file for r in saved],
            "is_subagent": pa.array([r.is_subagent for r in saved], pa.bool_()),
            "size": pa.array([r.size for r in saved], pa.int64()),
            "read_offset": pa.array([r.read_offset for r in saved], pa.int64()),
            "fingerprint": pa.array([r.fingerprint for r in saved], pa.string()),
            "state": pa.array([encode_state(state) for state in states], pa.binary()),
            "lines": pa.array([s.lines for s in states if s], pa.int64()),
            "bad_lines": pa.array(
                [s.bad_lines + s.oversized_lines for s in states if s], pa.int64()
            ),
            "error": pa.array([unreadable(s) for s in states if s], pa.string()),
        }
    )
    cur.register("saved_files", table)
    try:
        cur.execute(
            """
            INSERT INTO files (path, user_id, name, session_file, is_subagent, size, read_offset,
                               fingerprint, state, status, error, lines, bad_lines,
                               first_seen_at, processed_at)
            SELECT path, user_id, name, session_file, is_subagent, size, read_offset,
                   fingerprint, state, CASE WHEN error IS NULL THEN 'processed' ELSE 'error' END,
                   error, lines, bad_lines, $now, $now
            FROM saved_files
            ON CONFLICT (path) DO UPDATE SET
                user_id = excluded.user_id, size = excluded.size,
                read_offset = excluded.read_offset, fingerprint = excluded.fingerprint,
                state = excluded.state, status = excluded.status, error = excluded.error,
                lines = excluded.lines, bad_lines = excluded.bad_lines,
                processed_at = excluded.processed_at
            """,
            {"now": now},
        )
    finally:
        cur.unregister("saved_files")


def _insert_copies(
    cur: Cursor,
    copies: list[tuple[UsageEntry, str, str, str]],
    winners_by_user: dict[str, set[int]],
) -> None:
    """Bulk insert through Arrow: one statement however many copies."""
    entries = [c[0] for c in copies]
    no_winners: set[int] = set()
    if len(copies) <= 4 * SMALL_BATCH:
        cur.executemany(
            f"INSERT INTO usage_entries ({_COPY_COLUMNS}) VALUES ({', '.join(['?'] * 20)})",
            [
                [
                    user_id,
                    path,
                    e.line_key,
                    e.file_name,
                    session_file,
                    e.message_id,
                    e.request_id,
                    e.session_id,
                    e.timestamp,
                    e.model,
                    e.input_tokens,
                    e.output_tokens,
                    e.cache_read_tokens,
                    e.cache_creation_tokens,
                    e.cache_creation_5m,
                    e.cache_creation_1h,
                    e.is_sidechain,
                    e.speed,
                    cost_usd(e),
                    e.message_id is None or id(e) in winners_by_user.get(user_id, no_winners),
                ]
                for e, user_id, path, session_file in copies
            ],
        )
        return
    table = pa.table(
        {
            "user_id": [c[1] for c in copies],
            "file_path": [c[2] for c in copies],
            "line_key": [e.line_key for e in entries],
            "file_name": [e.file_name for e in entries],
            "session_file": [c[3] for c in copies],
            "message_id": pa.array([e.message_id for e in entries], pa.string()),
            "request_id": pa.array([e.request_id for e in entries], pa.string()),
            "session_id": [e.session_id for e in entries],
            "ts": pa.array([e.timestamp for e in entries], pa.timestamp("us", tz="UTC")),
            "model": pa.array([e.model for e in entries], pa.string()),
            "input_tokens": pa.array([e.input_tokens for e in entries], pa.int64()),
            "output_tokens": pa.array([e.output_tokens for e in entries], pa.int64()),
            "cache_read_tokens": pa.array([e.cache_read_tokens for e in entries], pa.int64()),
            "cache_creation_tokens": pa.array(
                [e.cache_creation_tokens for e in entries], pa.int64()
            ),
            "cache_creation_5m": pa.array([e.cache_creation_5m for e in entries], pa.int64()),
            "cache_creation_1h": pa.array([e.cache_creation_1h for e in entries], pa.int64()),
            "is_sidechain": pa.array([e.is_sidechain for e in entries], pa.bool_()),
            "speed": pa.array([e.speed for e in entries], pa.string()),
            "cost_usd": pa.array([cost_usd(e) for e in entries], pa.float64()),
            "winner": pa.array(
                [
                    e.message_id is None or id(e) in winners_by_user.get(c[1], no_winners)
                    for e, c in zip(entries, copies, strict=True)
                ],
                pa.bool_(),
            ),
        }
    )
    cur.register("new_copies", table)
    try:
        cur.execute(f"INSERT INTO usage_entries ({_COPY_COLUMNS}) SELECT * FROM new_copies")
    finally:
        cur.unregister("new_copies")


def _summarize(cur: Cursor, sessions: set[tuple[str, str]]) -> None:
    """Rebuild session rows from their files' states and per-model sums of their winning
    entries (summed by the database: a long session has thousands of them)."""
    if not sessions:
        return
    by_user: dict[str, list[str]] = {}
    for user_id, session_file in sessions:
        by_user.setdefault(user_id, []).append(session_file)
    states: dict[tuple[str, str], list[TranscriptState]] = {}
    session_ids: dict[tuple[str, str], str] = {}
    totals: dict[tuple[str, str, str], list[ModelTotals]] = {}
    for user_id, session_files in by_user.items():
        in_sessions, files = one_of("session_file", sorted(session_files))
        params = [user_id, *files]
        found: dict[tuple[str, str], list[TranscriptState]] = {}
        for session_file, blob in cur.execute(
            f"SELECT session_file, state FROM files WHERE user_id = ? AND {in_sessions}"
            " AND state IS NOT NULL ORDER BY is_subagent, name",
            params,
        ).fetchall():
            found.setdefault((user_id, session_file), []).append(_state_decoder.decode(blob))
        if not found:
            continue
        states.update(found)
        session_ids.update((key, session_id_of(v)) for key, v in found.items())
        # Only each session's own id counts (a file may hold lines of other sessions, e.g.
        # a resumed chain): sum just those, not every id the files mention.
        in_ids, ids = one_of("session_id", sorted({session_ids[key] for key in found}))
        for row in cur.execute(
            f"""
            SELECT session_file, session_id, model, sum(input_tokens), sum(output_tokens),
                   sum(cache_read_tokens), sum(cache_creation_tokens),
                   count(*) FILTER (WHERE model IS DISTINCT FROM ?),
                   min(ts) FILTER (WHERE model IS DISTINCT FROM ?),
                   -- exact decimal sums: the same winners give the same cost in any order
                   coalesce(sum(cost_usd::DECIMAL(38, 12)), 0),
                   bool_or(cost_usd IS NULL),
                   coalesce(bool_or(cost_usd IS NOT NULL AND input_tokens + output_tokens
                       + cache_read_tokens + cache_creation_tokens > 0), false)
            FROM usage_entries
            WHERE user_id = ? AND {in_sessions} AND {in_ids} AND winner
            GROUP BY session_file, session_id, model
            """,
            [SYNTHETIC_MODEL, SYNTHETIC_MODEL, *params, *ids],
        ).fetchall():
            totals.setdefault((user_id, row[0], row[1]), []).append(
                ModelTotals(
                    model=row[2],
                    input_tokens=int(row[3]),
                    output_tokens=int(row[4]),
                    cache_read_tokens=int(row[5]),
                    cache_creation_tokens=int(row[6]),
                    responses=int(row[7]),
                    first_seen=row[8],
                    cost_usd=float(row[9]),
                    unpriced=bool(row[10]),
                    priced_tokens=bool(row[11]),
                )
            )
    rows = []
    for (user_id, session_file), session_states in states.items():
        session_id = session_ids[user_id, session_file]
        s = summarize(session_states, totals.get((user_id, session_file, session_id), []))
        rows.append(
            [
                user_id,
                session_file,
                s.session_id,
                s.started_at,
                s.ended_at,
                *(getattr(s, name) for name in _SESSION_COUNTS),
                s.distinct_tools,
                s.distinct_skills,
                s.primary_model,
                *(getattr(s, name) for name in _SESSION_TOKENS),
                s.cost_usd,
            ]
        )
    if len(sessions) > SMALL_BATCH:
        _replace_sessions(cur, sessions, rows)
        return
    for user_id, session_file in sessions - states.keys():  # its files are gone from view
        cur.execute(
            "DELETE FROM sessions WHERE user_id = ? AND session_file = ?", [user_id, session_file]
        )
    for values in rows:
        # An UPDATE, and an INSERT only for a new session: cheaper than replacing the row.
        updated = cur.execute(
            f"UPDATE sessions SET {_SESSION_ASSIGNMENTS} WHERE user_id = ? AND session_file = ?"
            " RETURNING 1",
            [*values[2:], values[0], values[1]],
        ).fetchall()
        if not updated:
            cur.execute(_SESSION_INSERT, values)


def _replace_sessions(
    cur: Cursor, sessions: set[tuple[str, str]], rows: list[list[object]]
) -> None:
    """Many sessions at once (a backfill): delete and insert in two statements."""
    keys = pa.table({"user_id": [k[0] for k in sessions], "session_file": [k[1] for k in sessions]})
    cur.register("touched_sessions", keys)
    try:
        cur.execute(
            "DELETE FROM sessions s USING touched_sessions t"
            " WHERE s.user_id = t.user_id AND s.session_file = t.session_file"
        )
    finally:
        cur.unregister("touched_sessions")
    if not rows:
        return
    columns = list(zip(*rows, strict=True))
    types = {
        "started_at": pa.timestamp("us", tz="UTC"),
        "ended_at": pa.timestamp("us", tz="UTC"),
        "distinct_tools": pa.list_(pa.string()),
        "distinct_skills": pa.list_(pa.string()),
        "primary_model": pa.string(),
        "cost_usd": pa.float64(),
        **dict.fromkeys((*_SESSION_COUNTS, *_SESSION_TOKENS), pa.int64()),
    }
    table = pa.table(
        {
            name: pa.array(list(column), types.get(name))
            for name, column in zip(_SESSION_COLUMNS, columns, strict=True)
        }
    )
    cur.register("new_sessions", table)
    try:
        cur.execute("INSERT INTO sessions SELECT * FROM new_sessions")
    finally:
        cur.unregister("new_sessions")


_SESSION_COUNTS = (
    "active_seconds",
    "wall_seconds",
    "user_messages",
    "assistant_messages",
    "tool_calls",
    "tool_errors",
    "skill_invocations",
    "subagent_dispatches",
    "mcp_calls",
    "slash_commands",
)
_SESSION_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
_SESSION_COLUMNS = (
    "user_id",
    "session_file",
    "session_id",
    "started_at",
    "ended_at",
    *_SESSION_COUNTS,
    "distinct_tools",
    "distinct_skills",
    "primary_model",
    *_SESSION_TOKENS,
    "cost_usd",
)
"""The sessions table's columns, in its order (a row's values are built in this order)."""
_SESSION_ASSIGNMENTS = ", ".join(f"{name} = ?" for name in _SESSION_COLUMNS[2:])
_SESSION_INSERT = f"INSERT INTO sessions VALUES ({', '.join('?' * len(_SESSION_COLUMNS))})"


def reset_derived(cur: Cursor) -> dict[str, int]:
    """Forget everything read from transcripts, so ``reprocess`` rebuilds it from the files.

    Returns the new version of every user who had sessions: their numbers change now, even
    those whose files are all gone and whom the re-read will not touch."""
    had_sessions = [
        str(r[0]) for r in cur.execute("SELECT DISTINCT user_id FROM sessions").fetchall()
    ]
    cur.execute("DELETE FROM usage_entries")
    cur.execute("DELETE FROM sessions")
    cur.execute(
        "UPDATE files SET read_offset = 0, fingerprint = NULL, state = NULL, status = 'pending',"
        " error = NULL, lines = 0, bad_lines = 0"
    )
    return users.bump_versions(cur, had_sessions)
