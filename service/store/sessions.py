"""Session rows as an ingest batch keeps them: it loads the touched rows and their files'
states, asks :mod:`service.ingest.sessions` what each row becomes, sums again in SQL the
sessions whose kept sums cannot be brought up to date, and writes the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

import msgspec
import pyarrow as pa

from service.ingest import sessions
from service.ingest.accounting import SYNTHETIC_MODEL, ModelSums
from service.ingest.plan import Batch, SessionKey, WinnerChange
from service.ingest.sessions import Kept, SessionPlan, SessionRecord, SessionWrites, StoredSession
from service.ingest.transcript import TranscriptState
from service.store import bulk, keyed, one_of

if TYPE_CHECKING:
    from service.store import Cursor

__all__ = ["update"]

_state_decoder = msgspec.msgpack.Decoder(TranscriptState)
_kept_decoder = msgspec.msgpack.Decoder(Kept)
_encode_kept = msgspec.msgpack.Encoder(decimal_format="string").encode


def update(cur: Cursor, batch: Batch, changes: Sequence[WinnerChange]) -> SessionWrites:
    """Bring the rows of the batch's sessions up to date: load their rows and their files'
    states, plan (:func:`~service.ingest.sessions.plan_sessions`), sum again those the
    plan says to, write."""
    if not batch.sessions:
        return SessionWrites({}, [], {}, {})
    rows = _stored_sessions(cur, batch.sessions)
    members = sessions.members(batch.sessions, rows, batch.saved)
    _add_unlisted(cur, members, [s for s, row in rows.items() if row.kept is None])
    states = {r.path: r.state for r in batch.saved if r.state is not None}
    states.update(
        _stored_states(cur, {p for paths in members.values() for p in paths} - states.keys())
    )
    planned = sessions.plan_sessions(members, states, rows, changes, batch.resummed)
    summed = _sum_again(cur, planned)
    written = sessions.session_records(planned, summed, states, rows, batch.sessions)
    _write_sessions(cur, rows, written, bulk_write=len(batch.sessions) > bulk.FEW)
    return written


def _stored_sessions(cur: Cursor, keys: Iterable[SessionKey]) -> dict[SessionKey, StoredSession]:
    by_key = {session.key: session for session in keys}
    found: dict[SessionKey, StoredSession] = {}
    for where, params in keyed("key", sorted(by_key)):
        for key, session_id, tools, skills, kept, project in cur.execute(
            "SELECT key, session_id, distinct_tools, distinct_skills, kept, project_key"
            f" FROM sessions WHERE {where}",
            params,
        ).fetchall():
            found[by_key[key]] = StoredSession(
                session_id,
                tools,
                skills,
                None if kept is None else _kept_decoder.decode(kept),
                project,
            )
    return found


def _add_unlisted(
    cur: Cursor, members: dict[SessionKey, set[str]], unlisted: Sequence[SessionKey]
) -> None:
    """Add the files of sessions whose rows predate the ``kept`` column, from ``files``."""
    by_user: dict[str, list[str]] = {}
    for session in unlisted:
        by_user.setdefault(session.user_id, []).append(session.session_file)
    for user_id, session_files in by_user.items():
        where, params = one_of("session_file", sorted(session_files))
        for path, session_file in cur.execute(
            f"SELECT path, session_file FROM files WHERE user_id = ? AND {where}"
            " AND state IS NOT NULL",
            [user_id, *params],
        ).fetchall():
            members[SessionKey(user_id, session_file)].add(path)


def _stored_states(cur: Cursor, paths: set[str]) -> dict[str, TranscriptState]:
    found = {}
    for where, params in keyed("path", sorted(paths)):
        for path, blob in cur.execute(
            f"SELECT path, state FROM files WHERE {where}", params
        ).fetchall():
            if blob is not None:
                found[path] = _state_decoder.decode(blob)
    return found


_TWELVE_PLACES = Decimal("1E-12")  # every kept cost has 12 places, so equal sums encode alike


def _sum_again(cur: Cursor, planned: SessionPlan) -> dict[SessionKey, list[ModelSums]]:
    """Per-model sums of the winning entries of the sessions the plan sums again (only
    entries of the session's own id count: a file may hold lines of other sessions, e.g.
    a resumed chain), summed by the database: a long session has thousands of them. A
    scan of the whole ``usage_entries`` table, so only for sessions whose kept sums cannot
    be brought up to date."""
    by_user: dict[str, dict[str, str]] = {}
    for session, session_id in planned.to_sum.items():
        by_user.setdefault(session.user_id, {})[session.session_file] = session_id
    found: dict[SessionKey, list[ModelSums]] = {}
    for user_id, session_ids in by_user.items():
        in_sessions, files = one_of("session_file", sorted(session_ids))
        in_ids, ids = one_of("session_id", sorted(set(session_ids.values())))
        for row in cur.execute(
            f"""
            SELECT session_file, session_id, model, count(*), sum(input_tokens),
                   sum(output_tokens), sum(cache_read_tokens), sum(cache_creation_tokens),
                   count(*) FILTER (WHERE model IS DISTINCT FROM ?),
                   min(ts) FILTER (WHERE model IS DISTINCT FROM ?),
                   coalesce(sum(cost_usd::DECIMAL(38, 12)), 0),
                   count(*) FILTER (WHERE cost_usd IS NULL),
                   count(*) FILTER (WHERE cost_usd IS NOT NULL AND input_tokens + output_tokens
                       + cache_read_tokens + cache_creation_tokens > 0)
            FROM usage_entries
            WHERE user_id = ? AND {in_sessions} AND {in_ids} AND winner
            GROUP BY session_file, session_id, model
            """,
            [SYNTHETIC_MODEL, SYNTHETIC_MODEL, user_id, *files, *ids],
        ).fetchall():
            session_file, session_id, model, *_ = row
            if session_ids[session_file] != session_id:
                continue  # another session's id, listed for a session beside it
            sums = ModelSums(
                model=model,
                entries=row[3],
                input_tokens=row[4],
                output_tokens=row[5],
                cache_read_tokens=row[6],
                cache_creation_tokens=row[7],
                responses=row[8],
                first_seen=row[9],
                cost=row[10].quantize(_TWELVE_PLACES),
                unpriced=row[11],
                priced_tokens=row[12],
            )
            found.setdefault(SessionKey(user_id, session_file), []).append(sums)
    return found


_TIMESTAMP = pa.timestamp("us", tz="UTC")
_SUMMARY_COLUMNS = {
    "session_id": pa.string(),
    "started_at": _TIMESTAMP,
    "ended_at": _TIMESTAMP,
    "active_seconds": pa.int64(),
    "wall_seconds": pa.int64(),
    "user_messages": pa.int64(),
    "assistant_messages": pa.int64(),
    "tool_calls": pa.int64(),
    "tool_errors": pa.int64(),
    "skill_invocations": pa.int64(),
    "subagent_dispatches": pa.int64(),
    "mcp_calls": pa.int64(),
    "slash_commands": pa.int64(),
    "distinct_tools": pa.list_(pa.string()),
    "distinct_skills": pa.list_(pa.string()),
    "primary_model": pa.string(),
    "input_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "cache_read_tokens": pa.int64(),
    "cache_creation_tokens": pa.int64(),
    "cost_usd": pa.float64(),
}
"""The fields of a :class:`~service.ingest.accounting.SessionSummary` the table keeps."""
_COLUMNS = {
    "key": pa.string(),
    "user_id": pa.string(),
    "session_file": pa.string(),
    **_SUMMARY_COLUMNS,
    "kept": pa.binary(),
    "project": pa.string(),
    "project_key": pa.string(),
}
"""The sessions table's columns, in its order."""
_LISTS = ("distinct_tools", "distinct_skills")


def _row(record: SessionRecord) -> list[object]:
    """A record's values in the table's column order."""
    session, summary = record.session, record.summary
    return [
        session.key,
        session.user_id,
        session.session_file,
        *(getattr(summary, name) for name in _SUMMARY_COLUMNS),
        _encode_kept(record.kept),
        record.project,
        record.project_key,
    ]


def _write_sessions(
    cur: Cursor,
    stored: Mapping[SessionKey, StoredSession],
    written: SessionWrites,
    *,
    bulk_write: bool,
) -> None:
    """Delete the rows that go and write the new ones: many sessions at once (a backfill)
    by deleting every old row and inserting the new ones together, a few by updating each
    row in place (inserting the new)."""
    if bulk_write:
        gone = sorted(session.key for session in stored)
        fresh = list(written.rows.values())
    else:
        gone = sorted(session.key for session in written.gone)
        fresh = [row for session, row in written.rows.items() if session not in stored]
    for where, params in keyed("key", gone):
        cur.execute(f"DELETE FROM sessions WHERE {where}", params)
    rows = [_row(record) for record in fresh]
    bulk.insert(cur, "sessions", _COLUMNS, list(zip(*rows, strict=True)))
    if bulk_write:
        return
    for session, record in written.rows.items():
        current = stored.get(session)
        if current is None:
            continue
        values = dict(zip(_COLUMNS, _row(record), strict=True))
        del values["key"], values["user_id"], values["session_file"]
        # LIST columns are slow for DuckDB to update: only when they changed
        for name in _LISTS:
            if values[name] == getattr(current, name):
                del values[name]
        cur.execute(
            f"UPDATE sessions SET {', '.join(f'{name} = ?' for name in values)} WHERE key = ?",
            [*values.values(), session.key],
        )
