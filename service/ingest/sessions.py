"""A batch's session rows, decided without a database: each touched session's files in
summary order and its per-model sums, brought up to date from what its row keeps
(:class:`Kept`) with the batch's winner changes, or marked to be summed again by the store
when that cannot be exact (:func:`plan_sessions`); then the rows to write, the rows that
go, and each session's project (:func:`session_records`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from service.ingest.accounting import ModelSums, SessionSummary, session_id_of, summarize
from service.ingest.batch import FileResult
from service.ingest.names import project_key, subagent_parent
from service.ingest.plan import SessionKey, WinnerChange
from service.ingest.transcript import TranscriptState

__all__ = [
    "Kept",
    "SessionPlan",
    "SessionRecord",
    "SessionWrites",
    "StoredSession",
    "member_order",
    "members",
    "plan_sessions",
    "project_of",
    "session_records",
]


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


class SessionRecord(msgspec.Struct):
    """A ``sessions`` row: the session's summary (the table keeps its fields from
    ``session_id`` to ``cost_usd``), what its next update starts from, its project."""

    session: SessionKey
    summary: SessionSummary
    kept: Kept
    project: str | None
    project_key: str  # '' when it has no project


class SessionWrites(msgspec.Struct):
    """What a batch writes to ``sessions`` (:func:`session_records`)."""

    rows: dict[SessionKey, SessionRecord]  # written, new or over the stored one
    gone: list[SessionKey]  # stored rows whose files are all gone from view, sorted
    projects: dict[SessionKey, str]  # every touched session's project key after the batch
    moved: dict[SessionKey, str]  # sessions that had a row and changed project: the new key


def session_records(
    plan: SessionPlan,
    summed: Mapping[SessionKey, Sequence[ModelSums]],
    states: Mapping[str, TranscriptState],
    rows: Mapping[SessionKey, StoredSession],
    sessions: Iterable[SessionKey],
) -> SessionWrites:
    """The rows of the touched ``sessions`` from the ``plan``, the sums the store made
    again (``summed``) and their files' ``states``; ``rows``: those stored now."""
    written: dict[SessionKey, SessionRecord] = {}
    for session, files in plan.files.items():
        kept = plan.sums.get(session)
        models = sorted(
            summed.get(session, ()) if kept is None else kept,
            key=lambda m: (m.model is not None, m.model or ""),
        )
        member_states = [states[p] for p in files]
        s = summarize(member_states, models)
        project = project_of(member_states)
        key = "" if project is None else project_key(project)
        written[session] = SessionRecord(session, s, Kept(files, models), project, key)
    result = SessionWrites(written, sorted(rows.keys() - written.keys()), {}, {})
    for session in sessions:
        row = written.get(session)
        after = "" if row is None else row.project_key
        result.projects[session] = after
        before = rows.get(session)
        if before is not None and before.project_key != after:
            result.moved[session] = after
    return result
