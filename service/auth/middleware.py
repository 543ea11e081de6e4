"""Authentication for every ``/api`` route but health, and CSRF for cookie writes.

A request is authenticated by ``Authorization: Bearer <token>`` or by the session cookie
set by ``/login``. A state-changing request authenticated by the cookie (any method but
GET, HEAD and OPTIONS, and a GET marked :data:`CHANGES_STATE`) must also send the
session's CSRF token in the ``X-CSRF-Token`` header (the dashboard reads it from the
``agnes_csrf`` cookie), so another site cannot make the browser write in the user's name.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from service.auth.secrets import digest, same
from service.models import Caller, Credential
from service.plugins.store import StorePlugin
from service.store import Store, users
from service.store.users import Grant

__all__ = [
    "CHANGES_STATE",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "TokenAuthMiddleware",
    "admin_or_service",
    "caller_from_session_cookie",
    "check",
    "credential",
    "identify",
]

SESSION_COOKIE = "agnes_session"
CSRF_COOKIE = "agnes_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHANGES_STATE = "changes_state"
"""A route ``opt`` for a GET that records something (``GET /api/sync/manifest``): with the
cookie it needs the CSRF token like a write, since SameSite=Lax still sends the cookie
when another site sends the browser to a GET address."""


async def caller_from_session_cookie(
    store: Store, connection: ASGIConnection[Any, Any, Any, Any]
) -> Caller | str:
    cookie = connection.cookies.get(SESSION_COOKIE)
    if not cookie:
        return "no token"
    return await store.read(users.authenticate_web_session, digest(cookie))


def credential(connection: ASGIConnection[Any, Any, Any, Any]) -> Credential | str:
    """The credential a request or websocket presents, or why it presents none.

    An ``Authorization`` header that is there at all is the credential, even when empty or
    malformed (then it is refused): it never falls back to the cookie, so whether a cookie
    was used, and must pass the cookie's checks (CSRF, the socket's ``Origin``), is never in
    doubt."""
    header = connection.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "malformed Authorization header: expected 'Bearer <token>'"
        return "bearer", digest(token.strip())
    cookie = connection.cookies.get(SESSION_COOKIE)
    if not cookie:
        return "no token"
    return "cookie", digest(cookie)


async def check(connection: ASGIConnection[Any, Any, Any, Any], presented: Credential) -> Grant:
    """Who ``presented`` stands for now (or why no one), and until when that holds by itself."""
    kind, secret_hash = presented
    found = StorePlugin.of(connection).principals
    return await (found.bearer_grant if kind == "bearer" else found.session_grant)(secret_hash)


async def identify(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller | str:
    """The caller of a request or websocket, or why there is none."""
    presented = credential(connection)
    if isinstance(presented, str):
        return presented
    return (await check(connection, presented)).caller


class TokenAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        caller = await identify(connection)
        if isinstance(caller, str):
            raise NotAuthorizedException(
                detail=caller, headers={"WWW-Authenticate": 'Bearer realm="agnes"'}
            )
        if caller.via == "cookie" and connection.scope["type"] == ScopeType.HTTP:
            method = connection.scope["method"]
            sent = connection.headers.get(CSRF_HEADER, "")
            writes = method not in SAFE_METHODS or connection.route_handler.opt.get(CHANGES_STATE)
            if writes and not (caller.csrf and same(sent, caller.csrf)):
                raise PermissionDeniedException(
                    detail="missing or wrong CSRF token: send the agnes_csrf cookie's value"
                    " in the X-CSRF-Token header"
                )
        return AuthenticationResult(user=caller, auth=caller.via)


def admin_or_service(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: only admins and service tokens may write audit events for others."""
    caller: Caller = connection.user
    if not (caller.is_admin or caller.is_service):
        raise PermissionDeniedException(detail="this needs an admin or a service token")
