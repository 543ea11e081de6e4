"""Claude Code's JSON lines, read fast: typed decoders that name only the fields the
accounting reads, and byte scans that find a line's leading ``type`` and its top-level
``timestamp`` without decoding it.

Most bytes of a transcript sit in lines that carry nothing we count (``progress`` and
``file-history-snapshot`` lines, tool output): :mod:`service.ingest.transcript` tests each
line with these scans first and decodes only the lines that can carry usage or counts.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "ENVELOPE",
    "SKILL_INPUT",
    "Block",
    "Line",
    "Message",
    "SkillInput",
    "Usage",
    "decode",
    "leading_type",
    "tail_timestamp",
]

Count = Annotated[int, msgspec.Meta(ge=0)]


class Block(msgspec.Struct):
    type: str | None = None
    id: str | None = None
    name: str | None = None
    input: msgspec.Raw = msgspec.Raw(b"null")
    tool_use_id: str | None = None
    is_error: Any = None
    text: Any = None


class CacheCreation(msgspec.Struct):
    ephemeral_5m_input_tokens: Count = 0
    ephemeral_1h_input_tokens: Count = 0


class Usage(msgspec.Struct):
    """The shape rule 1 accepts (a null cache count or speed is not it); anything else
    fails and the line is read again leniently."""

    input_tokens: Count
    output_tokens: Count
    cache_creation_input_tokens: Count = 0
    cache_read_input_tokens: Count = 0
    cache_creation: CacheCreation | None = None
    speed: str | UnsetType = UNSET


# Fields rule 1 reads are typed ``... | None | UnsetType``: None is a JSON null, which
# (unlike an absent key) means "not an entry".
class Message(msgspec.Struct):
    id: str | UnsetType | None = UNSET
    model: str | UnsetType | None = UNSET
    usage: Usage | None = None
    content: str | list[Block] | None = None


class Line(msgspec.Struct):
    type: str | None = None
    uuid: str | None = None
    sessionId: str | UnsetType | None = UNSET
    timestamp: str | None = None
    version: str | UnsetType | None = UNSET
    requestId: str | UnsetType | None = UNSET
    cwd: str | UnsetType | None = UNSET
    costUSD: Any = UNSET
    isApiErrorMessage: Any = UNSET
    isSidechain: bool | None = None
    message: Message | None = None


class LenientMessage(Message):
    # A usage that is not rule 1's shape makes the line "not an entry" but must
    # not hide the line's other counts.
    usage: Any = None


class LenientLine(Line):
    message: LenientMessage | None = None


class SkillInput(msgspec.Struct):
    skill: Any = None
    name: Any = None


class Envelope(msgspec.Struct):
    timestamp: Any = None
    sessionId: Any = None
    cwd: Any = None


_LINE_DECODER = msgspec.json.Decoder(Line)
_LENIENT_DECODER = msgspec.json.Decoder(LenientLine)
SKILL_INPUT = msgspec.json.Decoder(SkillInput)
ENVELOPE = msgspec.json.Decoder(Envelope)


def decode(line: bytes | bytearray | memoryview) -> Line | None:
    """The line's fields we read, or None when it is not a JSON object we can read.

    The strict decoder covers nearly every line in one call. A usage of the wrong
    shape (a string count, a float, a negative number) fails it; the lenient retry
    keeps the line's other counts and leaves ``usage`` unusable, so no entry. Invalid
    UTF-8 inside a string we read is replaced rather than losing the line (msgspec
    reports it as ``UnicodeDecodeError`` before 0.20 and as ``DecodeError`` since).
    """
    try:
        return _decode_valid(line)
    except (UnicodeDecodeError, msgspec.DecodeError):
        pass
    repaired = bytes(line).decode("utf-8", "replace").encode()
    if repaired == line:
        return None  # not JSON at all: no repair of its bytes can help
    try:
        return _decode_valid(repaired)
    except (UnicodeDecodeError, msgspec.DecodeError):
        return None


def _decode_valid(line: bytes | bytearray | memoryview) -> Line | None:
    """Strict, then lenient; raises when the bytes are no JSON (or no UTF-8) at all."""
    try:
        return _LINE_DECODER.decode(line)
    except msgspec.ValidationError:
        pass
    try:
        return _LENIENT_DECODER.decode(line)
    except msgspec.ValidationError:
        return None


def leading_type(buf: bytes | bytearray, start: int, end: int) -> bytes | None:
    """The top-level ``type`` of the line ``buf[start:end]`` when it comes before any
    nested value, else None.

    Claude Code writes ``type`` ahead of the bulky ``data`` of progress lines and of the
    tool results on user lines, and as the first key of snapshot and queue lines, so
    this finds it without reading on.
    """
    pos = start + 1
    for _ in range(40):
        if pos >= end or buf[pos] != 0x22:  # '"'
            return None
        key_end = buf.find(b'"', pos + 1, end)
        if key_end < 0 or key_end + 1 >= end or buf[key_end + 1] != 0x3A:  # ':'
            return None
        value = key_end + 2
        if value >= end:
            return None
        first = buf[value]
        if first == 0x22:
            value_end = _string_end(buf, value + 1, end)
            if value_end < 0:
                return None
            if key_end - pos == 5 and buf.startswith(b'"type"', pos, key_end + 1):
                return bytes(buf[value + 1 : value_end])
            pos = value_end + 1
        elif first in (0x7B, 0x5B):  # '{', '['
            return None
        else:
            comma = buf.find(b",", value, end)
            if comma < 0:
                return None
            pos = comma
        if pos >= end or buf[pos] != 0x2C:  # ','
            return None
        pos += 1
    return None


def _string_end(buf: bytes | bytearray, start: int, end: int) -> int:
    """Index of the quote closing a JSON string whose contents start at ``start``."""
    while True:
        quote = buf.find(b'"', start, end)
        if quote < 0:
            return -1
        backslashes = 0
        probe = quote - 1
        while probe >= start and buf[probe] == 0x5C:  # '\\'
            backslashes += 1
            probe -= 1
        if backslashes % 2 == 0:
            return quote
        start = quote + 1


def tail_timestamp(buf: bytes | bytearray, start: int, end: int) -> tuple[bool, Any]:
    """The top-level ``timestamp`` of a line (``buf[start:end]``) we do not decode,
    found in its bytes.

    Claude Code writes it after any nested value, so the last ``"timestamp":"`` is
    top-level exactly when the bytes after its value close one object and open none.
    Returns (certain, value); when not certain the caller decodes the line instead.
    """
    found = buf.rfind(b'"timestamp":"', start, end)
    if found < 0:
        return (buf.find(b'"timestamp"', start, end) < 0, None)
    value_start = found + 13
    value_end = buf.find(b'"', value_start, end)
    if value_end < 0:
        return (False, None)
    rest = bytes(buf[value_end + 1 : end]).rstrip()
    if (
        rest.endswith(b"}")
        and rest.count(b"}") == 1
        and b"{" not in rest
        and b"[" not in rest
        and b"]" not in rest
    ):
        return (True, bytes(buf[value_start:value_end]).decode("ascii", "replace"))
    return (False, None)
