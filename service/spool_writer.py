"""Append audit events to the spool safely, from any Python service on the same host.

The spool is plain append-only JSON-lines files in ``DATA_DIR/audit/``; agnes-activity
notices a new line within a fraction of a second and stores each event exactly once. What
makes that safe, and what this helper guarantees:

- each event is one JSON object on one line, ending in ``\\n``;
- a call writes all its lines with ``O_APPEND`` in one ``write`` (repeated only if the
  kernel writes less), under a lock shared by the threads of this process, so lines of
  two writers never interleave and a reader never sees a half line as finished;
- events get their stable id before they are written (``id`` is kept when given), so a
  retried append stores nothing twice;
- files are never rewritten or truncated. Start a new file (a new day, see
  :func:`daily_name`) rather than rotating one in place.

Example::

    from service.spool_writer import append_events, daily_name
    append_events("/srv/agnes/data/audit", [event], name=daily_name("query-service"))
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

import msgspec

from service.ingest.audit import prepared
from service.ingest.spool import MAX_LINE_BYTES, is_spool_name
from service.models import AuditEvent

__all__ = ["append_events", "daily_name", "encode_lines", "spool_line"]

_encode = msgspec.json.Encoder().encode
_lock = threading.Lock()
_PLAIN_NAME = re.compile(r"[^/\x00-\x1f\x7f]+")
"""No folder, no control character (a line break in a name is never plain); matched whole."""


def daily_name(writer: str, day: date | None = None) -> str:
    """``<writer>-YYYY-MM-DD.jsonl`` (today in UTC by default): one file per writer and
    day keeps files small and means no two services ever append to the same file."""
    day = day or datetime.now(UTC).date()
    return f"{writer}-{day.isoformat()}.jsonl"


def spool_line(event: AuditEvent) -> bytes:
    """``event`` (prepared: its id set) as one spool line, without its ``\\n``."""
    return _encode(event)


def encode_lines(events: Iterable[AuditEvent]) -> bytes:
    """The spool lines for ``events``, each with its id set. Raises ``ValueError`` for an
    event longer than the service reads as a line (:data:`MAX_LINE_BYTES`), before anything
    is written: a batch is stored whole or not at all."""
    lines = []
    for index, event in enumerate(events):
        line = spool_line(prepared(event))
        if len(line) > MAX_LINE_BYTES:
            raise ValueError(
                f"event {index} is {len(line)} bytes as a spool line; at most {MAX_LINE_BYTES}"
            )
        lines.append(line + b"\n")
    return b"".join(lines)


def append_events(
    audit_dir: str | os.PathLike[str], events: Iterable[AuditEvent], *, name: str
) -> Path:
    """Append ``events`` to ``audit_dir/name`` and return that path.

    ``name`` must be a plain file name ending in ``.jsonl`` that does not start with a dot
    (dot names are ignored by the service, for temporary files). Raises ``ValueError`` for
    a bad name or an event longer than 1 MiB as a line (nothing is written then),
    ``OverflowError`` for a timestamp outside years 1 to 9999 in UTC, and ``OSError`` when
    the file cannot be written.
    """
    if not _PLAIN_NAME.fullmatch(name) or not is_spool_name(name):
        raise ValueError(f"spool file name {name!r} must be a plain *.jsonl name, no leading dot")
    path = Path(audit_dir) / name
    data = encode_lines(events)
    if not data:
        return path
    with _lock:
        handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            start = os.fstat(handle).st_size
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(handle, view) :]
            except OSError:
                # All or nothing: a torn last line would swallow the next append's first.
                os.ftruncate(handle, start)
                raise
        finally:
            os.close(handle)
    return path
