"""The writes of one ingest batch, in one transaction: file offsets and states, usage
entry copies with their winner flags, session rows, audit spool events, errors and user
versions."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Context, Decimal
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
from service.ingest.transcript import TranscriptState, UsageEntry, project_key, subagent_parent
from service.store import blocks, keyed, one_of, usage, users
from service.store.spool import apply_spools

if TYPE_CHECKING:
    from service.store import Cursor

_state_decoder = msgspec.msgpack.Decoder(TranscriptState)
encode_state = msgspec.msgpack.Encoder().encode

_COPY_COLUMNS = (
    "user_id, file_path, line_key, file_name, session_file, message_id, request_id, session_id,"
    " ts, model, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,"
    " cache_creation_5m, cache_creation_1h, is_sidechain, speed, cost_usd, winner, message_key"
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
    error: str | None = None
    replaces: bool = False  # read from the start over an earlier read: its copies go
    stored: bool = False  # the store has a row for this file already
    unchanged: bool = False  # nothing new since the last read: nothing to store or tell
    bytes_read: int = 0  # what this read added, for progress and reports
    lines_read: int = 0
    bad_lines_read: int = 0


TRANSCRIPT_TABS = frozenset({"sessions", "tokens", "blocks"})


class BatchChanges(msgspec.Struct):
    """What a committed batch changed: each touched user's new version, and the dashboard
    tabs whose data changed for them (every user in ``versions`` is in ``changed``)."""

    versions: dict[str, int]
    changed: dict[str, set[str]]


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


def message_key(user_id: str, message_id: str) -> int:
    """The indexed key of one user's response: the first 8 bytes of the MD5 of
    ``user_id/message_id`` read little-endian, shifted right by one bit to fit a BIGINT
    (what migration 0002 computes in SQL). Two responses may share a key: readers compare
    the ids too."""
    digest = hashlib.md5(f"{user_id}/{message_id}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class _StoredCopy(msgspec.Struct):
    rowid: int
    entry: UsageEntry
    session_file: str
    winner: bool
    cost: Decimal | None  # exact, as the sums take it


Copy = tuple[UsageEntry, str, str, str]  # entry, user id, file path, session file
Session = tuple[str, str]  # user id, session file


class WinnerChange(msgspec.Struct, frozen=True, gc=False):
    """One winning copy that a batch adds (``sign`` 1) or takes away (``sign`` -1).

    :func:`apply_batch` makes the list of a batch's changes once, after dedup and before
    anything derived is written, and every derived table that sums winning entries is
    brought up to date from it alone: adding each change's counts times its ``sign`` to
    what the table held gives exactly what summing the winners of ``usage_entries`` again
    would. It holds:

    - a new copy that wins (or has no ``message.id``: always counted), +1;
    - a stored copy whose winner flag flips, +1 when it now wins, -1 when it stops;
    - a winning copy deleted because its file is read again from the start, -1 (its
      lines come back as new copies, +1, in the same batch).

    ``cost`` is the copy's exact cost (DECIMAL(38, 12) as SQL sums it; None: unpriced).
    ``ts`` is the winning copy's timestamp in UTC, the one TRANSCRIPTS.md counts it at.
    """

    user_id: str
    session_file: str  # the session (its own transcript's name) of the copy's file
    sign: int  # 1 or -1
    entry: UsageEntry
    cost: Decimal | None

    @property
    def ts(self) -> datetime:
        return self.entry.timestamp

    @property
    def model(self) -> str | None:
        return self.entry.model

    @property
    def input_tokens(self) -> int:
        return self.entry.input_tokens

    @property
    def output_tokens(self) -> int:
        return self.entry.output_tokens

    @property
    def cache_read_tokens(self) -> int:
        return self.entry.cache_read_tokens

    @property
    def cache_creation_tokens(self) -> int:
        return self.entry.cache_creation_tokens

    @property
    def total_tokens(self) -> int:
        return self.entry.total_tokens


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
    one. The winners gained and lost are made once, as a list of :class:`WinnerChange`,
    and every table derived from winning entries is updated from that list. Audit spool
    events are stored once by id. Returns the new version of every user whose data
    changed, with the tabs that changed for them.
    """
    now = datetime.now(UTC)
    touched_users: set[str] = set()
    touched_sessions: set[Session] = set()
    resummed: set[Session] = set()  # sessions of files read again from the start
    message_ids: dict[str, set[str]] = {}
    new_copies: dict[str, list[Copy]] = {}  # by user

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
        if result.replaces:
            resummed.add((user_id, result.session_file))
        copies = new_copies.setdefault(user_id, [])
        mids = message_ids.setdefault(user_id, set())
        for entry in result.entries:
            copies.append((entry, user_id, result.path, result.session_file))
            if entry.message_id is not None:
                mids.add(entry.message_id)
        saved.append(result)
    winner_changes: list[WinnerChange] = []
    replaced = sorted(r.path for r in saved if r.replaces)
    if replaced:
        where, params = one_of("file_path", replaced)
        gone = cur.execute(
            f"DELETE FROM usage_entries WHERE {where}"
            f" RETURNING {_ENTRY_COLUMNS}, user_id, winner, {_EXACT_COST}",
            params,
        ).fetchall()
        for row, (entry, _, session_file) in zip(gone, _entries(gone), strict=True):
            user_id, winner, cost = row[-3:]
            if entry.message_id is not None:
                message_ids.setdefault(user_id, set()).add(entry.message_id)
            if winner:
                winner_changes.append(
                    WinnerChange(user_id, session_file, -1, entry, _decimal(cost))
                )
    if saved:
        _save_files(cur, saved, now)

    winners: set[int] = set()  # id() of the winning new copies
    flipped: list[int] = []  # rowids of stored copies whose winner flag changes
    stored = _stored_copies(cur, message_ids)
    for user_id, mids in message_ids.items():
        if not mids:
            continue
        old = stored.get(user_id, [])
        fresh = [c[0] for c in new_copies.get(user_id, ()) if c[0].message_id is not None]
        won = {id(w) for w in dedup([c.entry for c in old] + fresh)}
        winners.update(id(entry) for entry in fresh if id(entry) in won)
        for copy in old:
            if (id(copy.entry) in won) != copy.winner:
                flipped.append(copy.rowid)
                touched_sessions.add((user_id, copy.session_file))
                sign = -1 if copy.winner else 1
                winner_changes.append(
                    WinnerChange(user_id, copy.session_file, sign, copy.entry, copy.cost)
                )

    all_copies = [c for copies in new_copies.values() for c in copies]
    costs = _insert_copies(cur, all_copies, winners) if all_copies else []
    for where, params in keyed("rowid", flipped):
        cur.execute(f"UPDATE usage_entries SET winner = NOT winner WHERE {where}", params)
    for (entry, user_id, _, session_file), cost in zip(all_copies, costs, strict=True):
        if entry.message_id is None or id(entry) in winners:
            winner_changes.append(WinnerChange(user_id, session_file, 1, entry, cost))
    projects = _summarize(cur, touched_sessions, saved, winner_changes, resummed)
    usage.apply_changes(cur, winner_changes, {s: after for s, (_, after) in projects.items()})
    usage.move_projects(
        cur,
        (
            (user_id, session_file, after)
            for (user_id, session_file), (before, after) in projects.items()
            if before is not None and before != after
        ),
    )
    blocks.refresh(cur, blocks.spans((c.user_id, c.ts) for c in winner_changes))
    tabs_changed = {user_id: set(TRANSCRIPT_TABS) for user_id in touched_users}
    for user_id, tabs in apply_spools(cur, spools).items():
        tabs_changed.setdefault(user_id, set()).update(tabs)
    versions = users.bump_versions(cur, set(tabs_changed))
    return BatchChanges(versions=versions, changed=tabs_changed)


def _stored_copies(cur: Cursor, message_ids: dict[str, set[str]]) -> dict[str, list[_StoredCopy]]:
    """Each user's stored copies of the given responses, found by ``message_key``."""
    keys = sorted({message_key(u, m) for u, mids in message_ids.items() for m in mids})
    found: dict[str, list[_StoredCopy]] = {}
    for where, params in keyed("message_key", keys, bulk_type="BIGINT"):
        rows = cur.execute(
            f"SELECT {_ENTRY_COLUMNS}, user_id, winner, rowid, {_EXACT_COST}"
            f" FROM usage_entries WHERE {where}",
            params,
        ).fetchall()
        for row, (entry, _, session_file) in zip(rows, _entries(rows), strict=True):
            user_id, winner, rowid, cost = row[-4:]
            if entry.message_id in message_ids.get(user_id, ()):
                copy = _StoredCopy(rowid, entry, session_file, winner, _decimal(cost))
                found.setdefault(user_id, []).append(copy)
    return found


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


_FILE_UPDATES = ", ".join(
    f"{name} = excluded.{name}"
    for name in (
        "user_id",
        "size",
        "read_offset",
        "fingerprint",
        "state",
        "status",
        "error",
        "lines",
        "bad_lines",
        "processed_at",
    )
)
"""A file read again: what its row takes from the new read (the rest stays as first seen)."""


def _updated(result: Cursor) -> int:
    """How many rows an UPDATE changed (DuckDB answers it with that count)."""
    row = result.fetchone()
    return int(row[0]) if row else 0


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
            # A file read before is updated (a third of an upsert's cost); one that is
            # new, or whose row is somehow gone, is inserted.
            if not result.stored or not _updated(
                cur.execute(
                    "UPDATE files SET user_id = ?, size = ?, read_offset = ?, fingerprint = ?,"
                    " state = ?, status = ?, error = ?, lines = ?, bad_lines = ?,"
                    " processed_at = ? WHERE path = ?",
                    values,
                )
            ):
                cur.execute(
                    "INSERT INTO files (user_id, size, read_offset, fingerprint, state, status,"
                    " error, lines, bad_lines, processed_at, path, name, session_file,"
                    " is_subagent, first_seen_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    f" ON CONFLICT (path) DO UPDATE SET {_FILE_UPDATES}",
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
            f"""
            INSERT INTO files (path, user_id, name, session_file, is_subagent, size, read_offset,
                               fingerprint, state, status, error, lines, bad_lines,
                               first_seen_at, processed_at)
            SELECT path, user_id, name, session_file, is_subagent, size, read_offset,
                   fingerprint, state, CASE WHEN error IS NULL THEN 'processed' ELSE 'error' END,
                   error, lines, bad_lines, $now, $now
            FROM saved_files
            ON CONFLICT (path) DO UPDATE SET {_FILE_UPDATES}
            """,
            {"now": now},
        )
    finally:
        cur.unregister("saved_files")


_EXACT_COST = "cost_usd::DECIMAL(38, 12)::VARCHAR"
"""A copy's cost as the sums in SQL take it (as text: DuckDB hands 9,000 of those back in
half the time of as many decimals), so a session's kept sums change by exactly what
summing its winners again would."""


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _insert_copies(cur: Cursor, copies: list[Copy], winners: set[int]) -> list[Decimal | None]:
    """Insert the new copies, each with its winner flag (copies without a ``message.id``
    always count); returns each one's exact cost, in order.

    The insert hands back each cost with its exact value, matched by the cost itself (see
    ``_exact_costs``), so copies that share a line key (or anything else) cannot mix up
    theirs."""
    entries = [c[0] for c in copies]
    floats = [cost_usd(e) for e in entries]
    if len(copies) <= 4 * SMALL_BATCH:
        values = []
        for (e, user_id, path, session_file), cost in zip(copies, floats, strict=True):
            message_id = e.message_id
            values += [
                user_id,
                path,
                e.line_key,
                e.file_name,
                session_file,
                message_id,
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
                cost,
                message_id is None or id(e) in winners,
                None if message_id is None else message_key(user_id, message_id),
            ]
        row = f"({', '.join(['?'] * 21)})"
        returned = cur.execute(
            f"INSERT INTO usage_entries ({_COPY_COLUMNS}) VALUES "
            f"{', '.join([row] * len(copies))} RETURNING cost_usd, {_EXACT_COST}",
            values,
        ).fetchall()
        return _exact_costs(floats, returned)
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
            "cost_usd": pa.array(floats, pa.float64()),
            "winner": pa.array(
                [e.message_id is None or id(e) in winners for e in entries], pa.bool_()
            ),
            "message_key": pa.array(
                [
                    None if e.message_id is None else message_key(c[1], e.message_id)
                    for e, c in zip(entries, copies, strict=True)
                ],
                pa.int64(),
            ),
        }
    )
    cur.register("new_copies", table)
    try:
        returned = cur.execute(
            f"INSERT INTO usage_entries ({_COPY_COLUMNS}) SELECT * FROM new_copies"
            f" RETURNING cost_usd, {_EXACT_COST}"
        ).fetchall()
    finally:
        cur.unregister("new_copies")
    return _exact_costs(floats, returned)


def _exact_costs(
    floats: list[float | None], returned: list[tuple[float | None, str | None]]
) -> list[Decimal | None]:
    """Each copy's exact cost, in order, from the (cost, exact text) pairs an insert hands
    back: the conversion depends on the cost alone, so each distinct one is read once."""
    exact = {cost: _decimal(text) for cost, text in dict(returned).items()}
    return [None if cost is None else exact[cost] for cost in floats]


class ModelSums(msgspec.Struct, array_like=True):
    """One model's sums over a session's winning entries, as its row keeps them (in
    ``kept``): ``cost`` is exact, the sum of each priced entry's cost as a DECIMAL(38, 12),
    and the rest are counts, so that adding or taking away an entry gives the very numbers
    summing them all again gives."""

    model: str | None
    entries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    responses: int = 0  # entries that are not <synthetic> notices
    first_seen: datetime | None = None  # earliest timestamp of those
    cost: Decimal = Decimal("0E-12")
    unpriced: int = 0  # entries with no price
    priced_tokens: int = 0  # priced entries with tokens

    def add(self, entry: UsageEntry, cost: Decimal | None, sign: int = 1) -> None:
        self.entries += sign
        self.input_tokens += sign * entry.input_tokens
        self.output_tokens += sign * entry.output_tokens
        self.cache_read_tokens += sign * entry.cache_read_tokens
        self.cache_creation_tokens += sign * entry.cache_creation_tokens
        if entry.model != SYNTHETIC_MODEL:
            self.responses += sign
            if sign > 0 and (self.first_seen is None or entry.timestamp < self.first_seen):
                self.first_seen = entry.timestamp
        if cost is None:
            self.unpriced += sign
        else:
            self.cost = (
                _EXACT.add(self.cost, cost) if sign > 0 else _EXACT.subtract(self.cost, cost)
            )
            self.priced_tokens += sign * (entry.total_tokens > 0)

    def can_lose(self, entry: UsageEntry) -> bool:
        """Whether taking ``entry`` away leaves sums that are still known: not when it may
        have been the earliest response (the next earliest is not kept)."""
        return entry.model == SYNTHETIC_MODEL or (
            self.first_seen is not None and entry.timestamp > self.first_seen
        )

    def totals(self) -> ModelTotals:
        return ModelTotals(
            model=self.model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens,
            cache_creation_tokens=self.cache_creation_tokens,
            responses=self.responses,
            first_seen=self.first_seen,
            cost_usd=float(self.cost),
            unpriced=self.unpriced > 0,
            priced_tokens=self.priced_tokens > 0,
        )


_EXACT = Context(prec=60)  # DECIMAL(38, 12) sums, with room to spare
_TWELVE_PLACES = Decimal("1E-12")  # every kept cost has 12 places, so equal sums encode alike


class Kept(msgspec.Struct, array_like=True):
    """What a session's next update starts from (its row's ``kept`` column): the paths of
    its files that have been read, in summary order, and the per-model sums of its winning
    entries."""

    files: list[str]
    models: list[ModelSums]


_kept_decoder = msgspec.msgpack.Decoder(Kept)
_encode_kept = msgspec.msgpack.Encoder(decimal_format="string").encode


class _SessionRow(msgspec.Struct):
    session_id: str
    distinct_tools: list[str]
    distinct_skills: list[str]
    kept: Kept | None
    project_key: str


def project_of(states: Sequence[TranscriptState]) -> str | None:
    """A session's project: the first ``cwd`` of its own transcript (``states[0]``), else
    of its subagent files in summary order (until the parent file is read), else None."""
    return next((state.cwd for state in states if state.cwd is not None), None)


def _member_order(path: str) -> tuple[bool, str, str]:
    """A session's files in summary order: its own transcript first, then its subagent
    files by name (``summarize`` takes the first state as the session's own)."""
    name = path.rsplit("/", 1)[-1]
    return subagent_parent(name) is not None, name, path


def _summarize(
    cur: Cursor,
    sessions: set[Session],
    saved: Sequence[FileResult],
    winner_changes: Sequence[WinnerChange],
    resummed: set[Session],
) -> dict[Session, tuple[str | None, str]]:
    """Bring the rows of ``sessions`` up to date from their files' states (read now, or
    stored in ``files``; the row's ``kept`` lists the files) and the per-model sums of
    their winning entries: those the row keeps with the batch's changes applied (a
    session's share of ``winner_changes``; a deleted copy's loss only matters to a
    ``resummed`` session, which does not use them), or summed again by
    the database (a scan of ``usage_entries``) for ``resummed`` sessions, rows without
    ``kept``, sessions whose id changed, and those that lost what may have been a model's
    earliest response. Returns each session's project key before (None: it had no row)
    and after the batch ('' when it has no project, or its row goes)."""
    if not sessions:
        return {}
    changes: dict[Session, list[WinnerChange]] = {}
    for change in winner_changes:
        changes.setdefault((change.user_id, change.session_file), []).append(change)
    keys = {
        f"{user_id}/{session_file}": (user_id, session_file) for user_id, session_file in sessions
    }
    rows: dict[str, _SessionRow] = {}
    for where, params in keyed("key", sorted(keys)):
        for key, session_id, tools, skills, kept, project in cur.execute(
            "SELECT key, session_id, distinct_tools, distinct_skills, kept, project_key"
            f" FROM sessions WHERE {where}",
            params,
        ).fetchall():
            rows[key] = _SessionRow(
                session_id,
                tools,
                skills,
                None if kept is None else _kept_decoder.decode(kept),
                project,
            )

    states: dict[str, TranscriptState] = {}
    members: dict[str, set[str]] = {key: set() for key in keys}
    for result in saved:
        assert result.state is not None
        states[result.path] = result.state
        members[f"{result.user_id}/{result.session_file}"].add(result.path)
    unlisted: dict[str, list[str]] = {}  # rows from before the kept column, by user
    for key, row in rows.items():
        if row.kept is None:
            unlisted.setdefault(keys[key][0], []).append(keys[key][1])
        else:
            members[key].update(row.kept.files)
    for user_id, session_files in unlisted.items():
        where, params = one_of("session_file", sorted(session_files))
        for path, session_file in cur.execute(
            f"SELECT path, session_file FROM files WHERE user_id = ? AND {where}"
            " AND state IS NOT NULL",
            [user_id, *params],
        ).fetchall():
            members[f"{user_id}/{session_file}"].add(path)
    unread = sorted({path for paths in members.values() for path in paths} - states.keys())
    for where, params in keyed("path", unread):
        for path, blob in cur.execute(
            f"SELECT path, state FROM files WHERE {where}", params
        ).fetchall():
            if blob is not None:
                states[path] = _state_decoder.decode(blob)

    ordered: dict[str, list[str]] = {}
    sums: dict[str, dict[str | None, ModelSums]] = {}
    to_sum: dict[str, dict[str, str]] = {}  # user -> session file -> session id
    for key, paths in members.items():
        files = sorted((p for p in paths if p in states), key=_member_order)
        if not files:
            continue  # its files are gone from view: the row goes
        ordered[key] = files
        session_id = session_id_of([states[p] for p in files])
        current = rows.get(key)
        if keys[key] in resummed or (
            current is not None and (current.kept is None or current.session_id != session_id)
        ):
            to_sum.setdefault(keys[key][0], {})[keys[key][1]] = session_id
            continue
        by_model = {m.model: m for m in (current.kept.models if current and current.kept else ())}
        if not _apply(by_model, changes.get(keys[key], ()), session_id):
            to_sum.setdefault(keys[key][0], {})[keys[key][1]] = session_id
            continue
        sums[key] = by_model
    for user_id, ids in to_sum.items():
        for (session_file, _), model_sums in _sum_winners(cur, user_id, ids).items():
            sums[f"{user_id}/{session_file}"] = {m.model: m for m in model_sums}

    new_rows: dict[str, dict[str, object]] = {}
    for key, files in ordered.items():
        user_id, session_file = keys[key]
        models = sorted(
            sums.get(key, {}).values(), key=lambda m: (m.model is not None, m.model or "")
        )
        member_states = [states[p] for p in files]
        s = summarize(member_states, [m.totals() for m in models])
        project = project_of(member_states)
        new_rows[key] = {
            "key": key,
            "user_id": user_id,
            "session_file": session_file,
            **{name: getattr(s, name) for name in _SESSION_COLUMNS[3:-3]},
            "kept": _encode_kept(Kept(files=files, models=models)),
            "project": project,
            "project_key": "" if project is None else project_key(project),
        }
    projects: dict[Session, tuple[str | None, str]] = {}
    for key, session in keys.items():
        before = rows[key].project_key if key in rows else None
        after = new_rows[key]["project_key"] if key in new_rows else ""
        projects[session] = (before, str(after))
    if len(keys) > SMALL_BATCH:
        _replace_sessions(cur, sorted(rows), list(new_rows.values()))
        return projects
    for key in sorted((keys.keys() - new_rows.keys()) & rows.keys()):
        cur.execute("DELETE FROM sessions WHERE key = ?", [key])
    for key, values in new_rows.items():
        current = rows.get(key)
        if current is None:
            cur.execute(_SESSION_INSERT, [values[name] for name in _SESSION_COLUMNS])
            continue
        # LIST columns cost DuckDB about a millisecond to update: only when they changed
        names = [
            name
            for name in _SESSION_COLUMNS[3:]
            if name not in _SESSION_LISTS or values[name] != getattr(current, name)
        ]
        cur.execute(
            f"UPDATE sessions SET {', '.join(f'{name} = ?' for name in names)} WHERE key = ?",
            [*(values[name] for name in names), key],
        )
    return projects


def _apply(
    by_model: dict[str | None, ModelSums],
    changes: Iterable[WinnerChange],
    session_id: str,
) -> bool:
    """Apply a session's changes to its kept sums (only entries of the session's own id
    count), losses first; False when the result cannot be known without summing again."""
    changes = list(changes)
    for change in changes:
        entry = change.entry
        if change.sign > 0 or entry.session_id != session_id:
            continue
        model = by_model.get(entry.model)
        if model is None or not model.can_lose(entry):
            return False
        model.add(entry, change.cost, sign=-1)
        if model.entries == 0:
            del by_model[entry.model]
    for change in changes:
        entry = change.entry
        if change.sign > 0 and entry.session_id == session_id:
            model = by_model.get(entry.model)
            if model is None:
                model = by_model[entry.model] = ModelSums(model=entry.model)
            model.add(entry, change.cost)
    return True


def _sum_winners(
    cur: Cursor, user_id: str, session_ids: dict[str, str]
) -> dict[tuple[str, str], list[ModelSums]]:
    """Per-model sums of the winning entries of one user's sessions (``session file ->
    its id``; only entries of the session's own id count: a file may hold lines of other
    sessions, e.g. a resumed chain), summed by the database: a long session has thousands
    of them. A scan of the whole ``usage_entries`` table (25-60 ms at 8.8M rows), so only
    for sessions whose kept sums cannot be brought up to date (see ``apply_batch``)."""
    in_sessions, files = one_of("session_file", sorted(session_ids))
    in_ids, ids = one_of("session_id", sorted(set(session_ids.values())))
    found: dict[tuple[str, str], list[ModelSums]] = {}
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
        found.setdefault((row[0], row[1]), []).append(
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


def _replace_sessions(cur: Cursor, existing: list[str], rows: list[dict[str, object]]) -> None:
    """Many sessions at once (a backfill): delete the old rows, insert the new ones in one
    statement."""
    for where, params in keyed("key", existing):
        cur.execute(f"DELETE FROM sessions WHERE {where}", params)
    if not rows:
        return
    types = {
        "started_at": pa.timestamp("us", tz="UTC"),
        "ended_at": pa.timestamp("us", tz="UTC"),
        "distinct_tools": pa.list_(pa.string()),
        "distinct_skills": pa.list_(pa.string()),
        "primary_model": pa.string(),
        "cost_usd": pa.float64(),
        "kept": pa.binary(),
        "project": pa.string(),
        "project_key": pa.string(),
        **dict.fromkeys((*_SESSION_COUNTS, *_SESSION_TOKENS), pa.int64()),
    }
    table = pa.table(
        {name: pa.array([row[name] for row in rows], types.get(name)) for name in _SESSION_COLUMNS}
    )
    cur.register("new_sessions", table)
    try:
        cur.execute(
            f"INSERT INTO sessions ({', '.join(_SESSION_COLUMNS)}) SELECT * FROM new_sessions"
        )
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
    "key",
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
    "kept",
    "project",
    "project_key",
)
"""The sessions table's columns, in its order."""
_SESSION_LISTS = frozenset({"distinct_tools", "distinct_skills"})
_SESSION_INSERT = (
    f"INSERT INTO sessions ({', '.join(_SESSION_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_SESSION_COLUMNS))})"
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
