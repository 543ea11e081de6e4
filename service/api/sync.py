"""``GET /api/sync/manifest``: what the server holds of the caller, and a record of the pull."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from litestar import Request, get

from service import operations
from service.api.openapi import errors
from service.auth.middleware import CHANGES_STATE
from service.models import AuditEvent, Caller, Manifest
from service.plugins.live import LivePlugin
from service.plugins.store import StorePlugin

__all__ = ["sync_manifest"]


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
    data = StorePlugin.of(request)
    hub = LivePlugin.of(request).hub
    return await operations.fetch_manifest(data.store, hub, event, data.settings.sessions_dir)
