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
   sums winning entries up to date: sessions (step 4), usage buckets
   (:func:`bucket_deltas`) and 5-hour blocks (:func:`block_spans`).
4. :func:`plan_sessions`: each touched session's files in summary order and its
   per-model sums, brought up to date from what its row keeps (:class:`Kept`), or marked
   to be summed again by the store when that cannot be exact; then
   :func:`session_rows`: the rows to write, the rows that go, the projects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal

import msgspec

from service.ingest.accounting import ModelSums, dedup, session_id_of, summarize
from service.ingest.batch import FileResult
from service.ingest.transcript import TranscriptState, UsageEntry, project_key, subagent_parent

__all__ = [
    "Batch",
    "BucketKey",
    "BucketSums",
    "Kept",
    "NewCopy",
    "SessionKey",
    "SessionPlan",
    "SessionRow",
    "SessionRows",
    "StoredCopy",
    "StoredSession",
    "WinnerChange",
    "Winners",
    "block_spans",
    "bucket_deltas",
    "bucket_of",
    "decide_winners",
    "gained",
    "member_order",
    "plan_sessions",
    "project_of",
    "session_rows",
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


def block_spans(changes: Iterable[WinnerChange]) -> dict[str, tuple[datetime, datetime]]:
    """Each user's earliest and latest changed timestamp: where their 5-hour blocks may
    have changed."""
    found: dict[str, tuple[datetime, datetime]] = {}
    for change in changes:
        ts, span = change.ts, found.get(change.user_id)
        found[change.user_id] = (ts, ts) if span is None else (min(span[0], ts), max(span[1], ts))
    return found


# -- 4. session rows ----------------------------------------------------------------------------


class Kept(msgspec.Struct, array_like=True):
    """What a session's next update starts from (its row's ``kept`` column): the paths of
    its files that have been read, in summary order, and the per-model sums of its winning
    entries."""

    files: list[str]
    models: list[ModelSums]


class StoredSession(msgspec.Struct):
    """What a batch reads of a touched session's stored row."""

    session_id: str
    distinct_tools: list[str]
    distinct_skills: list[str]
    kept: Kept | None  # None: a row written before migration 0002
    project_key: str


def project_of(states: Sequence[TranscriptState]) -> str | None:
    """A session's project: the first ``cwd`` of its own transcript (``states[0]``), else
    of its subagent files in summary order (until the parent file is read), else None."""
    return next((state.cwd for state in states if state.cwd is not None), None)


def member_order(path: str) -> tuple[bool, str, str]:
    """A session's files in summary order: its own transcript first, then its subagent
    files by name (``summarize`` takes the first state as the session's own)."""
    name = path.rsplit("/", 1)[-1]
    return subagent_parent(name) is not None, name, path


def members(
    sessions: Iterable[SessionKey],
    rows: Mapping[SessionKey, StoredSession],
    saved: Iterable[FileResult],
) -> dict[SessionKey, set[str]]:
    """Each session's files as far as the batch and the rows' ``kept`` know them (a row
    without ``kept`` has its files listed by the store)."""
    found: dict[SessionKey, set[str]] = {session: set() for session in sessions}
    for result in saved:
        assert result.user_id is not None
        found[SessionKey(result.user_id, result.session_file)].add(result.path)
    for session, row in rows.items():
        if row.kept is not None:
            found[session].update(row.kept.files)
    return found


class SessionPlan(msgspec.Struct):
    """Where each touched session's row comes from (:func:`plan_sessions`)."""

    files: dict[SessionKey, list[str]]  # its files that have a state, in summary order
    sums: dict[SessionKey, list[ModelSums]]  # brought up to date from its kept sums
    to_sum: dict[SessionKey, str]  # summed again by the store instead: its session id


def plan_sessions(
    members: Mapping[SessionKey, Iterable[str]],
    states: Mapping[str, TranscriptState],
    rows: Mapping[SessionKey, StoredSession],
    changes: Iterable[WinnerChange],
    resummed: set[SessionKey],
) -> SessionPlan:
    """How each session's row (``members``: its files; ``states``: theirs, read now or
    stored) is brought up to date: its kept per-model sums with the batch's ``changes``
    applied, or summed again by the database for ``resummed`` sessions (a deleted copy's
    loss only matters to those, which do not use them), rows without ``kept``, sessions
    whose id changed, and those that lost what may have been a model's earliest response.
    A session none of whose files has a state is left out: its row goes."""
    by_session: dict[SessionKey, list[WinnerChange]] = {}
    for change in changes:
        by_session.setdefault(change.session, []).append(change)
    plan = SessionPlan({}, {}, {})
    for session, paths in members.items():
        files = sorted((p for p in paths if p in states), key=member_order)
        if not files:
            continue
        plan.files[session] = files
        session_id = session_id_of([states[p] for p in files])
        current = rows.get(session)
        if session in resummed or (
            current is not None and (current.kept is None or current.session_id != session_id)
        ):
            plan.to_sum[session] = session_id
            continue
        by_model = {m.model: m for m in (current.kept.models if current and current.kept else ())}
        if _apply(by_model, by_session.get(session, ()), session_id):
            plan.sums[session] = list(by_model.values())
        else:
            plan.to_sum[session] = session_id
    return plan


def _apply(
    by_model: dict[str | None, ModelSums], changes: Iterable[WinnerChange], session_id: str
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


class SessionRow(msgspec.Struct, kw_only=True):
    """A ``sessions`` row, its columns in the table's order."""

    key: str
    user_id: str
    session_file: str
    session_id: str
    started_at: datetime | None
    ended_at: datetime | None
    active_seconds: int
    wall_seconds: int
    user_messages: int
    assistant_messages: int
    tool_calls: int
    tool_errors: int
    skill_invocations: int
    subagent_dispatches: int
    mcp_calls: int
    slash_commands: int
    distinct_tools: list[str]
    distinct_skills: list[str]
    primary_model: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cost_usd: float | None
    kept: Kept
    project: str | None
    project_key: str  # '' when it has no project


class SessionRows(msgspec.Struct):
    """What a batch writes to ``sessions`` (:func:`session_rows`)."""

    rows: dict[SessionKey, SessionRow]  # written, new or over the stored one
    gone: list[SessionKey]  # stored rows whose files are all gone from view, sorted
    projects: dict[SessionKey, str]  # every touched session's project key after the batch
    moved: dict[SessionKey, str]  # sessions that had a row and changed project: the new key


def session_rows(
    plan: SessionPlan,
    summed: Mapping[SessionKey, Sequence[ModelSums]],
    states: Mapping[str, TranscriptState],
    rows: Mapping[SessionKey, StoredSession],
    sessions: Iterable[SessionKey],
) -> SessionRows:
    """The rows of the touched ``sessions`` from the ``plan``, the sums the store made
    again (``summed``) and their files' ``states``; ``rows``: those stored now."""
    written: dict[SessionKey, SessionRow] = {}
    for session, files in plan.files.items():
        kept = plan.sums.get(session)
        models = sorted(
            summed.get(session, ()) if kept is None else kept,
            key=lambda m: (m.model is not None, m.model or ""),
        )
        member_states = [states[p] for p in files]
        s = summarize(member_states, models)
        project = project_of(member_states)
        written[session] = SessionRow(
            key=session.key,
            user_id=session.user_id,
            session_file=session.session_file,
            session_id=s.session_id,
            started_at=s.started_at,
            ended_at=s.ended_at,
            active_seconds=s.active_seconds,
            wall_seconds=s.wall_seconds,
            user_messages=s.user_messages,
            assistant_messages=s.assistant_messages,
            tool_calls=s.tool_calls,
            tool_errors=s.tool_errors,
            skill_invocations=s.skill_invocations,
            subagent_dispatches=s.subagent_dispatches,
            mcp_calls=s.mcp_calls,
            slash_commands=s.slash_commands,
            distinct_tools=s.distinct_tools,
            distinct_skills=s.distinct_skills,
            primary_model=s.primary_model,
            input_tokens=s.input_tokens,
            output_tokens=s.output_tokens,
            cache_read_tokens=s.cache_read_tokens,
            cache_creation_tokens=s.cache_creation_tokens,
            cost_usd=s.cost_usd,
            kept=Kept(files=files, models=models),
            project=project,
            project_key="" if project is None else project_key(project),
        )
    result = SessionRows(written, sorted(rows.keys() - written.keys()), {}, {})
    for session in sessions:
        row = written.get(session)
        after = "" if row is None else row.project_key
        result.projects[session] = after
        before = rows.get(session)
        if before is not None and before.project_key != after:
            result.moved[session] = after
    return result
