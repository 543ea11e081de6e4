"""The loopback admin API that the ``users`` and ``tokens`` commands use while a server
holds the database. It is authenticated by the secret the server keeps in
``DATA_DIR/.admin.json`` (mode 0600) and answers only on the server's own loopback
listener for it (whatever ``--host`` is), to clients on loopback addresses."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, Router, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromQuery, JSONBody

from service import admin
from service.admin import SECRET_HEADER
from service.api.errors import ApiError
from service.auth.secrets import same
from service.ingest.batch import TRANSCRIPT_TABS
from service.ingest.pipeline import BatchReport
from service.ingest.queue import IngestQueue
from service.models import NewToken, TokenInfo, User
from service.store import Store
from service.store.ingest import reset_derived
from service.store.users import ConflictError, NotFoundError
from watchers.scan import archived_files


def loopback_with_secret(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Only the local CLI: a request from a loopback address with the secret, and, when the
    server has a listener of its own for the admin API (``serve`` always does), made to that
    listener, never to the address ``--host`` names."""
    client = connection.client.host if connection.client else ""
    try:
        local = ipaddress.ip_address(client).is_loopback
    except ValueError:
        local = False
    listener: tuple[str, int] | None = connection.app.state.get("admin_listener")
    server = connection.scope.get("server")
    if listener is not None:
        local = local and server is not None and tuple(server[:2]) == listener
    secret: str = connection.app.state.admin_secret
    if not (local and same(connection.headers.get(SECRET_HEADER, ""), secret)):
        raise PermissionDeniedException(detail="the admin API is for the local CLI only")


class NewUser(msgspec.Struct, frozen=True):
    email: str
    is_admin: bool = False


class Activation(msgspec.Struct, frozen=True):
    email: str
    active: bool


class NewTokenRequest(msgspec.Struct, frozen=True):
    email: str
    name: str = "default"
    expires_days: int | None = None
    is_service: bool = False


class Revoke(msgspec.Struct, frozen=True):
    token_or_prefix: str


async def _run(request: Request[Any, Any, Any], fn: Any, *args: Any) -> Any:
    store: Store = request.app.state.store
    try:
        return await store.write(fn, *args)
    except NotFoundError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except ConflictError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


@post("/users", status_code=200)
async def add_user(request: Request[Any, Any, Any], data: JSONBody[NewUser]) -> User:
    return await _run(request, admin.add_user, data.email, data.is_admin)  # type: ignore[no-any-return]


@get("/users")
async def list_users(request: Request[Any, Any, Any]) -> list[User]:
    return await _run(request, admin.list_users)  # type: ignore[no-any-return]


@post("/users/active", status_code=200)
async def set_active(request: Request[Any, Any, Any], data: JSONBody[Activation]) -> User:
    user: User = await _run(request, admin.set_active, data.email, data.active)
    if not user.is_active:
        request.app.state.hub.close_where("user deactivated", user_id=user.id)
    return user


@post("/tokens", status_code=200)
async def create_token(
    request: Request[Any, Any, Any], data: JSONBody[NewTokenRequest]
) -> NewToken:
    return await _run(  # type: ignore[no-any-return]
        request, admin.create_token, data.email, data.name, data.expires_days, data.is_service
    )


@get("/tokens")
async def list_tokens(
    request: Request[Any, Any, Any], email: FromQuery[str | None] = None
) -> list[TokenInfo]:
    return await _run(request, admin.list_tokens, email)  # type: ignore[no-any-return]


@post("/tokens/revoke", status_code=200)
async def revoke_token(request: Request[Any, Any, Any], data: JSONBody[Revoke]) -> TokenInfo:
    info: TokenInfo = await _run(request, admin.revoke_token, data.token_or_prefix)
    request.app.state.hub.close_where("token revoked", token_id=info.id)
    return info


class IngestRequest(msgspec.Struct, frozen=True):
    paths: list[str]


@post("/ingest", status_code=200)
async def ingest(request: Request[Any, Any, Any], data: JSONBody[IngestRequest]) -> BatchReport:
    """Ingest files the CLI has just archived under ``user_sessions/``."""
    queue: IngestQueue = request.app.state.ingest_queue
    return await queue.ingest([Path(p) for p in data.paths])


@post("/reprocess", status_code=200)
async def reprocess(request: Request[Any, Any, Any]) -> BatchReport:
    """Forget everything derived from transcripts and read every archived file again."""
    store: Store = request.app.state.store
    queue: IngestQueue = request.app.state.ingest_queue
    async with queue.exclusive():
        versions = await store.write(reset_derived)
    request.app.state.hub.notify(versions, dict.fromkeys(versions, TRANSCRIPT_TABS))
    files = await anyio.to_thread.run_sync(archived_files, request.app.state.settings)
    return await queue.ingest([path for path, _, _ in files])


router = Router(
    "/api/admin",
    route_handlers=[
        add_user,
        list_users,
        set_active,
        create_token,
        list_tokens,
        revoke_token,
        ingest,
        reprocess,
    ],
    guards=[loopback_with_secret],
    opt={"exclude_from_auth": True},
    include_in_schema=False,
)
