"""``usage_buckets``: each user's winning usage entries summed per 15-minute UTC bucket,
session and model, with the session's project (migration 0004 describes the table).

Ingest keeps it in the same transaction as the entries (:func:`apply_changes`, from the
batch's :class:`~service.store.ingest.WinnerChange` list, and :func:`move_projects` when a
session's project changes); :func:`rebuild` sums it again from ``usage_entries`` (the
migration that made it, and the tests that check the two agree). The tokens answer reads
it instead of the entries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from typing import TYPE_CHECKING

import msgspec
import pyarrow as pa

from service.store import keyed, one_of

if TYPE_CHECKING:
    from service.store import Cursor
    from service.store.ingest import WinnerChange

BUCKET_US = 15 * 60 * 1_000_000
_EXACT = Context(prec=60)
_ZERO = Decimal("0E-12")
SMALL = 8
"""Up to this many rows change by one statement each; more go by Arrow tables."""

Key = tuple[str, datetime, str, str | None]  # user id, bucket, session file, model


class Sums(msgspec.Struct, array_like=True, gc=False):
    """A bucket row's sums, or what a batch adds to them."""

    entries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost: Decimal = _ZERO
    unpriced: int = 0

    def add(self, change: WinnerChange) -> None:
        sign = change.sign
        self.entries += sign
        self.input_tokens += sign * change.input_tokens
        self.output_tokens += sign * change.output_tokens
        self.cache_read_tokens += sign * change.cache_read_tokens
        self.cache_creation_tokens += sign * change.cache_creation_tokens
        if change.cost is None:
            self.unpriced += sign
        elif sign > 0:
            self.cost = _EXACT.add(self.cost, change.cost)
        else:
            self.cost = _EXACT.subtract(self.cost, change.cost)

    def plus(self, other: Sums) -> Sums:
        return Sums(
            self.entries + other.entries,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_creation_tokens + other.cache_creation_tokens,
            _EXACT.add(self.cost, other.cost),
            self.unpriced + other.unpriced,
        )

    def values(self) -> list[object]:
        return [getattr(self, name) for name in _SUMS]

    def __bool__(self) -> bool:
        return any(self.values())


_SUMS = (
    "entries",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cost",
    "unpriced",
)
_COLUMNS = ("bucket_key", "user_id", "bucket", "session_file", "model", "project_key", *_SUMS)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bucket_of(ts: datetime) -> datetime:
    """The start of the 15-minute UTC bucket that holds ``ts``."""
    micros = (ts - _EPOCH) // timedelta(microseconds=1)  # integers: exact in every year
    return _EPOCH + timedelta(microseconds=micros // BUCKET_US * BUCKET_US)


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
    cur: Cursor, changes: Sequence[WinnerChange], projects: Mapping[tuple[str, str], str]
) -> None:
    """Add a batch's winner changes to the buckets. ``projects`` is the project key of
    each touched session after the batch (a new row takes it; rows of a session whose
    project changed are moved by :func:`move_projects`)."""
    deltas: dict[Key, Sums] = {}
    for change in changes:
        key = (change.user_id, bucket_of(change.ts), change.session_file, change.model)
        sums = deltas.get(key)
        if sums is None:
            sums = deltas[key] = Sums()
        sums.add(change)
    deltas = {k: v for k, v in deltas.items() if v}
    if not deltas:
        return
    keys = {k: bucket_key(*k) for k in deltas}
    found: dict[Key, tuple[int, Sums]] = {}  # a stored row: its rowid and sums
    for where, params in keyed("bucket_key", sorted(set(keys.values())), bulk_type="BIGINT"):
        for row in cur.execute(
            f"SELECT rowid, user_id, bucket, session_file, model, {', '.join(_SUMS)}"
            f" FROM usage_buckets WHERE {where}",
            params,
        ).fetchall():
            key = (row[1], row[2].astimezone(UTC), row[3], row[4])
            if key in deltas:
                found[key] = (row[0], Sums(*row[5:]))

    key_of = {rowid: key for key, (rowid, _) in found.items()}
    updates: list[tuple[int, Sums]] = []  # rowid, new sums (entries 0: the row goes)
    inserts: list[tuple[Key, Sums]] = []
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
    if len(kept) > SMALL:  # many at once (a backfill): delete them and insert them again
        gone += [rowid for rowid, _ in kept]
        inserts += [(key_of[rowid], sums) for rowid, sums in kept]
        kept = []
    for where, params in keyed("rowid", sorted(gone)):
        cur.execute(f"DELETE FROM usage_buckets WHERE {where}", params)
    for rowid, sums in kept:
        cur.execute(
            f"UPDATE usage_buckets SET {', '.join(f'{name} = ?' for name in _SUMS)}"
            " WHERE rowid = ?",
            [*sums.values(), rowid],
        )
    _insert(cur, inserts, projects, keys)


def _insert(
    cur: Cursor,
    rows: list[tuple[Key, Sums]],
    projects: Mapping[tuple[str, str], str],
    keys: Mapping[Key, int],
) -> None:
    if not rows:
        return
    values = [
        [keys[key], *key, projects.get((key[0], key[2]), ""), *sums.values()] for key, sums in rows
    ]
    if len(values) <= SMALL:
        row = f"({', '.join('?' * len(_COLUMNS))})"
        cur.execute(
            f"INSERT INTO usage_buckets ({', '.join(_COLUMNS)}) VALUES"
            f" {', '.join([row] * len(values))}",
            [v for value in values for v in value],
        )
        return
    columns = list(zip(*values, strict=True))
    types = [
        pa.int64(),
        pa.string(),
        pa.timestamp("us", tz="UTC"),
        pa.string(),
        pa.string(),
        pa.string(),
        *[pa.int64()] * 5,
        pa.decimal128(38, 12),
        pa.int64(),
    ]
    table = pa.table(
        {
            name: pa.array(column, type)
            for name, column, type in zip(_COLUMNS, columns, types, strict=True)
        }
    )
    cur.register("new_buckets", table)
    try:
        cur.execute(
            f"INSERT INTO usage_buckets ({', '.join(_COLUMNS)})"
            f" SELECT * FROM new_buckets ORDER BY user_id, bucket"
        )
    finally:
        cur.unregister("new_buckets")


def move_projects(cur: Cursor, moves: Iterable[tuple[str, str, str]]) -> None:
    """Give the buckets of sessions whose project changed their new project key:
    (user id, session file, new key). Rare (a subagent file read before its parent, a file
    read again whose first cwd changed), so a scan of the table is fine."""
    by_key: dict[tuple[str, str], list[str]] = {}
    for user_id, session_file, project_key in moves:
        by_key.setdefault((user_id, project_key), []).append(session_file)
    for (user_id, project_key), session_files in sorted(by_key.items()):
        where, params = one_of("session_file", sorted(session_files))
        cur.execute(
            f"UPDATE usage_buckets SET project_key = ? WHERE user_id = ? AND {where}",
            [project_key, user_id, *params],
        )
