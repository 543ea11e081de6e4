"""``POST /api/audit/events``: other services hand in audit events over HTTP."""

from __future__ import annotations

from typing import Any

from litestar import Request, post
from litestar.params import JSONBody

from service.api.errors import ApiError
from service.auth.middleware import admin_or_service
from service.ingest.audit import prepared
from service.models import AuditAccepted, AuditEvent, Caller
from service.store import Cursor, Store, audit, users

MAX_EVENTS = 10_000


def store_events(cur: Cursor, events: list[AuditEvent]) -> int:
    stored_for = audit.insert_events(cur, events)
    users.bump_versions(cur, set(stored_for))
    return len(stored_for)


@post("/api/audit/events", status_code=200, guards=[admin_or_service])
async def post_audit_events(
    request: Request[Caller, Any, Any], data: JSONBody[list[AuditEvent]]
) -> AuditAccepted:
    """Store a list of audit events (admin or service token); all or nothing."""
    if len(data) > MAX_EVENTS:
        raise ApiError(400, "too_many_events", f"send at most {MAX_EVENTS} events per request")
    try:
        events = [prepared(event) for event in data]
    except OverflowError:
        raise ApiError(
            400, "invalid_timestamp", "a timestamp falls outside years 1 to 9999 in UTC"
        ) from None
    store: Store = request.app.state.store
    stored = await store.write(store_events, events)
    return AuditAccepted(accepted=len(events), stored=stored)
