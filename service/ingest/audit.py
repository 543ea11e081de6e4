"""Audit events from other services: one JSON object per line, stored exactly once.

Events without an ``id`` get one derived from their content, so the same line read twice
(or posted twice) is still one event.
"""

from __future__ import annotations

import hashlib
from datetime import UTC

import msgspec

from service.models import AuditEvent

_canonical = msgspec.json.Encoder(order="sorted").encode


def prepared(event: AuditEvent) -> AuditEvent:
    """The event as stored: timestamp in UTC (a zoneless one is taken as UTC), id set."""
    ts = event.timestamp
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    event = msgspec.structs.replace(event, timestamp=ts)
    if event.id is None:
        digest = hashlib.sha256(_canonical(event)).hexdigest()[:32]
        event = msgspec.structs.replace(event, id=f"sha256:{digest}")
    return event
