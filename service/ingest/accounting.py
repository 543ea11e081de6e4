"""Dedup of usage entries (TRANSCRIPTS.md rules 3-5) and session summaries.

Claude Code repeats one API response on several lines, in resumed sessions, in
subagent files and in ``/btw`` side-question logs; summing lines over-counts. ``dedup``
keeps one winner per response, chosen by a total order (rule 4 plus stable last
tie-breaks), so the winners are the same whichever order the files arrived in. The
scope is one user: the caller passes all of that user's entries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Context, Decimal
from typing import Any

import msgspec

from service.ingest.names import session_of_file
from service.ingest.pricing import cost_usd
from service.ingest.transcript import TranscriptState, UsageEntry, add_to_blocks

__all__ = [
    "SYNTHETIC_MODEL",
    "ModelSums",
    "SessionSummary",
    "dedup",
    "exact_cost",
    "group_by_session",
    "model_sums",
    "session_id_of",
    "summarize",
    "summarize_session",
]

SYNTHETIC_MODEL = "<synthetic>"
"""Claude Code's marker for a notice the client made up: an entry, but no model."""


class SessionSummary(msgspec.Struct):
    """One row of the Sessions tab: TRANSCRIPTS.md's session table, field for field.

    ``cost_usd`` is the sum over the entries whose model has a price; models without
    one are listed in ``unpriced_models`` (their tokens still count) so a partial
    cost is never shown as complete. It is None when tokens were used but none of
    them could be priced. ``distinct_tools`` / ``distinct_skills`` are the sorted
    names; their lengths are the counts.
    """

    session_id: str
    started_at: datetime | None
    ended_at: datetime | None
    wall_seconds: int
    active_seconds: int
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
    tokens_total: int
    cost_usd: float | None
    unpriced_models: list[str]
    files: list[str]
    bad_lines: int


def _beats(candidate: UsageEntry, current: UsageEntry) -> bool:
    """Rule 4 between two copies on the same side of the sidechain line: the larger
    total, then the earlier timestamp, then the first file name. The line key settles
    copies rule 4 calls equal, so even those do not depend on arrival order."""
    candidate_total = (
        candidate.input_tokens
        + candidate.output_tokens
        + candidate.cache_creation_tokens
        + candidate.cache_read_tokens
    )
    current_total = (
        current.input_tokens
        + current.output_tokens
        + current.cache_creation_tokens
        + current.cache_read_tokens
    )
    if candidate_total != current_total:
        return candidate_total > current_total
    if candidate.timestamp != current.timestamp:
        return candidate.timestamp < current.timestamp
    return (candidate.file_name, candidate.line_key) < (current.file_name, current.line_key)


def dedup(entries: Iterable[UsageEntry]) -> list[UsageEntry]:
    """The winning copy of every API response among one user's entries.

    Copies share a ``message.id``. Non-sidechain copies are one response per
    ``requestId`` (rule 3); a sidechain copy matches any copy of its ``message.id``
    whatever the ``requestId`` (rule 5), and so joins, and loses to, the non-sidechain
    copies when there are any, while sidechain-only copies form one response. Entries
    without a ``message.id`` are never merged, except that the same line (same file
    and line key) reaching us twice counts once. The order of the result is not
    meaningful.
    """
    winners: list[UsageEntry] = []
    by_message: dict[str, Any] = {}
    seen_lines: set[tuple[str, str]] = set()
    for entry in entries:
        message_id = entry.message_id
        if message_id is None:
            line = (entry.file_name, entry.line_key)
            if line not in seen_lines:
                seen_lines.add(line)
                winners.append(entry)
            continue
        copies = by_message.get(message_id)
        if copies is None:
            by_message[message_id] = entry
        elif type(copies) is list:
            copies.append(entry)
        else:
            by_message[message_id] = [copies, entry]

    for copies in by_message.values():
        if type(copies) is not list:
            winners.append(copies)
            continue
        main: dict[str | None, UsageEntry] = {}
        side: UsageEntry | None = None
        for copy in copies:
            if copy.is_sidechain:
                if not main and (side is None or _beats(copy, side)):
                    side = copy
            else:
                best = main.get(copy.request_id)
                if best is None or _beats(copy, best):
                    main[copy.request_id] = copy
        if main:
            winners.extend(main.values())
        elif side is not None:
            winners.append(side)
    return winners


def group_by_session(winners: Iterable[UsageEntry]) -> dict[str, list[UsageEntry]]:
    """Winners per session id, for callers summarising many sessions at once."""
    groups: dict[str, list[UsageEntry]] = {}
    for entry in winners:
        groups.setdefault(entry.session_id, []).append(entry)
    return groups


def session_id_of(states: Sequence[TranscriptState]) -> str:
    """The session's id: its own transcript's first ``sessionId``, else the file's stem."""
    if not states:
        raise ValueError("a session needs at least its own transcript's state")
    main = states[0]
    return main.session_id or session_of_file(main.file_name)


_EXACT = Context(prec=60)  # DECIMAL(38, 12) sums, with room to spare
_TWELVE_PLACES = Decimal("1E-12")  # every kept cost has 12 places, so equal sums encode alike


def exact_cost(cost: float) -> Decimal:
    """An entry's cost as the sums take it: with the 12 places of a DECIMAL(38, 12)."""
    return Decimal(repr(cost)).quantize(_TWELVE_PLACES, context=_EXACT)


class ModelSums(msgspec.Struct, array_like=True):
    """One model's sums over a session's winning entries: all a summary needs of them, so
    a store can keep or hand over a few aggregated rows instead of every entry.

    ``cost`` is exact, the sum of each priced entry's cost as a DECIMAL(38, 12), and the
    rest are counts, so that adding or taking away an entry (:meth:`add`) gives the very
    numbers that summing them all again gives; a session's row keeps them (its ``kept``
    column) for its next update."""

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
        """Count ``entry`` (with its exact ``cost``; None: unpriced) in, or out (``sign``
        -1: see :meth:`can_lose`)."""
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


def model_sums(winners: Iterable[UsageEntry], session_id: str) -> list[ModelSums]:
    """Per-model sums of the winners whose ``session_id`` is the session's."""
    sums: dict[str | None, ModelSums] = {}
    for entry in winners:
        if entry.session_id != session_id:
            continue
        row = sums.get(entry.model)
        if row is None:
            row = sums[entry.model] = ModelSums(model=entry.model)
        cost = cost_usd(entry)
        row.add(entry, None if cost is None else exact_cost(cost))
    return list(sums.values())


def summarize_session(
    states: Sequence[TranscriptState], winners: Iterable[UsageEntry]
) -> SessionSummary:
    """Assemble one session's row from its files' states and the user's winners.

    ``states[0]`` is the session's own transcript, the rest its subagent files (tied to
    it by ``sessionId``). ``winners`` may be all of the user's winning entries or just
    this session's; only those whose ``session_id`` is the session's are counted.
    """
    return summarize(states, model_sums(winners, session_id_of(states)))


def summarize(states: Sequence[TranscriptState], totals: Iterable[ModelSums]) -> SessionSummary:
    """A session's row from its files' states and its per-model sums."""
    session_id = session_id_of(states)

    started = [s.started_at for s in states if s.started_at is not None]
    ended = [s.ended_at for s in states if s.ended_at is not None]
    started_at = min(started) if started else None
    ended_at = max(ended) if ended else None
    wall_seconds = int((ended_at - started_at).total_seconds()) if started_at and ended_at else 0

    blocks: list[tuple[int, int]] = []
    for state in states:
        for first, last in state.blocks:
            add_to_blocks(blocks, first, last)
    active_us = sum(last - first for first, last in blocks)

    prompts: set[str] = set()
    tool_uses: dict[str, str] = {}
    skills: dict[str, str] = {}
    tool_errors: set[str] = set()
    slash_commands: dict[str, str] = {}
    for state in states:
        prompts |= state.prompts
        tool_uses.update(state.tool_uses)
        skills.update(state.skills)
        tool_errors |= state.tool_errors
        slash_commands.update(state.slash_commands)

    tool_calls = subagent_dispatches = mcp_calls = 0
    for name in tool_uses.values():
        if name in ("Task", "Agent"):
            subagent_dispatches += 1
        elif name.startswith("mcp__"):
            mcp_calls += 1
        else:
            tool_calls += 1

    input_tokens = output_tokens = cache_read = cache_creation = 0
    assistant_messages = 0
    costs: list[float] = []
    priced_any = False
    unpriced: set[str] = set()
    output_by_model: dict[str, int] = {}
    first_seen: dict[str, datetime] = {}
    for row in totals:
        input_tokens += row.input_tokens
        output_tokens += row.output_tokens
        cache_read += row.cache_read_tokens
        cache_creation += row.cache_creation_tokens
        model = row.model
        if model != SYNTHETIC_MODEL:
            assistant_messages += row.responses
            if model is not None and row.responses:
                output_by_model[model] = row.output_tokens
                assert row.first_seen is not None
                first_seen[model] = row.first_seen
        if row.unpriced > 0:
            unpriced.add(model or "")
        costs.append(float(row.cost))
        priced_any = priced_any or row.priced_tokens > 0

    primary_model = None
    if output_by_model:
        primary_model = min(output_by_model, key=lambda m: (-output_by_model[m], first_seen[m], m))
    tokens_total = input_tokens + output_tokens + cache_read + cache_creation
    return SessionSummary(
        session_id=session_id,
        started_at=started_at,
        ended_at=ended_at,
        wall_seconds=wall_seconds,
        active_seconds=active_us // 1_000_000,
        user_messages=len(prompts),
        assistant_messages=assistant_messages,
        tool_calls=tool_calls,
        tool_errors=len(tool_errors),
        skill_invocations=len(skills),
        subagent_dispatches=subagent_dispatches,
        mcp_calls=mcp_calls,
        slash_commands=len(slash_commands),
        distinct_tools=sorted({name for name in tool_uses.values() if name}),
        distinct_skills=sorted({name for name in skills.values() if name}),
        primary_model=primary_model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_creation_tokens=cache_creation,
        tokens_total=tokens_total,
        # fsum is exactly rounded: the same winners give the same cost in any order
        cost_usd=None if unpriced and not priced_any else math.fsum(costs),
        unpriced_models=sorted(unpriced),
        files=[state.file_name for state in states],
        bad_lines=sum(state.bad_lines + state.oversized_lines for state in states),
    )
