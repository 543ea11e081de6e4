"""Reading the audit spool: append-only ``DATA_DIR/audit/*.jsonl`` files of audit events.

Other services append one JSON object per line (see :mod:`service.spool_writer`); this
module reads what is new since the stored offset. Only complete lines are consumed, so a
line that is still being written waits for its end. A line that is not an audit event is
skipped and counted, never fatal. Every event gets its stable id here
(:func:`service.ingest.audit.prepared`), so reading a line twice, after a replaced file or
a crash between read and commit, still stores it once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import msgspec

from service.ingest.audit import prepared
from service.ingest.fingerprint import fingerprint, not_a_plain_file
from service.models import AuditEvent

SUFFIX = ".jsonl"
MAX_LINE_BYTES = 1 << 20  # an audit event is small; a longer line is skipped as bad
CHUNK_BYTES = 1 << 20

_decode_event = msgspec.json.Decoder(AuditEvent).decode


class KnownSpool(msgspec.Struct, frozen=True):
    """What the store remembers of a spool file between two reads of it."""

    path: str
    read_offset: int
    fingerprint: str | None
    bad_lines: int


class SpoolJob(msgspec.Struct, frozen=True):
    absolute: str
    path: str  # relative to audit/
    known: KnownSpool | None


class SpoolResult(msgspec.Struct, kw_only=True):
    """One spool file's outcome in a batch: where reading stopped and the events found."""

    path: str  # relative to audit/
    size: int = 0
    read_offset: int = 0
    fingerprint: str | None = None
    bad_lines: int = 0  # in the whole file up to read_offset
    events: list[AuditEvent] = msgspec.field(default_factory=list)
    reread: bool = True
    error: str | None = None
    bytes_read: int = 0  # what this read added, for reports
    lines_read: int = 0
    bad_lines_read: int = 0


def is_spool_name(name: str) -> bool:
    """Spool files end in ``.jsonl``; a leading dot marks a writer's temporary file."""
    return name.endswith(SUFFIX) and not name.startswith(".")


def read_spool(job: SpoolJob) -> SpoolResult:
    """Read the complete lines appended since the last read (pure I/O and parsing)."""
    result = SpoolResult(path=job.path)
    try:
        info = os.lstat(job.absolute)
        result.error = not_a_plain_file(info)
        if result.error is not None:
            return result
        handle = os.open(job.absolute, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            _read_new_lines(handle, job.known, result)
        finally:
            os.close(handle)
    except OSError as exc:
        result.error = f"cannot read: {exc.strerror or exc}"
    return result


def _read_new_lines(handle: int, known: KnownSpool | None, result: SpoolResult) -> None:
    size = os.fstat(handle).st_size  # bytes appended while we read wait for the next read
    start, bad_before = 0, 0
    if (
        known is not None
        and known.read_offset <= size
        and fingerprint(handle, known.read_offset) == known.fingerprint
    ):
        start, bad_before = known.read_offset, known.bad_lines
    consumed = start
    for end, line in complete_lines(handle, start, size):
        consumed = end
        if line is None:
            result.bad_lines_read += 1  # longer than MAX_LINE_BYTES
            continue
        if not line.strip():
            continue
        result.lines_read += 1
        try:
            result.events.append(prepared(_decode_event(line)))
        except (msgspec.DecodeError, OverflowError):
            result.bad_lines_read += 1
    result.size = size
    result.reread = start == 0
    result.read_offset = consumed
    result.bytes_read = consumed - start
    result.bad_lines = bad_before + result.bad_lines_read
    result.fingerprint = fingerprint(handle, consumed)


def complete_lines(handle: int, start: int, size: int) -> Iterator[tuple[int, bytes | None]]:
    """Each complete line between ``start`` and ``size`` with the offset just past its
    newline; an overlong line comes as ``None`` without ever being held in memory whole.
    A last line without its newline is not yielded: its writer is not done with it."""
    position = start
    partial = bytearray()
    overlong = False
    while position < size:
        chunk = os.pread(handle, min(CHUNK_BYTES, size - position), position)
        if not chunk:
            break  # the file shrank under us; the next read sees a new fingerprint
        pieces = chunk.split(b"\n")
        end = position
        for piece in pieces[:-1]:
            end += len(piece) + 1
            if overlong or len(partial) + len(piece) > MAX_LINE_BYTES:
                yield end, None
            else:
                yield end, bytes(partial + piece) if partial else piece
            partial.clear()
            overlong = False
        if not overlong:
            partial += pieces[-1]
            if len(partial) > MAX_LINE_BYTES:
                partial.clear()
                overlong = True
        position += len(chunk)
