"""What a batch of read files changes, decided without a database.

The store loads what a batch touches, hands it to these functions, and writes what they
decide (:func:`service.store.ingest.apply_batch`). In order:

1. :func:`sort_batch`: the files that failed, those to save, and the copies of usage
   entries they bring, by user; the sessions and responses (``message.id``) they touch.
2. :func:`decide_winners`: dedup again over all of each user's copies of the touched
   responses (stored and new), so the winner never depends on arrival order; which new
   copies win, which stored copies flip.
3. :func:`gained`: the new winners as :class:`WinnerChange` (with the exact costs the
   store gave them). The changes of a batch, made once, bring every derived table that
   sums winning entries up to date: usage buckets (:func:`bucket_deltas`), 5-hour blocks
   (:func:`block_spans`) and session rows (:mod:`service.ingest.sessions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal

import msgspec

from service.ingest.accounting import dedup
from service.ingest.batch import FileResult
from service.ingest.transcript import UsageEntry

__all__ = [
    "Batch",
    "BucketKey",
    "BucketSums",
    "NewCopy",
    "SessionKey",
    "Span",
    "StoredCopy",
    "WinnerChange",
    "Winners",
    "block_spans",
    "bucket_deltas",
    "bucket_of",
    "decide_winners",
    "gained",
    "sort_batch",
]

_EXACT = Context(prec=60)  # DECIMAL(38, 12) sums, with room to spare


class SessionKey(msgspec.Struct, frozen=True, order=True, gc=False):
    """A session: one user's transcript (its own file's name) with its subagent files."""

    user_id: str
    session_file: str

    @property
    def key(self) -> str:
        """The ``sessions`` row's key."""
        return f"{self.user_id}/{self.session_file}"


class NewCopy(msgspec.Struct, gc=False):
    """A usage entry a batch read, about to be stored as a copy of its response."""

    entry: UsageEntry
    user_id: str
    file_path: str  # relative to user_sessions/
    session_file: str  # the session of its file


class StoredCopy(msgspec.Struct, gc=False):
    """A stored copy of a response the batch touches (or one the batch deletes)."""

    rowid: int
    user_id: str
    session_file: str
    entry: UsageEntry
    winner: bool
    cost: Decimal | None  # exact, as the sums take it (None: unpriced)


class WinnerChange(msgspec.Struct, frozen=True, gc=False):
    """One winning copy that a batch adds (``sign`` 1) or takes away (``sign`` -1).

    The list of a batch's changes is made once, after dedup and before anything derived
    is written, and every derived table that sums winning entries is brought up to date
    from it alone: adding each change's counts times its ``sign`` to what the table held
    gives exactly what summing the winners of ``usage_entries`` again would. It holds:

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
    def session(self) -> SessionKey:
        return SessionKey(self.user_id, self.session_file)


# -- 1. the batch sorted out ------------------------------------------------------------------


class Batch(msgspec.Struct):
    """A batch's read files sorted out (:func:`sort_batch`)."""

    failed: list[FileResult]  # read with an error: recorded, nothing else
    saved: list[FileResult]  # read: their rows are saved, their copies stored
    users: set[str]  # whose transcripts changed
    sessions: set[SessionKey]  # whose rows are brought up to date
    resummed: set[SessionKey]  # with a file read again from the start: summed again
    message_ids: dict[str, set[str]]  # by user: the responses whose winner is decided again
    copies: dict[str, list[NewCopy]]  # by user, in reading order

    @property
    def replaced(self) -> list[str]:
        """The paths whose stored copies go (read again from the start), sorted."""
        return sorted(r.path for r in self.saved if r.replaces)

    def touch(self, copy: StoredCopy) -> None:
        """Count a stored copy's response in (one deleted with its file: another copy of
        it may win now)."""
        if copy.entry.message_id is not None:
            self.message_ids.setdefault(copy.user_id, set()).add(copy.entry.message_id)


def sort_batch(results: Iterable[FileResult]) -> Batch:
    """Sort a batch's read files: failed, unchanged (left out: e.g. the watcher's event for
    a file the upload handler queued already) and saved, with what the saved ones touch."""
    batch = Batch([], [], set(), set(), set(), {}, {})
    for result in results:
        if result.error is not None:
            batch.failed.append(result)
            continue
        if result.unchanged:
            continue
        user_id = result.user_id
        assert user_id is not None and result.state is not None
        session = SessionKey(user_id, result.session_file)
        batch.users.add(user_id)
        batch.sessions.add(session)
        if result.replaces:
            batch.resummed.add(session)
        copies = batch.copies.setdefault(user_id, [])
        mids = batch.message_ids.setdefault(user_id, set())
        for entry in result.entries:
            copies.append(NewCopy(entry, user_id, result.path, result.session_file))
            if entry.message_id is not None:
                mids.add(entry.message_id)
        batch.saved.append(result)
    return batch


# -- 2. dedup again over the touched responses ------------------------------------------------


class Winners(msgspec.Struct):
    """What dedup decided for a batch (:func:`decide_winners`)."""

    fresh: set[int]  # id() of the new copies' entries that win
    flipped: list[int]  # rowids of stored copies whose winner flag changes
    changes: list[WinnerChange]  # of the stored copies: deleted winners, then flips

    def wins(self, entry: UsageEntry) -> bool:
        """A new copy's winner flag (a copy without a ``message.id`` always counts)."""
        return entry.message_id is None or id(entry) in self.fresh


def decide_winners(
    batch: Batch, deleted: Iterable[StoredCopy], stored: Mapping[str, Sequence[StoredCopy]]
) -> Winners:
    """The winners of the touched responses among each user's stored copies of them
    (``stored``, by user) and the batch's new copies; ``deleted``: the winning copies
    that went with their files lose. The sessions of flipped copies join the batch's."""
    winners = Winners(set(), [], [])
    for copy in deleted:
        if copy.winner:
            winners.changes.append(
                WinnerChange(copy.user_id, copy.session_file, -1, copy.entry, copy.cost)
            )
    for user_id, mids in batch.message_ids.items():
        if not mids:
            continue
        old = stored.get(user_id, ())
        fresh = [c.entry for c in batch.copies.get(user_id, ()) if c.entry.message_id is not None]
        won = {id(w) for w in dedup([c.entry for c in old] + fresh)}
        winners.fresh.update(id(entry) for entry in fresh if id(entry) in won)
        for copy in old:
            if (id(copy.entry) in won) != copy.winner:
                winners.flipped.append(copy.rowid)
                batch.sessions.add(SessionKey(user_id, copy.session_file))
                sign = -1 if copy.winner else 1
                winners.changes.append(
                    WinnerChange(user_id, copy.session_file, sign, copy.entry, copy.cost)
                )
    return winners


def gained(
    copies: Sequence[NewCopy], costs: Sequence[Decimal | None], winners: Winners
) -> list[WinnerChange]:
    """The new copies that count, with their exact costs (``costs``, in the same order)."""
    return [
        WinnerChange(copy.user_id, copy.session_file, 1, copy.entry, cost)
        for copy, cost in zip(copies, costs, strict=True)
        if winners.wins(copy.entry)
    ]


# -- 3. what the winner changes add to the aggregates -----------------------------------------

_BUCKET_US = 15 * 60 * 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZERO = Decimal("0E-12")


def bucket_of(ts: datetime) -> datetime:
    """The start of the 15-minute UTC bucket that holds ``ts``."""
    micros = (ts - _EPOCH) // timedelta(microseconds=1)  # integers: exact in every year
    return _EPOCH + timedelta(microseconds=micros // _BUCKET_US * _BUCKET_US)


class BucketKey(msgspec.Struct, frozen=True, gc=False):
    """A ``usage_buckets`` row: one user's session and model in one 15-minute bucket."""

    user_id: str
    bucket: datetime
    session_file: str
    model: str | None


class BucketSums(msgspec.Struct, array_like=True, gc=False):
    """A bucket row's sums, or what a batch adds to them."""

    entries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost: Decimal = _ZERO
    unpriced: int = 0

    def add(self, change: WinnerChange) -> None:
        sign, entry = change.sign, change.entry
        self.entries += sign
        self.input_tokens += sign * entry.input_tokens
        self.output_tokens += sign * entry.output_tokens
        self.cache_read_tokens += sign * entry.cache_read_tokens
        self.cache_creation_tokens += sign * entry.cache_creation_tokens
        if change.cost is None:
            self.unpriced += sign
        elif sign > 0:
            self.cost = _EXACT.add(self.cost, change.cost)
        else:
            self.cost = _EXACT.subtract(self.cost, change.cost)

    def plus(self, other: BucketSums) -> BucketSums:
        return BucketSums(
            self.entries + other.entries,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_creation_tokens + other.cache_creation_tokens,
            _EXACT.add(self.cost, other.cost),
            self.unpriced + other.unpriced,
        )

    def __bool__(self) -> bool:
        return any(msgspec.structs.astuple(self))


def bucket_deltas(changes: Iterable[WinnerChange]) -> dict[BucketKey, BucketSums]:
    """What a batch's winner changes add to each usage bucket (buckets left as they were,
    a loss and a gain that cancel, are left out)."""
    deltas: dict[BucketKey, BucketSums] = {}
    for change in changes:
        key = BucketKey(change.user_id, bucket_of(change.ts), change.session_file, change.model)
        sums = deltas.get(key)
        if sums is None:
            sums = deltas[key] = BucketSums()
        sums.add(change)
    return {k: v for k, v in deltas.items() if v}


class Span(msgspec.Struct, frozen=True, gc=False):
    """The earliest and latest timestamp of a user's changed winning entries."""

    earliest: datetime
    latest: datetime


def block_spans(changes: Iterable[WinnerChange]) -> dict[str, Span]:
    """Each user's span of changed timestamps: where their 5-hour blocks may have changed."""
    found: dict[str, Span] = {}
    for change in changes:
        ts, span = change.ts, found.get(change.user_id)
        found[change.user_id] = (
            Span(ts, ts) if span is None else Span(min(span.earliest, ts), max(span.latest, ts))
        )
    return found
