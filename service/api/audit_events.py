"""``POST /api/audit/events``: other services hand in audit events over HTTP.

The events take the same path as a line another service appends to the spool: they are
appended to the server's own spool file, ``audit/api-YYYY-MM-DD.jsonl``, and that file
goes through the ingest queue. The answer waits for the batch, so a 200 means the events
are stored (or were already).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post
from litestar.params import JSONBody

from service import operations
from service.api.errors import ApiError, storage_error
from service.api.openapi import errors
from service.auth.middleware import admin_or_service
from service.ingest.audit import prepared
from service.ingest.spool import MAX_LINE_BYTES
from service.models import AuditAccepted, AuditEvent, Caller
from service.plugins.ingest import IngestPlugin
from service.plugins.store import StorePlugin
from service.spool_writer import spool_line
from service.store import audit, users

MAX_EVENTS = 10_000
_strict_events = msgspec.json.Decoder(list[AuditEvent])

__all__ = ["MAX_EVENTS", "post_audit_events"]


@post(
    "/api/audit/events",
    status_code=200,
    guards=[admin_or_service],
    responses=errors(400, 401, 403, 409, 413, 507),
)
async def post_audit_events(
    request: Request[Caller, Any, Any], data: JSONBody[list[AuditEvent]]
) -> AuditAccepted:
    """Store a list of audit events (admin or service token); all or nothing: an event for
    an unknown user (400), an id reused with other content (409) or an event longer than a
    spool line may be (413) refuses the whole batch."""
    if len(data) > MAX_EVENTS:
        raise ApiError(400, "too_many_events", f"send at most {MAX_EVENTS} events per request")
    # Litestar converts ``data`` leniently (a number becomes a timestamp, "5" a duration);
    # a spool line is read strictly, and an event must mean the same by either path.
    try:
        data = _strict_events.decode(await request.body())
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_event", str(exc)) from None
    try:
        events = [prepared(event) for event in data]
    except OverflowError:
        raise ApiError(
            400, "invalid_timestamp", "a timestamp falls outside years 1 to 9999 in UTC"
        ) from None
    if not events:
        return AuditAccepted(accepted=0, stored=0)
    store, settings = StorePlugin.of(request).store, StorePlugin.of(request).settings
    # All or nothing: everything the spool would skip or drop is refused here, up front.
    by_id: dict[str, AuditEvent] = {}
    for index, event in enumerate(events):
        assert event.id is not None
        size = len(spool_line(event))
        if size > MAX_LINE_BYTES:
            raise ApiError(
                413,
                "event_too_large",
                f"event {index} (id {event.id!r}) is {size} bytes as a spool line, more than"
                f" {MAX_LINE_BYTES}; nothing was stored",
            )
        if by_id.setdefault(event.id, event) != event:
            raise ApiError(
                409,
                "conflicting_event",
                f"event {index} reuses the id {event.id!r} of an earlier event in the batch"
                " with other content; nothing was stored",
            )
    unknown = await store.read(users.unknown_user_ids, [event.user_id for event in events])
    if unknown:
        raise ApiError(
            400,
            "unknown_user",
            f"no user has the id {', '.join(map(repr, unknown[:5]))}"
            f"{f' (and {len(unknown) - 5} more)' if len(unknown) > 5 else ''}: user_id must"
            " be an id that `users list` shows; nothing was stored",
        )
    reused = await store.read(audit.conflicting_ids, list(by_id.values()))
    if reused:
        raise ApiError(
            409,
            "conflicting_event",
            f"the id {reused[0]!r}{f' (and {len(reused) - 1} more)' if len(reused) > 1 else ''}"
            " belongs to a stored event with other content; nothing was stored",
        )
    try:
        stored = await operations.store_events(
            store, settings, IngestPlugin.of(request).queue, events
        )
    except OSError as exc:
        raise storage_error(exc, "the events") from None
    return AuditAccepted(accepted=len(events), stored=stored)
