"""The browser's way in: ``/login``, ``/logout`` and the dashboard page.

Signing in exchanges a personal access token for a server-side session: an HttpOnly,
SameSite=Lax cookie, plus a readable ``agnes_csrf`` cookie whose value the page sends back
in ``X-CSRF-Token`` on writes.
"""

from __future__ import annotations

import html
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from service.auth.middleware import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    caller_from_session_cookie,
)
from service.auth.secrets import digest, new_secret, same
from service.plugins.live import LivePlugin
from service.plugins.store import StorePlugin
from service.store import users

__all__ = [
    "DASHBOARD",
    "STATIC_DIR",
    "dashboard",
    "login",
    "login_page",
    "logout",
    "not_found_page",
    "old_dashboard",
    "root",
    "schema_page",
    "wants_html",
]

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
SESSION_LIFETIME = timedelta(days=14)
DASHBOARD = "/me/activity"


class LoginForm(msgspec.Struct):
    token: str = ""


class LogoutForm(msgspec.Struct):
    csrf_token: str = ""


def _page(name: str, status_code: int = 200, message: str = "") -> Response[str]:
    text = (STATIC_DIR / name).read_text(encoding="utf-8")
    text = text.replace("<!--message-->", html.escape(message))
    return Response(
        text,
        status_code=status_code,
        media_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


def _cookies(
    request: Request[Any, Any, Any], session: str, csrf: str, max_age: int
) -> list[Cookie]:
    secure = request.url.scheme == "https"
    common: dict[str, Any] = {"path": "/", "samesite": "lax", "secure": secure, "max_age": max_age}
    return [
        Cookie(key=SESSION_COOKIE, value=session, httponly=True, **common),
        Cookie(key=CSRF_COOKIE, value=csrf, httponly=False, **common),
    ]


@get("/login", exclude_from_auth=True, include_in_schema=False)
async def login_page() -> Response[str]:
    return _page("login.html")


@post("/login", exclude_from_auth=True, include_in_schema=False, status_code=303)
async def login(
    request: Request[Any, Any, Any],
    data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """Exchange a token for a session cookie, then go to the dashboard."""
    origin = request.headers.get("origin")
    if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
        return _page("login.html", 403, "Sign-in must come from this site's own login page.")
    token = data.token.strip()
    if not token:
        return _page("login.html", 401, "Paste a personal access token to sign in.")
    store = StorePlugin.of(request).store
    caller = await store.read(users.authenticate_token, digest(token))
    if isinstance(caller, str):
        return _page("login.html", 401, f"That token does not sign in: {caller}.")
    session, csrf = new_secret(), new_secret()
    await store.write(
        users.add_web_session,
        session_hash=digest(session),
        csrf=csrf,
        caller=caller,
        lifetime=SESSION_LIFETIME,
    )
    max_age = int(SESSION_LIFETIME.total_seconds())
    return Redirect(DASHBOARD, status_code=303, cookies=_cookies(request, session, csrf, max_age))


@post("/logout", exclude_from_auth=True, include_in_schema=False, status_code=303)
async def logout(
    request: Request[Any, Any, Any],
    data: Annotated[LogoutForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """End the browser session (the form or the X-CSRF-Token header carries the CSRF token)."""
    store = StorePlugin.of(request).store
    caller = await caller_from_session_cookie(store, request)
    if not isinstance(caller, str):
        sent = data.csrf_token or request.headers.get("x-csrf-token", "")
        if not (caller.csrf and same(sent, caller.csrf)):
            return Response(
                {"status_code": 403, "error": "forbidden", "detail": "missing or wrong CSRF token"},
                status_code=403,
            )
        session_hash = digest(request.cookies[SESSION_COOKIE])
        await store.write(users.end_web_session, session_hash)
        LivePlugin.of(request).hub.close_where("signed out", credential=("cookie", session_hash))
    return Redirect("/login", status_code=303, cookies=_cookies(request, "", "", 0))


@get(DASHBOARD, exclude_from_auth=True, include_in_schema=False)
async def dashboard(request: Request[Any, Any, Any]) -> Response[Any]:
    caller = await caller_from_session_cookie(StorePlugin.of(request).store, request)
    if isinstance(caller, str):
        return Redirect("/login", status_code=303)
    return _page("activity.html")


@get("/me/stats", exclude_from_auth=True, include_in_schema=False, status_code=301)
async def old_dashboard() -> Redirect:
    return Redirect(DASHBOARD, status_code=301)


@get("/", exclude_from_auth=True, include_in_schema=False)
async def root() -> Redirect:
    return Redirect(DASHBOARD, status_code=302)


def wants_html(request: Request[Any, Any, Any]) -> bool:
    """Whether the caller is a browser opening a page (it asks for HTML), not an API
    client (which asks for JSON, or for anything)."""
    return "text/html" in request.headers.get("accept", "")


def not_found_page(request: Request[Any, Any, Any]) -> Response[str]:
    """The 404 a browser gets: a page with a way home instead of a JSON error."""
    return _page("404.html", 404, request.url.path)


async def schema_page(request: Request[Any, Any, Any]) -> Response[str] | None:
    """``/schema`` opened in a browser: a page of our own (static/api.html) that shows the
    OpenAPI document, with nothing loaded from elsewhere. Anything else asking ``/schema``
    gets the JSON document, as before."""
    if request.url.path.rstrip("/") == "/schema" and wants_html(request):
        return _page("api.html")
    return None
