"""The HTTP API fuzzed from its own OpenAPI document with schemathesis: whatever a caller
sends, no answer is a 5xx, every answer is one the document describes (status code,
content type, body schema, headers), and no answer carries another user's data.

The document is read from the running service's ``/schema/openapi.json``; every operation
in it is run with generated data (schemathesis' examples, coverage and fuzzing phases,
valid and invalid inputs) as user A, while user B's data sits in the same database,
marked with ``MARK`` in file names, models, session ids, audit resources and params.

Not in the document, so not fuzzed here: the loopback admin API (``/api/admin``, for the
local CLI only, behind a secret; :func:`test_admin_api_refuses_a_users_token` checks that
A cannot use it), the sign-in pages and the websocket (tested in ``test_login.py`` and
``test_live.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import schemathesis
from schemathesis import Case, CheckContext, CheckFunction, Response
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
)

from service import operations
from tests.conftest import Account, Server
from tests.seed import (
    add_events,
    add_session,
    add_usage,
    assistant_line,
    event,
    serve,
    upload_and_wait,
)
from tests.test_openapi import PUBLIC

MARK = "LEAK-b7f3e9"
"""In every string of user B's data: no answer to user A may contain it."""

EXAMPLES = 25
"""Generated cases per operation in the fuzzing phase (the examples and coverage phases
add their own fixed sets); derandomized, so every run sends the same requests."""

SEMANTIC_INPUT = {
    "GET /api/me/stats/sessions": "a window is days, or from/to in order and within 3,660"
    " days, in a time zone the database knows",
    "GET /api/me/stats/tokens": "tz must be a time zone the database knows; a window is days,"
    " or from/to in order and within 3,660 days",
    "GET /api/me/stats/blocks": "tz must be a time zone the database knows; token_limit a"
    " whole number of tokens or max",
    "GET /api/me/stats/queries": "a cursor is opaque: only one the service issued is taken",
    "GET /api/me/stats/sync": "a cursor is opaque: only one the service issued is taken",
    "POST /api/audit/events": "a timestamp must fall within years 1 to 9999 once in UTC",
}
"""Operations whose schema-valid inputs may still be refused (400), and why: the constraint
is on meaning, which a JSON schema cannot state. ``positive_data_acceptance`` is off for
these alone; every other check still runs on them."""


@dataclass
class World:
    server: Server
    alice: Account
    alice_service_token: str
    bob: Account

    def forbidden(self) -> tuple[str, ...]:
        """Strings of B's that must never reach A."""
        return (MARK, MARK.lower(), self.bob.user.id, self.bob.user.email)


def seed_user(server: Server, account: Account, tag: str) -> None:
    """An uploaded transcript, a session, usage, queries and a sync, all named with ``tag``."""
    uid, now = account.user.id, datetime.now(UTC)
    line = assistant_line(f"{tag}-sid", f"{tag}-m1", now, f"claude-{tag}", (10, 20, 30, 40))
    upload_and_wait(server, account, f"{tag}-session.jsonl", line)
    old = now - timedelta(days=3)
    add_session(
        server.store,
        uid,
        f"{tag}-old.jsonl",
        session_id=f"{tag}-old",
        started_at=old,
        primary_model=f"claude-{tag}",
        tokens=(1, 2, 3, 4),
    )
    add_usage(
        server.store,
        uid,
        session_file=f"{tag}-old.jsonl",
        ts=old,
        model=f"claude-{tag}",
        tokens=(1, 2, 3, 4),
    )
    queries = [
        event(
            uid,
            "query.run",
            now - timedelta(minutes=i),
            resource=f"{tag}-table",
            params={"sql": f"select '{tag}'"},
            correlation_id=f"{tag}-corr",
            client_kind=tag,
        )
        for i in range(3)
    ]
    add_events(server.store, [*queries, event(uid, "sync.trigger", now, resource=f"{tag}-sync")])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with serve(tmp_path_factory.mktemp("fuzz") / "data") as server:
        alice = server.account("alice@example.com")
        bob = server.account(f"{MARK.lower()}@example.com")
        seed_user(server, alice, "alice")
        seed_user(server, bob, MARK)
        service = server.store.write_sync(
            operations.create_token, alice.user.email, "service", None, True
        )
        yield World(server, alice, service.token, bob)


@pytest.fixture(scope="module")
def api_schema(world: World) -> schemathesis.BaseSchema:
    config = schemathesis.Config()
    config.update(seed=20260101, max_failures=None)
    # Unknown query parameters are ignored on purpose (proxies and cache-busters add them).
    config.projects.default.generation.update(
        max_examples=EXAMPLES, deterministic=True, allow_extra_parameters=False, database="none"
    )
    return schemathesis.openapi.from_url(f"{world.server.url}/schema/openapi.json", config=config)


@pytest.fixture(autouse=True)
def _nodeid_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32 renames the test node through ``_nodeid``, which pytest 9.2 no
    longer has; give it one (it only changes how failures are labelled)."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


def no_leak_for(world: World) -> CheckFunction:
    def no_leak_of_another_users_data(ctx: CheckContext, response: Response, case: Case) -> None:
        text = response.content.decode("utf-8", "replace") + repr(response.headers)
        for secret in world.forbidden():
            assert secret not in text, f"an answer to A carries B's {secret!r}"

    return no_leak_of_another_users_data


def short_poll(case: Case) -> None:
    """A valid ``timeout`` (or none: 25 s) becomes at most 50 ms, so an unchanged version
    costs the run nothing; invalid ones go out as generated."""
    if case.path != "/api/me/live/poll":
        return
    query = case.query if case.query is not None else {}
    timeout = query.get("timeout", 25)
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and 0 <= timeout <= 30:
        case.query = {**query, "timeout": min(timeout, 0.05)}


@schema.parametrize()
def test_api_with_a_bearer_token(case: Case, world: World) -> None:
    """Every operation as user A with A's token (a service token of A's for audit events,
    which a personal token may not write)."""
    token = world.alice_service_token if case.path == "/api/audit/events" else world.alice.token
    short_poll(case)
    excluded = [positive_data_acceptance] if case.operation.label in SEMANTIC_INPUT else []
    case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"},
        additional_checks=[no_leak_for(world)],
        excluded_checks=excluded,
    )


def sign_in(world: World, token: str) -> dict[str, str]:
    """The cookies ``POST /login`` sets: a browser session and its CSRF token."""
    with httpx.Client(base_url=world.server.url) as http:
        answer = http.post("/login", data={"token": token})
        assert answer.status_code == 303, answer.text
        return dict(http.cookies)


@pytest.fixture(scope="module")
def browser_sessions(world: World) -> dict[str, dict[str, str]]:
    """A's browser sessions, signed in with A's personal token and with A's service token."""
    return {
        "personal": sign_in(world, world.alice.token),
        "service": sign_in(world, world.alice_service_token),
    }


@schema.include(method="POST").parametrize()
def test_writes_with_the_session_cookie_and_csrf_token(
    case: Case, world: World, browser_sessions: dict[str, dict[str, str]]
) -> None:
    """The writes again as the dashboard makes them: A's session cookie and the CSRF
    header (reads take the same path as with a token once the caller is known). The
    document declares the bearer scheme only, so the checks that take its Authorization
    header away to probe the auth would find the cookie still there; they run in the
    bearer test above, and ``test_login.py`` pins the cookie's own rules."""
    cookies = browser_sessions["service" if case.path == "/api/audit/events" else "personal"]
    if case.headers:  # a generated Authorization header would take precedence over the cookie
        case.headers = {k: v for k, v in case.headers.items() if k.lower() != "authorization"}
    by_cookie: list[CheckFunction] = [ignored_auth, missing_required_header]
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER):
        by_cookie.append(negative_data_rejection)  # its only header, Authorization, is gone
    if case.operation.label in SEMANTIC_INPUT:
        by_cookie.append(positive_data_acceptance)
    case.call_and_validate(
        headers={"X-CSRF-Token": cookies["agnes_csrf"]},
        cookies=cookies,
        additional_checks=[no_leak_for(world)],
        excluded_checks=by_cookie,
    )


def test_the_fuzzed_document_is_the_whole_public_api(api_schema: schemathesis.BaseSchema) -> None:
    """Nothing escapes the fuzzing unnoticed: the operations run above are exactly the
    public API that ``test_openapi.py`` pins."""
    found = {
        (result.ok().method.lower(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert found == PUBLIC


def download(api_schema: schemathesis.BaseSchema, world: World, name: str) -> Response:
    operation = api_schema["/api/me/sessions/{filename}"]["GET"]
    case = operation.Case(path_parameters={"filename": name})
    return case.call_and_validate(headers={"Authorization": f"Bearer {world.alice.token}"})


def test_download_of_an_own_file_is_as_documented(
    api_schema: schemathesis.BaseSchema, world: World
) -> None:
    """Generated names never hit a stored file, so A's own file is fetched by name: the
    200 answer, its content type and headers are held to the document too."""
    answer = download(api_schema, world, "alice-session.jsonl")
    assert answer.status_code == 200
    assert b"alice-sid" in answer.content


@pytest.mark.parametrize("trick", ["", "../", "../{bob}/", "%2e%2e/{bob}/"])
def test_download_of_bs_file_looks_like_no_file(
    api_schema: schemathesis.BaseSchema, world: World, trick: str
) -> None:
    """B's file name, plain or behind a path trick, gets the answer a name that was never
    stored gets (the detail only repeats the name A sent): nothing tells A it exists."""
    answers = []
    for owner in (MARK, "nobody"):
        name = trick.format(bob=world.bob.user.id) + f"{owner}-session.jsonl"
        answer = download(api_schema, world, name)
        assert answer.status_code == 404
        answers.append(answer.text.replace(repr(name), "NAME"))
    assert answers[0] == answers[1]
    assert not any(secret in answers[0] for secret in world.forbidden())


def test_bs_data_is_there_to_leak(world: World) -> None:
    """The leak check means something: B sees B's marked data through the same API."""
    with world.server.client(world.bob) as http:
        for path in ("sessions", "tokens", "queries", "sync"):
            assert MARK in http.get(f"/api/me/stats/{path}").text, path
        assert MARK in http.get("/api/sync/manifest").text


def test_admin_api_refuses_a_users_token(world: World) -> None:
    """The admin API is out of the document and out of A's reach, even on loopback."""
    with world.server.client(world.alice) as http:
        for method, path in [("GET", "/users"), ("GET", "/tokens"), ("POST", "/reprocess")]:
            answer = http.request(method, f"/api/admin{path}", json={})
            assert answer.status_code == 403, (path, answer.text)
            assert not any(s in answer.text for s in world.forbidden())
