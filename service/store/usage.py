"""``usage_buckets``: each user's winning usage entries summed per 15-minute UTC bucket,
session and model, with the session's project (migration 0004 describes the table).

Ingest keeps it in the same transaction as the entries (:func:`apply_changes`, with what
the batch's winner changes add to each bucket, :func:`service.ingest.plan.bucket_deltas`,
and :func:`move_projects` when a session's project changes); :func:`rebuild` sums it
again from ``usage_entries`` (the migration that made it, and the tests that check the
two agree). The tokens answer reads
it instead of the entries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
import pyarrow as pa

from service.ingest.plan import BucketKey, BucketSums, SessionKey
from service.store import bulk, keyed, one_of

if TYPE_CHECKING:
    from service.store import Cursor

__all__ = ["apply_changes", "bucket_key", "move_projects", "rebuild"]

_SUMS = BucketSums.__struct_fields__
_COLUMNS = {
    "bucket_key": pa.int64(),
    "user_id": pa.string(),
    "bucket": pa.timestamp("us", tz="UTC"),
    "session_file": pa.string(),
    "model": pa.string(),
    "project_key": pa.string(),
    **dict.fromkeys(_SUMS[:5], pa.int64()),
    "cost": pa.decimal128(38, 12),
    "unpriced": pa.int64(),
}


def bucket_key(user_id: str, bucket: datetime, session_file: str, model: str | None) -> int:
    """The indexed key of a bucket row: the first 8 bytes of the MD5 of
    ``user/session/epoch seconds/model`` read little-endian, shifted right by one bit (as
    ``_KEY_SQL`` computes it). Two rows may share a key: readers compare the columns."""
    text = f"{user_id}/{session_file}/{int(bucket.timestamp())}/{model or ''}"
    digest = hashlib.md5(text.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "little") >> 1


_KEY_SQL = (
    "(md5_number_upper(user_id || '/' || session_file || '/'"
    " || (epoch_us(bucket) // 1000000)::VARCHAR || '/' || coalesce(model, '')) >> 1)::BIGINT"
)


def rebuild(cur: Cursor, user_ids: Sequence[str] | None = None) -> None:
    """Sum the buckets of ``user_ids`` (everyone: None) again from their winning entries,
    each with its session's project; rows are written ordered by user and bucket."""
    mine, params = ("true", []) if user_ids is None else one_of("user_id", list(user_ids))
    cur.execute(f"DELETE FROM usage_buckets WHERE {mine}", params)
    where = "true" if user_ids is None else one_of("e.user_id", list(user_ids))[0]
    cur.execute(
        f"""
        INSERT INTO usage_buckets ({", ".join(_COLUMNS)})
        SELECT {_KEY_SQL}, *
        FROM (
            SELECT e.user_id, time_bucket(INTERVAL 15 MINUTE, e.ts) AS bucket, e.session_file,
                   e.model, coalesce(any_value(s.project_key), '') AS project_key,
                   count(*), sum(e.input_tokens), sum(e.output_tokens),
                   sum(e.cache_read_tokens), sum(e.cache_creation_tokens),
                   coalesce(sum(e.cost_usd::DECIMAL(38, 12)), 0),
                   count(*) FILTER (WHERE e.cost_usd IS NULL)
            FROM usage_entries e
            LEFT JOIN sessions s ON s.user_id = e.user_id AND s.session_file = e.session_file
            WHERE e.winner AND {where}
            GROUP BY e.user_id, bucket, e.session_file, e.model
        )
        ORDER BY user_id, bucket, session_file, model
        """,
        params,
    )


def apply_changes(
    cur: Cursor, deltas: Mapping[BucketKey, BucketSums], projects: Mapping[SessionKey, str]
) -> None:
    """Add a batch's bucket deltas to the buckets. ``projects`` is the project key of each
    touched session after the batch (a new row takes it; rows of a session whose project
    changed are moved by :func:`move_projects`)."""
    if not deltas:
        return
    keys = {k: bucket_key(k.user_id, k.bucket, k.session_file, k.model) for k in deltas}
    found: dict[BucketKey, tuple[int, BucketSums]] = {}  # a stored row: its rowid and sums
    for where, params in keyed("bucket_key", sorted(set(keys.values())), bulk_type="BIGINT"):
        for row in cur.execute(
            f"SELECT rowid, user_id, bucket, session_file, model, {', '.join(_SUMS)}"
            f" FROM usage_buckets WHERE {where}",
            params,
        ).fetchall():
            key = BucketKey(row[1], row[2].astimezone(UTC), row[3], row[4])
            if key in deltas:
                found[key] = (row[0], BucketSums(*row[5:]))

    key_of = {rowid: key for key, (rowid, _) in found.items()}
    updates: list[tuple[int, BucketSums]] = []  # rowid, new sums (entries 0: the row goes)
    inserts: list[tuple[BucketKey, BucketSums]] = []
    for key, delta in deltas.items():
        stored = found.get(key)
        if stored is None:
            if delta.entries <= 0:
                raise AssertionError(f"bucket {key} loses entries it never had: {delta}")
            inserts.append((key, delta))
            continue
        rowid, sums = stored
        updates.append((rowid, sums.plus(delta)))

    gone = [rowid for rowid, sums in updates if sums.entries == 0]
    kept = [(rowid, sums) for rowid, sums in updates if sums.entries != 0]
    if len(kept) > bulk.FEW:  # many at once (a backfill): delete them and insert them again
        gone += [rowid for rowid, _ in kept]
        inserts += [(key_of[rowid], sums) for rowid, sums in kept]
        kept = []
    for where, params in keyed("rowid", sorted(gone)):
        cur.execute(f"DELETE FROM usage_buckets WHERE {where}", params)
    for rowid, sums in kept:
        cur.execute(
            f"UPDATE usage_buckets SET {', '.join(f'{name} = ?' for name in _SUMS)}"
            " WHERE rowid = ?",
            [*msgspec.structs.astuple(sums), rowid],
        )
    rows = [
        [
            keys[key],
            key.user_id,
            key.bucket,
            key.session_file,
            key.model,
            projects.get(SessionKey(key.user_id, key.session_file), ""),
            *msgspec.structs.astuple(sums),
        ]
        for key, sums in inserts
    ]
    bulk.insert(
        cur, "usage_buckets", _COLUMNS, list(zip(*rows, strict=True)), order_by="user_id, bucket"
    )


def move_projects(cur: Cursor, moves: Mapping[SessionKey, str]) -> None:
    """Give the buckets of sessions whose project changed their new project key. Rare (a
    subagent file read before its parent, a file read again whose first cwd changed), so a
    scan of the table is fine."""
    by_key: dict[tuple[str, str], list[str]] = {}
    for session, project_key in moves.items():
        by_key.setdefault((session.user_id, project_key), []).append(session.session_file)
    for (user_id, project_key), session_files in sorted(by_key.items()):
        where, params = one_of("session_file", sorted(session_files))
        cur.execute(
            f"UPDATE usage_buckets SET project_key = ? WHERE user_id = ? AND {where}",
            [project_key, user_id, *params],
        )
