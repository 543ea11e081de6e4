"""One ingest batch's transaction: file offsets and states, usage entry copies with their
winner flags, session rows, usage buckets, blocks, audit spool events, errors and user
versions.

:func:`apply_batch` loads what the batch touches, asks :mod:`service.ingest.plan` (and
:mod:`service.ingest.sessions`) what changes, and writes that: the decisions are pure
code there; the reads and writes are here, in :mod:`~service.store.copies`,
:mod:`~service.store.sessions`, :mod:`~service.store.usage` and
:mod:`~service.store.blocks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
import pyarrow as pa

from service.ingest import plan
from service.ingest.batch import TRANSCRIPT_TABS, BatchChanges, FileResult, KnownFile, unreadable
from service.ingest.spool import SpoolResult
from service.store import blocks, bulk, copies, keyed, sessions, usage, users
from service.store.spool import apply_spools

if TYPE_CHECKING:
    from service.store import Cursor

__all__ = ["apply_batch", "known_files", "reset_derived"]

_encode_state = msgspec.msgpack.Encoder().encode


def known_files(cur: Cursor, paths: Sequence[str]) -> dict[str, KnownFile]:
    found = {}
    for where, params in keyed("path", paths):
        for row in cur.execute(
            f"SELECT {', '.join(KnownFile.__struct_fields__)} FROM files WHERE {where}", params
        ).fetchall():
            found[row[0]] = KnownFile(*row)
    return found


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
    deleted = copies.delete_of_files(cur, batch.replaced)
    for copy in deleted:
        batch.touch(copy)
    if batch.saved:
        _save_files(cur, batch.saved, now)
    winners = plan.decide_winners(batch, deleted, copies.stored(cur, batch.message_ids))
    new = [copy for user_copies in batch.copies.values() for copy in user_copies]
    costs = copies.insert(cur, new, winners) if new else []
    copies.flip(cur, winners.flipped)
    changes = winners.changes + plan.gained(new, costs, winners)
    rows = sessions.update(cur, batch, changes)
    usage.apply_changes(cur, plan.bucket_deltas(changes), rows.projects)
    usage.move_projects(cur, rows.moved)
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
