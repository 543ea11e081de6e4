"""Claude Code transcripts, from bytes to usage entries and per-file counts.

The rules are TRANSCRIPTS.md's. This module is pure: it never touches a database, a
clock or an event loop, and every input and output is a picklable msgspec Struct, so
a caller can run it in a process pool and store a ``TranscriptState`` between two
reads of a growing file.

The hot path is shaped by the data: most bytes of a transcript sit in lines that carry
nothing we count (``progress`` and ``file-history-snapshot`` lines, tool output), so
each line is first tested with a few byte searches and only lines that can carry usage
or counts are decoded, by a typed msgspec decoder that names just the fields we read.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import PurePosixPath

import msgspec
from msgspec import UNSET

from service.ingest.jsonl import (
    ENVELOPE,
    SKILL_INPUT,
    Block,
    Line,
    Message,
    SkillInput,
    Usage,
    decode,
    leading_type,
    tail_timestamp,
)
from service.ingest.names import session_of_file

__all__ = [
    "MAX_LINE_BYTES",
    "FeedResult",
    "FileParse",
    "TranscriptState",
    "UsageEntry",
    "feed",
    "first_cwd",
    "iter_file",
    "new_state",
    "parse_file",
]

MAX_LINE_BYTES = 32 * 1024 * 1024
"""Longer lines are skipped unread, so memory stays bounded whatever a file holds.

An assistant line is bounded by the model's output limit (well under 1 MiB), so only
user lines with enormous tool output ever reach this size; what they would add (one
tool result) is not worth holding tens of megabytes for."""

DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024

_BLOCK_GAP_US = 600 * 1_000_000

# A line whose leading top-level ``type`` is one of these carries no top-level
# ``message``, hence no usage and no counts; they are also the megabyte-sized ones.
_SKIPPED_TYPES = frozenset({b"progress", b"file-history-snapshot", b"queue-operation"})
_BIG_LINE = 64 * 1024
_WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")  # what bytes.isspace() and strip() skip
_SMALL_LINE = 4096

_VERSION = re.compile(r"\d+\.\d+\.\d")
_SLASH_COMMAND = re.compile(r"<command-name>/([A-Za-z][A-Za-z0-9_:-]*)</command-name>")


class UsageEntry(msgspec.Struct, gc=False):
    """One usage-bearing line (rule 1): the unit that dedup (rules 3-5) works on.

    ``timestamp`` is an aware datetime in UTC. ``cache_creation_tokens`` follows
    rule 2 and always equals ``cache_creation_5m + cache_creation_1h`` (a line without
    the ``cache_creation`` breakdown bills its whole cache write at the 5-minute rate,
    as Anthropic's API did before the breakdown existed). ``file_name`` is the name
    the caller gave the parser, used by rule 4's last tie-break; ``line_key`` is the
    line's ``uuid`` (or a digest of its bytes), so the same line read twice can be
    recognised as one.
    """

    message_id: str | None
    request_id: str | None
    session_id: str
    timestamp: datetime
    model: str | None
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_creation_5m: int
    cache_creation_1h: int
    cache_read_tokens: int
    is_sidechain: bool
    speed: str | None
    file_name: str
    line_key: str

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_tokens
            + self.cache_read_tokens
        )


class TranscriptState(msgspec.Struct):
    """Everything one file's counts depend on, kept between reads of that file.

    Counts are sets keyed by what identifies a thing (a prompt's line ``uuid``, a
    tool_use ``id``, a tool result's ``tool_use_id``), so a response split over several
    lines, or a line read twice, is counted once; merging a parent file with its
    subagent files is a union. Activity is kept as time blocks (gaps over 600 s
    split them), which is exact and stays small however long the file is.
    """

    file_name: str
    session_id: str | None = None
    cwd: str | None = None  # the first non-empty top-level ``cwd`` of the file's lines
    started_at: datetime | None = None
    ended_at: datetime | None = None
    blocks: list[tuple[int, int]] = msgspec.field(default_factory=list)
    prompts: set[str] = msgspec.field(default_factory=set)
    tool_uses: dict[str, str] = msgspec.field(default_factory=dict)
    skills: dict[str, str] = msgspec.field(default_factory=dict)
    tool_errors: set[str] = msgspec.field(default_factory=set)
    slash_commands: dict[str, str] = msgspec.field(default_factory=dict)
    lines: int = 0
    bad_lines: int = 0
    oversized_lines: int = 0
    in_oversized_line: bool = False


class FeedResult(msgspec.Struct):
    """What one call of :func:`feed` consumed and found.

    ``consumed`` bytes are done with: the caller's next read starts after them. A
    torn last line is not consumed and comes back with the next read.
    """

    consumed: int
    entries: list[UsageEntry]


class FileParse(msgspec.Struct):
    """A whole read of a file: the state to keep, the entries found and the offset
    the next read starts from."""

    state: TranscriptState
    entries: list[UsageEntry]
    offset: int


# --- public API -------------------------------------------------------------------


def first_cwd(path: str) -> str | None:
    """The first non-empty top-level ``cwd`` among the complete lines of a file, reading
    only as far as the chunk that holds it: what a full parse's state holds. For states
    stored before the parser kept it."""
    state = new_state(PurePosixPath(path).name)
    for _ in iter_file(path, state, chunk_size=64 * 1024):
        if state.cwd is not None:
            break
    return state.cwd


def new_state(file_name: str) -> TranscriptState:
    return TranscriptState(file_name=file_name)


def feed(
    state: TranscriptState, chunk: bytes | bytearray, *, max_line: int = MAX_LINE_BYTES
) -> FeedResult:
    """Consume the complete lines at the start of ``chunk``, updating ``state`` in place.

    ``chunk`` holds the file's bytes from the caller's offset on. Only lines ending in
    ``\\n`` are consumed. If no newline comes within ``max_line`` bytes the line is too
    long to be worth holding: the bytes are consumed and the rest of that line is
    skipped by later calls, so a caller never needs a buffer larger than
    ``max_line`` plus one read.
    """
    return _feed(state, chunk, len(chunk), max_line)


def _feed(state: TranscriptState, buf: bytes | bytearray, length: int, max_line: int) -> FeedResult:
    """:func:`feed` of ``buf[:length]``, which is read in place, never copied whole."""
    entries: list[UsageEntry] = []
    pos = 0
    if state.in_oversized_line:
        newline = buf.find(b"\n", 0, length)
        if newline < 0:
            return FeedResult(consumed=length, entries=entries)
        state.in_oversized_line = False
        pos = newline + 1
    end = buf.rfind(b"\n", pos, length) + 1
    if end <= pos:
        if length - pos > max_line:
            state.in_oversized_line = True
            state.oversized_lines += 1
            state.lines += 1
            return FeedResult(consumed=length, entries=entries)
        return FeedResult(consumed=pos, entries=entries)
    _Parser(state, entries, max_line).lines(buf, pos, end)
    consumed = end
    if length - end > max_line:
        state.in_oversized_line = True
        state.oversized_lines += 1
        state.lines += 1
        consumed = length
    return FeedResult(consumed=consumed, entries=entries)


def iter_file(
    path: str,
    state: TranscriptState | None = None,
    start: int = 0,
    *,
    file_name: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[FeedResult]:
    """Stream a file from ``start`` in chunks; ``consumed`` of each result is relative
    to the end of the previous one, so ``start + sum(consumed)`` is the next offset.

    The whole file is never held: memory is one buffer of ``chunk_size`` that grows only
    to hold a line longer than it (up to :data:`MAX_LINE_BYTES`). Bytes are read into that
    buffer and parsed where they lie; a torn line at its end moves to its start.
    """
    if state is None:
        state = new_state(file_name or PurePosixPath(path).name)
    filled = 0
    with open(path, "rb", buffering=0) as handle:
        handle.seek(start)
        # Most transcripts are far smaller than a chunk: size the buffer to what is there
        # (one byte more, so the read that finds the end does not have to grow it).
        buffer = bytearray(min(chunk_size, max(os.fstat(handle.fileno()).st_size - start, 0) + 1))
        while True:
            if filled == len(buffer):
                # One line fills the buffer: grow it, up to the longest line we keep plus
                # one read (a longer line is skipped, so the buffer never needs more).
                grown = min(2 * len(buffer), MAX_LINE_BYTES + chunk_size)
                buffer.extend(bytes(grown - len(buffer)))
            with memoryview(buffer) as view:
                read = handle.readinto(view[filled:])
            if not read:
                return
            filled += read
            result = _feed(state, buffer, filled, MAX_LINE_BYTES)
            rest = filled - result.consumed
            with memoryview(buffer) as view:
                view[:rest] = view[result.consumed : filled]  # a memmove, no copy made
            filled = rest
            yield result


def parse_file(
    path: str,
    state: TranscriptState | None = None,
    start: int = 0,
    *,
    file_name: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
) -> FileParse:
    """Read a file from ``start`` to its last complete line.

    Pass the ``state`` and ``offset`` of the previous read to continue a grown file;
    ``file_name`` (default: the path's name) is the name entries and the state carry.
    """
    if state is None:
        state = new_state(file_name or PurePosixPath(path).name)
    entries: list[UsageEntry] = []
    offset = start
    for result in iter_file(path, state, start, chunk_size=chunk_size):
        entries.extend(result.entries)
        offset += result.consumed
    return FileParse(state=state, entries=entries, offset=offset)


# --- the line loop ----------------------------------------------------------------


def _parse_timestamp(value: object) -> datetime | None:
    """ISO 8601 with ``Z`` or an offset; a timestamp without a zone is taken as UTC."""
    if type(value) is not str:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    if moment.tzinfo is not UTC:
        try:
            return moment.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
            return None
    return moment


@cache
def _version_ok(version: str) -> bool:
    """Rule 1: a version, when present, starts with N.N.N (few distinct values: cached)."""
    return _VERSION.match(version) is not None


class _Parser:
    """Applies lines to one state; a class only to keep the hot loop's names local."""

    __slots__ = ("entries", "fallback_session", "max_line", "state")

    def __init__(self, state: TranscriptState, entries: list[UsageEntry], max_line: int) -> None:
        self.state = state
        self.entries = entries
        self.max_line = max_line
        self.fallback_session = session_of_file(state.file_name)

    def lines(self, buf: bytes | bytearray, start: int, end: int) -> None:
        """Apply the lines of ``buf[start:end]`` (each ends in ``\\n``), reading them where
        they lie: a line is copied only when it is small, and decoded through a view."""
        state = self.state
        max_line = self.max_line
        find = buf.find
        with memoryview(buf) as view:
            while start < end:
                stop = find(b"\n", start, end)
                first, start = start, stop + 1
                size = stop - first
                if size < _SMALL_LINE:
                    line = buf[first:stop]
                    if not line or line.isspace():
                        continue
                    state.lines += 1
                    # Decoding a small line costs about what searching it would.
                    self.decoded(line)
                    continue
                if buf[first] in _WHITESPACE and bytes(view[first:stop]).isspace():
                    continue
                state.lines += 1
                if size > max_line:
                    state.oversized_lines += 1
                elif self.worth_decoding(buf, first, stop):
                    self.decoded(view[first:stop])
                else:
                    self.skimmed(buf, first, stop)

    def worth_decoding(self, buf: bytes | bytearray, start: int, end: int) -> bool:
        """Whether a big line can hold anything beyond its time, told from a few byte
        searches: most of a transcript's bytes are in lines that cannot."""
        if buf.startswith(b'{"type":"file-history-snapshot"', start, end):
            return False
        kind = leading_type(buf, start, end)
        if kind is not None and kind not in (b"user", b"assistant"):
            # Only a top-level usage could count here (rule 1 does not look at the type).
            if buf.find(b'"usage"', start, end) < 0:
                return False
            return not (end - start > _BIG_LINE and kind in _SKIPPED_TYPES)
        return kind is not None or any(
            buf.find(marker, start, end) >= 0 for marker in (b'"usage"', b'"user"', b'"tool_use"')
        )

    def skimmed(self, buf: bytes | bytearray, start: int, end: int) -> None:
        """A line with nothing to count: only its timestamp (and the file's first
        ``sessionId``) matter, read from its bytes when that is exact."""
        state = self.state
        first, last = start, end
        while first < last and buf[first] in _WHITESPACE:
            first += 1
        while last > first and buf[last - 1] in _WHITESPACE:
            last -= 1
        if first == last or buf[first] != 0x7B or buf[last - 1] != 0x7D:  # '{' ... '}'
            state.bad_lines += 1  # not an object (an array, a number, null, torn JSON)
            return
        certain, raw_ts = tail_timestamp(buf, start, end)
        needs_session = state.session_id is None and buf.find(b'"sessionId"', start, end) >= 0
        needs_cwd = state.cwd is None and buf.find(b'"cwd"', start, end) >= 0
        if not certain or needs_session or needs_cwd:
            try:
                with memoryview(buf) as view:
                    envelope = ENVELOPE.decode(view[start:end])
            except ValueError:
                state.bad_lines += 1
                return
            raw_ts = envelope.timestamp
            if needs_session and type(envelope.sessionId) is str and envelope.sessionId:
                state.session_id = envelope.sessionId
            if state.cwd is None and type(envelope.cwd) is str and envelope.cwd:
                state.cwd = envelope.cwd
        if raw_ts is not None:
            moment = _parse_timestamp(raw_ts)
            if moment is not None:
                self.saw_time(moment)

    def decoded(self, line: bytes | bytearray | memoryview) -> None:
        parsed = decode(line)
        if parsed is None:
            self.state.bad_lines += 1
            return
        state = self.state
        moment = _parse_timestamp(parsed.timestamp)
        if moment is not None:
            self.saw_time(moment)
        session_id = parsed.sessionId
        if state.session_id is None and session_id:
            state.session_id = session_id
        if state.cwd is None and type(parsed.cwd) is str and parsed.cwd:
            state.cwd = parsed.cwd
        message = parsed.message
        if message is None:
            return
        line_key = parsed.uuid or hashlib.blake2b(line, digest_size=12).hexdigest()
        kind = parsed.type
        if kind == "assistant":
            if type(message.content) is list:
                self.tool_uses(message.content, line_key)
        elif kind == "user":
            self.user_message(message.content, line_key, parsed.isSidechain is True)
        if moment is not None and type(message.usage) is Usage:
            self.usage_entry(parsed, message, message.usage, moment, line_key)

    def saw_time(self, moment: datetime) -> None:
        state = self.state
        if state.started_at is None or moment < state.started_at:
            state.started_at = moment
        if state.ended_at is None or moment > state.ended_at:
            state.ended_at = moment
        micros = round(moment.timestamp() * 1_000_000)  # exact: < 2**53 until year 2255
        blocks = state.blocks
        if blocks:
            first, last = blocks[-1]
            if first <= micros <= last:
                return
            if last < micros <= last + _BLOCK_GAP_US:
                blocks[-1] = (first, micros)
                return
        add_to_blocks(blocks, micros, micros)

    def tool_uses(self, blocks: list[Block], line_key: str) -> None:
        state = self.state
        for index, block in enumerate(blocks):
            if block.type != "tool_use":
                continue
            key = block.id or f"{line_key}#t{index}"
            name = block.name or ""
            state.tool_uses[key] = name
            if name == "Skill":
                try:
                    skill_input = SKILL_INPUT.decode(block.input)
                except ValueError:
                    skill_input = SkillInput()
                skill = skill_input.skill or skill_input.name
                state.skills[key] = skill if type(skill) is str else ""

    def user_message(
        self, content: str | list[Block] | None, line_key: str, sidechain: bool
    ) -> None:
        state = self.state
        is_tool_result = False
        if type(content) is str:
            self.slash_commands(content, line_key, 0)
        elif type(content) is list:
            for index, block in enumerate(content):
                if block.type == "tool_result":
                    is_tool_result = True
                    if block.is_error is True:
                        state.tool_errors.add(block.tool_use_id or f"{line_key}#r{index}")
                elif type(block.text) is str:
                    self.slash_commands(block.text, line_key, index)
        if not is_tool_result and not sidechain:
            state.prompts.add(line_key)

    def slash_commands(self, text: str, line_key: str, block_index: int) -> None:
        if "<command-name>" not in text:
            return
        for number, match in enumerate(_SLASH_COMMAND.finditer(text)):
            self.state.slash_commands[f"{line_key}#c{block_index}.{number}"] = match[1]

    def usage_entry(
        self,
        parsed: Line,
        message: Message,
        usage: Usage,
        moment: datetime,
        line_key: str,
    ) -> None:
        """Rule 1's remaining tests, then the entry with rule 2's cache count."""
        breakdown = usage.cache_creation
        if breakdown is None:
            creation_5m, creation_1h = usage.cache_creation_input_tokens, 0
        else:
            creation_5m = breakdown.ephemeral_5m_input_tokens
            creation_1h = breakdown.ephemeral_1h_input_tokens
        version = parsed.version
        session_id = parsed.sessionId
        request_id = parsed.requestId
        message_id = message.id
        model = message.model
        if (
            version is None
            or session_id is None
            or request_id is None
            or message_id is None
            or model is None
            or parsed.cwd is None
            or parsed.costUSD is None
            or parsed.isApiErrorMessage is None
        ):
            return  # a JSON null in one of rule 1's fields
        if session_id == "" or request_id == "" or message_id == "" or model == "":
            return
        if version is not UNSET and not _version_ok(version):
            return
        self.entries.append(
            UsageEntry(
                message_id=None if message_id is UNSET else message_id,
                request_id=None if request_id is UNSET else request_id,
                session_id=self.fallback_session if session_id is UNSET else session_id,
                timestamp=moment,
                model=None if model is UNSET else model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_creation_tokens=creation_5m + creation_1h,
                cache_creation_5m=creation_5m,
                cache_creation_1h=creation_1h,
                cache_read_tokens=usage.cache_read_input_tokens,
                is_sidechain=parsed.isSidechain is True,
                speed=None if usage.speed is UNSET else usage.speed,
                file_name=self.state.file_name,
                line_key=line_key,
            )
        )


def add_to_blocks(blocks: list[tuple[int, int]], first: int, last: int) -> None:
    """Insert the span [first, last] (µs) into sorted activity blocks, merging any
    block within 600 s of it, so blocks stay what sorting every timestamp and
    splitting at gaps over 600 s would give."""
    low = 0
    high = len(blocks)
    while low < high:  # first block whose end reaches first - gap
        middle = (low + high) // 2
        if blocks[middle][1] < first - _BLOCK_GAP_US:
            low = middle + 1
        else:
            high = middle
    index = low
    while index < len(blocks) and blocks[index][0] <= last + _BLOCK_GAP_US:
        first = min(first, blocks[index][0])
        last = max(last, blocks[index][1])
        del blocks[index]
    blocks.insert(index, (first, last))
