"""The writes of one ingest batch, in one transaction: file offsets and states, usage
entry copies with their winner flags, session rows, usage buckets, blocks, audit spool
events, errors and user versions.

Each step loads what the batch touches, asks :mod:`service.ingest.plan` what changes, and
writes that: the decisions (winners, flips, session sums, aggregate deltas) are pure code
there, the reads and writes are here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa

from service.ingest import plan
from service.ingest.accounting import SYNTHETIC_MODEL, ModelSums
from service.ingest.batch import (
    TRANSCRIPT_TABS,
    BatchChanges,
    FileResult,
    KnownFile,
    unreadable,
)
from service.ingest.plan import (
    Batch,
    Kept,
    NewCopy,
    SessionKey,
    SessionPlan,
    SessionRow,
    SessionRows,
    StoredCopy,
    StoredSession,
)
from service.ingest.pricing import cost_usd
from service.ingest.spool import SpoolResult
from service.ingest.transcript import TranscriptState, UsageEntry
from service.store import blocks, bulk, keyed, one_of, usage, users
from service.store.spool import apply_spools

if TYPE_CHECKING:
    from service.store import Cursor

__all__ = ["apply_batch", "known_files", "message_key", "reset_derived"]

_state_decoder = msgspec.msgpack.Decoder(TranscriptState)
_encode_state = msgspec.msgpack.Encoder().encode
_kept_decoder = msgspec.msgpack.Decoder(Kept)
_encode_kept = msgspec.msgpack.Encoder(decimal_format="string").encode


def known_files(cur: Cursor, paths: Sequence[str]) -> dict[str, KnownFile]:
    found = {}
    for where, params in keyed("path", paths):
        for r in cur.execute(
            "SELECT path, user_id, size, read_offset, fingerprint, state, status FROM files"
            f" WHERE {where}",
            params,
        ).fetchall():
            found[r[0]] = KnownFile(
                path=r[0],
                user_id=r[1],
                size=r[2],
                read_offset=r[3],
                fingerprint=r[4],
                state=r[5],
                status=r[6],
            )
    return found


def message_key(user_id: str, message_id: str) -> int:
    """The indexed key of one user's response: the first 8 bytes of the MD5 of
    ``user_id/message_id`` read little-endian, shifted right by one bit to fit a BIGINT
    (what migration 0002 computes in SQL). Two responses may share a key: readers compare
    the ids too."""
    digest = hashlib.md5(f"{user_id}/{message_id}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def apply_batch(
    cur: Cursor, results: Sequence[FileResult], spools: Sequence[SpoolResult] = ()
) -> BatchChanges:
    """Store a batch of read files and bring every derived row they touch up to date.

    Dedup is redone only for the responses (``message.id``) the batch touched, over all
    of the user's copies of them, so the winner never depends on arrival order. Each
    touched session's row keeps per-model sums of its winners; the batch adds the winners
    it brings and those that now win, and takes away those that now lose. A session is
    summed again instead (a scan of ``usage_entries``) when that cannot be exact: a file
    read again from the start, a row written before migration 0002, a changed session id,
    or a lost winner that may have been a model's earliest response. An append of new
    lines, or of the rest of a response already begun, is found and written by
    one-column keys only, so it costs about the same on a large database as on an empty
    one. The winners gained and lost are made once, as a list of
    :class:`~service.ingest.plan.WinnerChange`, and every table derived from winning
    entries is updated from that list. Audit spool events are stored once by id. Returns
    the new version of every user whose data changed, with the tabs that changed for them.
    """
    now = datetime.now(UTC)
    batch = plan.sort_batch(results)
    for failed in batch.failed:
        _record_error(cur, failed, now)
    deleted = _delete_copies(cur, batch.replaced)
    for copy in deleted:
        batch.touch(copy)
    if batch.saved:
        _save_files(cur, batch.saved, now)
    winners = plan.decide_winners(batch, deleted, _stored_copies(cur, batch.message_ids))
    copies = [copy for user_copies in batch.copies.values() for copy in user_copies]
    costs = _insert_copies(cur, copies, winners) if copies else []
    for where, params in keyed("rowid", winners.flipped):
        cur.execute(f"UPDATE usage_entries SET winner = NOT winner WHERE {where}", params)
    changes = winners.changes + plan.gained(copies, costs, winners)
    sessions = _update_sessions(cur, batch, changes)
    usage.apply_changes(cur, plan.bucket_deltas(changes), sessions.projects)
    usage.move_projects(cur, sessions.moved)
    blocks.refresh(cur, plan.block_spans(changes))
    tabs_changed = {user_id: set(TRANSCRIPT_TABS) for user_id in batch.users}
    for user_id, tabs in apply_spools(cur, spools).items():
        tabs_changed.setdefault(user_id, set()).update(tabs)
    versions = users.bump_versions(cur, set(tabs_changed))
    return BatchChanges(versions=versions, changed=tabs_changed)


# -- files ---------------------------------------------------------------------------------------


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


_FILE_COLUMNS = {
    "user_id": pa.string(),
    "size": pa.int64(),
    "read_offset": pa.int64(),
    "fingerprint": pa.string(),
    "state": pa.binary(),
    "status": pa.string(),
    "error": pa.string(),
    "lines": pa.int64(),
    "bad_lines": pa.int64(),
    "processed_at": pa.timestamp("us", tz="UTC"),
    "path": pa.string(),
    "name": pa.string(),
    "session_file": pa.string(),
    "is_subagent": pa.bool_(),
    "first_seen_at": pa.timestamp("us", tz="UTC"),
}
_FILE_READ = list(_FILE_COLUMNS)[:10]
"""What a read sets in a file's row (the rest stays as first seen)."""
_FILE_UPSERT = "ON CONFLICT (path) DO UPDATE SET " + ", ".join(
    f"{name} = excluded.{name}" for name in _FILE_READ
)


def _save_files(cur: Cursor, saved: list[FileResult], now: datetime) -> None:
    """Save each read file's offset, fingerprint, state and counts. A few files read before
    are updated (a third of an upsert's cost); the rest, and a file whose row is somehow
    gone, are upserted."""
    rows = []
    for result in saved:
        state = result.state
        assert state is not None
        error = unreadable(state)
        read = [
            result.user_id,
            result.size,
            result.read_offset,
            result.fingerprint,
            _encode_state(state),
            "processed" if error is None else "error",
            error,
            state.lines,
            state.bad_lines + state.oversized_lines,
            now,
        ]
        if (
            len(saved) <= bulk.FEW
            and result.stored
            and _updated(
                cur.execute(
                    f"UPDATE files SET {', '.join(f'{name} = ?' for name in _FILE_READ)}"
                    " WHERE path = ?",
                    [*read, result.path],
                )
            )
        ):
            continue
        rows.append([*read, result.path, result.name, result.session_file, result.is_subagent, now])
    bulk.insert(
        cur, "files", _FILE_COLUMNS, list(zip(*rows, strict=True)), on_conflict=_FILE_UPSERT
    )


def _updated(result: Cursor) -> int:
    """How many rows an UPDATE changed (DuckDB answers it with that count)."""
    row = result.fetchone()
    return int(row[0]) if row else 0


# -- usage entry copies ----------------------------------------------------------------------------

_ENTRY_COLUMNS = (
    "message_id, request_id, session_id, ts, model, input_tokens, output_tokens,"
    " cache_creation_tokens, cache_creation_5m, cache_creation_1h, cache_read_tokens,"
    " is_sidechain, speed, file_name, line_key, user_id, session_file, winner, rowid,"
    " cost_usd::DECIMAL(38, 12)::VARCHAR"
)
"""A stored copy as :func:`_stored_copy` takes it. Its cost comes as the sums in SQL take
it (as text: DuckDB hands 9,000 of those back in half the time of as many decimals), so a
session's kept sums change by exactly what summing its winners again would."""


def _stored_copy(r: tuple[Any, ...]) -> StoredCopy:
    entry = UsageEntry(
        message_id=r[0],
        request_id=r[1],
        session_id=r[2],
        timestamp=r[3].astimezone(UTC),
        model=r[4],
        input_tokens=r[5],
        output_tokens=r[6],
        cache_creation_tokens=r[7],
        cache_creation_5m=r[8],
        cache_creation_1h=r[9],
        cache_read_tokens=r[10],
        is_sidechain=r[11],
        speed=r[12],
        file_name=r[13],
        line_key=r[14],
    )
    return StoredCopy(
        rowid=r[18],
        user_id=r[15],
        session_file=r[16],
        entry=entry,
        winner=r[17],
        cost=_decimal(r[19]),
    )


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _delete_copies(cur: Cursor, paths: list[str]) -> list[StoredCopy]:
    """Delete the copies of files read again from the start; returns them."""
    if not paths:
        return []
    where, params = one_of("file_path", paths)
    rows = cur.execute(
        f"DELETE FROM usage_entries WHERE {where} RETURNING {_ENTRY_COLUMNS}", params
    ).fetchall()
    return [_stored_copy(row) for row in rows]


def _stored_copies(cur: Cursor, message_ids: Mapping[str, set[str]]) -> dict[str, list[StoredCopy]]:
    """Each user's stored copies of the given responses, found by ``message_key``."""
    keys = sorted({message_key(u, m) for u, mids in message_ids.items() for m in mids})
    found: dict[str, list[StoredCopy]] = {}
    for where, params in keyed("message_key", keys, bulk_type="BIGINT"):
        for row in cur.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM usage_entries WHERE {where}", params
        ).fetchall():
            copy = _stored_copy(row)
            if copy.entry.message_id in message_ids.get(copy.user_id, ()):
                found.setdefault(copy.user_id, []).append(copy)
    return found


_COPY_COLUMNS = {
    "user_id": pa.string(),
    "file_path": pa.string(),
    "line_key": pa.string(),
    "file_name": pa.string(),
    "session_file": pa.string(),
    "message_id": pa.string(),
    "request_id": pa.string(),
    "session_id": pa.string(),
    "ts": pa.timestamp("us", tz="UTC"),
    "model": pa.string(),
    "input_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "cache_read_tokens": pa.int64(),
    "cache_creation_tokens": pa.int64(),
    "cache_creation_5m": pa.int64(),
    "cache_creation_1h": pa.int64(),
    "is_sidechain": pa.bool_(),
    "speed": pa.string(),
    "cost_usd": pa.float64(),
    "winner": pa.bool_(),
    "message_key": pa.int64(),
}


def _insert_copies(
    cur: Cursor, copies: Sequence[NewCopy], winners: plan.Winners
) -> list[Decimal | None]:
    """Insert the new copies, each with its winner flag; returns each one's exact cost, in
    order.

    The insert hands back each cost with its exact value, matched by the cost itself (see
    ``_exact_costs``), so copies that share a line key (or anything else) cannot mix up
    theirs."""
    entries = [c.entry for c in copies]
    floats = [cost_usd(e) for e in entries]
    returned = bulk.insert(
        cur,
        "usage_entries",
        _COPY_COLUMNS,
        [
            [c.user_id for c in copies],
            [c.file_path for c in copies],
            [e.line_key for e in entries],
            [e.file_name for e in entries],
            [c.session_file for c in copies],
            [e.message_id for e in entries],
            [e.request_id for e in entries],
            [e.session_id for e in entries],
            [e.timestamp for e in entries],
            [e.model for e in entries],
            [e.input_tokens for e in entries],
            [e.output_tokens for e in entries],
            [e.cache_read_tokens for e in entries],
            [e.cache_creation_tokens for e in entries],
            [e.cache_creation_5m for e in entries],
            [e.cache_creation_1h for e in entries],
            [e.is_sidechain for e in entries],
            [e.speed for e in entries],
            floats,
            [winners.wins(e) for e in entries],
            [
                None if c.entry.message_id is None else message_key(c.user_id, c.entry.message_id)
                for c in copies
            ],
        ],
        few=4 * bulk.FEW,
        returning="cost_usd, cost_usd::DECIMAL(38, 12)::VARCHAR",
    )
    return _exact_costs(floats, returned)


def _exact_costs(
    floats: list[float | None], returned: list[tuple[Any, ...]]
) -> list[Decimal | None]:
    """Each copy's exact cost, in order, from the (cost, exact text) pairs an insert hands
    back: the conversion depends on the cost alone, so each distinct one is read once."""
    exact = {cost: _decimal(text) for cost, text in returned}
    return [None if cost is None else exact[cost] for cost in floats]


# -- sessions ------------------------------------------------------------------------------------


def _update_sessions(
    cur: Cursor, batch: Batch, changes: Sequence[plan.WinnerChange]
) -> SessionRows:
    """Bring the rows of the batch's sessions up to date (:func:`plan.plan_sessions`): load
    their rows and their files' states, sum again those the plan says to, write."""
    if not batch.sessions:
        return SessionRows({}, [], {}, {})
    rows = _stored_sessions(cur, batch.sessions)
    members = plan.members(batch.sessions, rows, batch.saved)
    _add_unlisted(cur, members, [s for s, row in rows.items() if row.kept is None])
    states = {r.path: r.state for r in batch.saved if r.state is not None}
    states.update(
        _stored_states(cur, {p for paths in members.values() for p in paths} - states.keys())
    )
    planned = plan.plan_sessions(members, states, rows, changes, batch.resummed)
    written = plan.session_rows(planned, _sum_again(cur, planned), states, rows, batch.sessions)
    _write_sessions(cur, rows, written, bulk_write=len(batch.sessions) > bulk.FEW)
    return written


def _stored_sessions(
    cur: Cursor, sessions: Iterable[SessionKey]
) -> dict[SessionKey, StoredSession]:
    by_key = {session.key: session for session in sessions}
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
            if session_ids[row[0]] != row[1]:
                continue  # another session's id, listed for a session beside it
            found.setdefault(SessionKey(user_id, row[0]), []).append(
                ModelSums(
                    model=row[2],
                    entries=int(row[3]),
                    input_tokens=int(row[4]),
                    output_tokens=int(row[5]),
                    cache_read_tokens=int(row[6]),
                    cache_creation_tokens=int(row[7]),
                    responses=int(row[8]),
                    first_seen=row[9],
                    cost=row[10].quantize(_TWELVE_PLACES),
                    unpriced=int(row[11]),
                    priced_tokens=int(row[12]),
                )
            )
    return found


_SESSION_LISTS = ("distinct_tools", "distinct_skills")
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_SESSION_COLUMNS = {
    "key": pa.string(),
    "user_id": pa.string(),
    "session_file": pa.string(),
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
    "kept": pa.binary(),
    "project": pa.string(),
    "project_key": pa.string(),
}
"""The sessions table's columns, in its order: :class:`~service.ingest.plan.SessionRow`'s."""


def _values(row: SessionRow, names: Iterable[str]) -> list[object]:
    return [_encode_kept(row.kept) if name == "kept" else getattr(row, name) for name in names]


def _write_sessions(
    cur: Cursor,
    stored: Mapping[SessionKey, StoredSession],
    written: SessionRows,
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
    bulk.insert(
        cur,
        "sessions",
        _SESSION_COLUMNS,
        [[_values(row, (name,))[0] for row in fresh] for name in _SESSION_COLUMNS],
    )
    if bulk_write:
        return
    for session, row in written.rows.items():
        current = stored.get(session)
        if current is None:
            continue
        # LIST columns cost DuckDB about a millisecond to update: only when they changed
        names = [
            name
            for name in list(_SESSION_COLUMNS)[3:]
            if name not in _SESSION_LISTS or getattr(row, name) != getattr(current, name)
        ]
        cur.execute(
            f"UPDATE sessions SET {', '.join(f'{name} = ?' for name in names)} WHERE key = ?",
            [*_values(row, names), row.key],
        )


def reset_derived(cur: Cursor) -> dict[str, int]:
    """Forget everything read from transcripts, so ``reprocess`` rebuilds it from the files.

    Returns the new version of every user who had sessions: their numbers change now, even
    those whose files are all gone and whom the re-read will not touch."""
    had_sessions = [
        str(r[0]) for r in cur.execute("SELECT DISTINCT user_id FROM sessions").fetchall()
    ]
    cur.execute("DELETE FROM usage_entries")
    cur.execute("DELETE FROM usage_buckets")
    cur.execute("DELETE FROM sessions")
    blocks.forget(cur)
    cur.execute(
        "UPDATE files SET read_offset = 0, fingerprint = NULL, state = NULL, status = 'pending',"
        " error = NULL, lines = 0, bad_lines = 0"
    )
    return users.bump_versions(cur, had_sessions)
