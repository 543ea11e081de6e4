"""``GET /api/sync/manifest``: what the server holds of the caller, and a record of the pull."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from litestar import Request, get

from service.api.openapi import errors
from service.auth.middleware import CHANGES_STATE
from service.models import AuditEvent, Caller, Manifest, iso
from service.store import Cursor, Store, audit, files, users


def record_manifest_fetch(
    cur: Cursor, event: AuditEvent, sessions_dir: Path
) -> tuple[Manifest, dict[str, int]]:
    users.record_pull(cur, event.user_id, event.timestamp)
    audit.insert_events(cur, [event])
    versions = users.bump_versions(cur, [event.user_id])
    return Manifest(
        generated_at=iso(event.timestamp) or "",
        user_id=event.user_id,
        files=files.manifest_files(cur, event.user_id, sessions_dir),
    ), versions


@get("/api/sync/manifest", responses=errors(401, 403), opt={CHANGES_STATE: True})
async def sync_manifest(request: Request[Caller, Any, Any]) -> Manifest:
    """The caller's stored session files; records ``last_pull_at`` and one ``manifest.fetch``.

    A GET that records (the contract of sync clients), so with the session cookie it needs
    the ``X-CSRF-Token`` header like a write: another site cannot make a signed-in
    browser record a pull by sending it here."""
    event = AuditEvent(
        id=str(uuid.uuid4()),
        timestamp=datetime.now(UTC),
        user_id=request.user.user_id,
        action="manifest.fetch",
        resource="manifest",
        result="ok",
        client_kind="api",
        client_ip=request.client.host if request.client else None,
    )
    store: Store = request.app.state.store
    sessions_dir = request.app.state.settings.sessions_dir
    manifest, versions = await store.write(record_manifest_fetch, event, sessions_dir)
    request.app.state.hub.notify(versions, {event.user_id: ("sync",)})
    return manifest
