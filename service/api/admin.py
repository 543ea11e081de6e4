"""The loopback admin API that the CLI's admin commands use while a server holds the
database: the same :mod:`service.operations` they run on the database directly. It is
authenticated by the secret the server keeps in ``DATA_DIR/.admin.json`` (mode 0600) and
answers only on the server's own loopback listener for it (whatever ``--host`` is), to
clients on loopback addresses."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from litestar import Request, Router, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromQuery, JSONBody

from service import operations
from service.admin import SECRET_HEADER
from service.api.errors import ApiError
from service.auth.secrets import same
from service.ingest.pipeline import BatchReport
from service.models import NewToken, TokenInfo, User
from service.plugins.ingest import IngestPlugin
from service.plugins.live import LivePlugin
from service.plugins.store import StorePlugin
from service.store.users import ConflictError, NotFoundError

__all__ = ["LocalCliOnly", "router"]

T = TypeVar("T")


@dataclass(frozen=True)
class LocalCliOnly:
    """Guard: only the local CLI. A request from a loopback address with the secret, and,
    when the server has a listener of its own for the admin API (``serve`` always does),
    made to that listener, never to the address ``--host`` names."""

    secret: str
    listener: tuple[str, int] | None = None

    def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        client = connection.client.host if connection.client else ""
        try:
            local = ipaddress.ip_address(client).is_loopback
        except ValueError:
            local = False
        server = connection.scope.get("server")
        if self.listener is not None:
            local = local and server is not None and tuple(server[:2]) == self.listener
        if not (local and same(connection.headers.get(SECRET_HEADER, ""), self.secret)):
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


async def _run(request: Request[Any, Any, Any], fn: Callable[..., T], *args: Any) -> T:
    """``fn(cursor, *args)`` in one transaction; its refusals as the CLI's errors."""
    try:
        return await StorePlugin.of(request).store.write(fn, *args)
    except NotFoundError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except ConflictError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


@post("/users", status_code=200)
async def add_user(request: Request[Any, Any, Any], data: JSONBody[NewUser]) -> User:
    return await _run(request, operations.add_user, data.email, data.is_admin)


@get("/users")
async def list_users(request: Request[Any, Any, Any]) -> list[User]:
    return await _run(request, operations.list_users)


@post("/users/active", status_code=200)
async def set_active(request: Request[Any, Any, Any], data: JSONBody[Activation]) -> User:
    user = await _run(request, operations.set_active, data.email, data.active)
    if not user.is_active:
        LivePlugin.of(request).hub.close_where("user deactivated", user_id=user.id)
    return user


@post("/tokens", status_code=200)
async def create_token(
    request: Request[Any, Any, Any], data: JSONBody[NewTokenRequest]
) -> NewToken:
    return await _run(
        request, operations.create_token, data.email, data.name, data.expires_days, data.is_service
    )


@get("/tokens")
async def list_tokens(
    request: Request[Any, Any, Any], email: FromQuery[str | None] = None
) -> list[TokenInfo]:
    return await _run(request, operations.list_tokens, email)


@post("/tokens/revoke", status_code=200)
async def revoke_token(request: Request[Any, Any, Any], data: JSONBody[Revoke]) -> TokenInfo:
    info = await _run(request, operations.revoke_token, data.token_or_prefix)
    LivePlugin.of(request).hub.close_where("token revoked", token_id=info.id)
    return info


class IngestRequest(msgspec.Struct, frozen=True):
    paths: list[str]


@post("/ingest", status_code=200)
async def ingest(request: Request[Any, Any, Any], data: JSONBody[IngestRequest]) -> BatchReport:
    """Ingest files the CLI has just archived under ``user_sessions/``."""
    queue = IngestPlugin.of(request).queue
    return await queue.ingest([Path(p) for p in data.paths])


@post("/reprocess", status_code=200)
async def reprocess(request: Request[Any, Any, Any]) -> BatchReport:
    """Forget everything derived from transcripts and read every archived file again."""
    data = StorePlugin.of(request)
    queue = IngestPlugin.of(request).queue
    return await operations.reprocess(data.store, data.settings, queue, LivePlugin.of(request).hub)


def router(secret: str, listener: tuple[str, int] | None = None) -> Router:
    """``/api/admin``, for the local CLI only (see :class:`LocalCliOnly`)."""
    return Router(
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
        guards=[LocalCliOnly(secret, listener)],
        opt={"exclude_from_auth": True},
        include_in_schema=False,
    )
