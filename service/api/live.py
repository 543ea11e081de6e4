"""Live updates: ``WS /api/me/live`` pushes, ``GET /api/me/live/poll`` long-polls.

:data:`routes` are all of them, registered together by the live plugin
(:class:`service.plugins.live.LivePlugin`), which also runs the hub they take.

The socket is authenticated like the REST API: the session cookie (only from this site's
own pages: the ``Origin`` must be ours, so another site cannot open it in the user's name),
a ``Bearer`` token, or a single-use ticket from ``POST /api/me/live/ticket`` passed as
``?ticket=``. Protocol: a snapshot on connect; an update with only the changed tabs after
every change; a ping every 25 s, answered with a pong; ``{"type": "resync"}`` asks for a
fresh snapshot.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Request, Response, Router, WebSocket, get, post, websocket
from litestar.exceptions import NotAuthorizedException, WebSocketDisconnect
from litestar.openapi import ResponseSpec
from litestar.params import Parameter
from litestar.types import ControllerRouterHandler

from service.api.openapi import errors
from service.auth.middleware import check, credential, identify
from service.hub import Connection, Hub
from service.models import Caller, Changes, ClientMessage, Credential, Ping, Resync, Ticket
from service.plugins.live import LivePlugin
from service.plugins.store import StorePlugin
from service.store.users import Grant

__all__ = ["PING_SECONDS", "live", "poll", "routes", "same_origin", "ticket"]

PING_SECONDS = 25.0
UNAUTHENTICATED = 4401
FORBIDDEN = 4403
EXPIRY_SLACK = 0.05
"""Seconds past an expiry before the credential is checked again (so the check sees it)."""
_client_message = msgspec.json.Decoder(ClientMessage)
_ping = msgspec.json.encode(Ping()).decode()


def same_origin(socket: WebSocket[Any, Any, Any]) -> bool:
    origin = socket.headers.get("origin")
    if origin is None:
        return True  # not a browser: no other site can be behind it
    scheme = "https" if socket.url.scheme in ("wss", "https") else "http"
    return origin == f"{scheme}://{socket.headers.get('host', '')}"


async def authenticate(
    socket: WebSocket[Any, Any, Any], hub: Hub
) -> tuple[Credential, Grant] | tuple[int, str]:
    """The credential the socket opens with and who it stands for now, or (close code,
    reason). A ticket carries the credential it was issued for, which is checked again
    here: a ticket outlives neither a revocation nor a sign-out, a deactivation, an expiry."""
    ticket = socket.query_params.get("ticket")
    if ticket:
        presented = hub.redeem_ticket(ticket)
        if presented is None:
            return UNAUTHENTICATED, "unknown or used ticket"
    else:
        found = credential(socket)
        if isinstance(found, str):
            return UNAUTHENTICATED, found
        presented = found
        if presented[0] == "cookie" and not same_origin(socket):
            return FORBIDDEN, "cross-site socket refused"
    grant = await check(socket, presented)
    if not isinstance(grant.caller, Caller):
        return UNAUTHENTICATED, grant.caller
    return presented, grant


@websocket("/api/me/live", exclude_from_auth=True)
async def live(socket: WebSocket[Any, Any, Any]) -> None:
    hub = LivePlugin.of(socket).hub
    await socket.accept()
    found = await authenticate(socket, hub)
    if isinstance(found[0], int):
        await socket.close(code=found[0], reason=str(found[1]))
        return
    presented, grant = found
    assert isinstance(grant.caller, Caller)
    tz = socket.query_params.get("tz") or "UTC"
    if tz not in StorePlugin.of(socket).time_zones:
        tz = "UTC"
    connection = hub.connect(grant.caller, tz, credential=presented, until=grant.until)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_listen, socket, connection, tasks.cancel_scope)
            await _speak(socket, connection, hub)
            tasks.cancel_scope.cancel()
    except WebSocketDisconnect:
        pass
    finally:
        hub.disconnect(connection)


def _seconds_until(moment: datetime | None) -> float:
    if moment is None:
        return math.inf
    return max(0.0, (moment - datetime.now(UTC)).total_seconds()) + EXPIRY_SLACK


async def _speak(socket: WebSocket[Any, Any, Any], connection: Connection, hub: Hub) -> None:
    """Send what the hub has for the connection; when idle for :data:`PING_SECONDS` send a
    ping. The credential is checked again at every ping and at the moment it expires, so a
    socket ends (``4401`` with the reason) when its token or session does."""
    quiet_since = time.monotonic()
    while True:
        message: bytes | None = b""
        ping_in = PING_SECONDS - (time.monotonic() - quiet_since)
        with anyio.move_on_after(min(ping_in, _seconds_until(connection.until))):
            message = await connection.next_message(hub)
        if message is None:
            await socket.close(code=UNAUTHENTICATED, reason=connection.closed_reason or "")
            return
        if message:
            await socket.send_text(message.decode())
            quiet_since = time.monotonic()
            continue
        grant = await check(socket, connection.credential)
        if not isinstance(grant.caller, Caller):
            await socket.close(code=UNAUTHENTICATED, reason=grant.caller)
            return
        connection.until = grant.until
        if time.monotonic() - quiet_since >= PING_SECONDS:
            await socket.send_text(_ping)
            quiet_since = time.monotonic()


async def _listen(
    socket: WebSocket[Any, Any, Any], connection: Connection, scope: anyio.CancelScope
) -> None:
    try:
        while True:
            text = await socket.receive_text()
            try:
                message = _client_message.decode(text)
            except msgspec.DecodeError:
                continue  # not ours to fail on: the protocol ignores what it does not know
            if isinstance(message, Resync):
                connection.needs_snapshot = True
                connection.wakeup.set()
    except WebSocketDisconnect:
        scope.cancel()


@post("/ticket", status_code=200, responses=errors(401, 403))
async def ticket(request: Request[Caller, Any, Any]) -> Ticket:
    """A single-use ticket (valid 60 s) for opening the socket as ``?ticket=``."""
    hub = LivePlugin.of(request).hub
    presented = credential(request)
    assert not isinstance(presented, str), "the auth middleware let this request in"
    return Ticket(ticket=hub.issue_ticket(presented))


@get(
    "/poll",
    status_code=200,
    responses={
        **errors(400, 401),
        204: ResponseSpec(None, description="No change within `timeout` seconds."),
    },
)
async def poll(
    request: Request[Caller, Any, Any],
    since: Annotated[int, Parameter(ge=0, description="The version the client has.")],
    timeout: Annotated[  # noqa: ASYNC109 - the API's parameter name (DESIGN.md)
        float, Parameter(ge=0, le=30, description="Seconds to wait for a change (up to 30).")
    ] = 25,
) -> Response[Changes]:
    """Answers as soon as the caller's version passes ``since``: the new version and the tabs
    that changed; ``204`` if nothing changed within ``timeout`` seconds."""
    hub = LivePlugin.of(request).hub
    user_id = request.user.user_id
    version = await hub.wait_for_change(user_id, since, timeout)
    still = await identify(request)  # the wait may have outlived the credential
    if not isinstance(still, Caller):
        raise NotAuthorizedException(
            detail=still, headers={"WWW-Authenticate": 'Bearer realm="agnes"'}
        )
    if version is None:
        # no body; declared Response[Changes | None], /schema would call the 200 nullable
        return Response(None, status_code=204)  # type: ignore[arg-type]
    return Response(Changes(version=version, changed=hub.changes_since(user_id, since)))


routes: list[ControllerRouterHandler] = [
    live,
    Router("/api/me/live", route_handlers=[ticket, poll], tags=["me"]),
]
"""The socket, and the ticket and long-poll beside it (tagged with the rest of ``/api/me``)."""
