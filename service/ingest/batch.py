"""What reading a batch of files hands to the store, and what committing it reports."""

from __future__ import annotations

import msgspec

from service.ingest.transcript import TranscriptState, UsageEntry

__all__ = ["TRANSCRIPT_TABS", "BatchChanges", "FileResult", "KnownFile", "unreadable"]


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


def unreadable(state: TranscriptState) -> str | None:
    """Why a file counts as bad as a whole: it has lines, and not one of them could be read."""
    bad = state.bad_lines + state.oversized_lines
    if state.lines and bad == state.lines:
        return f"not a transcript: none of its {state.lines} lines could be read"
    return None


TRANSCRIPT_TABS = frozenset({"sessions", "tokens", "blocks"})
"""The dashboard tabs whose data a user's read transcripts change."""


class BatchChanges(msgspec.Struct):
    """What a committed batch changed: each touched user's new version, and the dashboard
    tabs whose data changed for them (every user in ``versions`` is in ``changed``)."""

    versions: dict[str, int]
    changed: dict[str, set[str]]
