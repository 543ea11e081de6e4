"""Paging through the stats: sessions by limit/offset, queries and sync by keyset cursors
that neither repeat nor skip a row while new events keep arriving."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Account, Server
from tests.seed import add_events, add_file, add_session, event, utc

T0 = utc("2026-02-01T12:00:00")


def test_sessions_pages_are_newest_first_without_overlap(server: Server, alice: Account) -> None:
    store, a = server.store, alice.user.id
    # s0 .. s5 start an hour apart; one pending file (no summary yet) sorts by arrival time.
    for n in range(6):
        add_file(server.store, a, f"s{n}.jsonl")
        add_session(
            store, a, f"s{n}.jsonl", session_id=f"id{n}", started_at=T0 + timedelta(hours=n)
        )
    add_file(
        store,
        a,
        "pending.jsonl",
        status="pending",
        first_seen_at=T0 + timedelta(hours=2, minutes=30),
    )
    add_file(store, a, "s5.agent-x.jsonl", is_subagent=True, session_file="s5.jsonl")
    expected = [
        "s5.jsonl",
        "s4.jsonl",
        "s3.jsonl",
        "pending.jsonl",
        "s2.jsonl",
        "s1.jsonl",
        "s0.jsonl",
    ]

    pages = []
    with server.client(alice) as http:
        for offset in (0, 3, 6, 9):
            response = http.get("/api/me/stats/sessions", params={"limit": 3, "offset": offset})
            assert response.status_code == 200
            pages.append(response.json())
    assert [p["total"] for p in pages] == [7, 7, 7, 7]
    assert [(p["offset"], p["limit"]) for p in pages] == [(0, 3), (3, 3), (6, 3), (9, 3)]
    names = [[r["session_file"] for r in p["rows"]] for p in pages]
    assert names == [expected[0:3], expected[3:6], expected[6:7], []]
    pending = pages[1]["rows"][0]
    assert (pending["pipeline_status"], pending["processed"], pending["session_id"]) == (
        "pending",
        False,
        None,
    )
    assert pages[0]["rows"][0]["pipeline_status"] == "processed"
    assert pages[0]["rows"][0]["download_url"] == "/api/me/sessions/s5.jsonl"


def _walk(http: httpx.Client, path: str, limit: int, between: Any = None) -> list[str]:
    """Every row id, page by page; ``between(n)`` runs after page ``n`` is fetched."""
    seen: list[str] = []
    cursor: str | None = None
    n = 0
    while n < 100:  # a cursor that stops advancing must fail the test, not hang it
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = http.get(path, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["limit"] == limit
        assert len(body["rows"]) <= limit
        seen += [r["id"] for r in body["rows"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
        assert len(body["rows"]) == limit
        if between is not None:
            between(n)
        n += 1
    raise AssertionError(f"still paging after 100 pages: {seen[:20]}...")


def _seed_ties(server: Server, user_id: str, actions: list[str]) -> list[str]:
    """Ten events where groups share one timestamp (to the microsecond, which the cursor
    must keep), so pages end inside a group; returns
    the ids in the order the API must give them (timestamp, then id, descending)."""
    stamps = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3]  # minutes after T0
    events = [
        event(
            user_id,
            actions[n % len(actions)],
            T0 + timedelta(minutes=m, microseconds=654_321),
            id=f"e{n:02d}",
        )
        for n, m in enumerate(stamps)
    ]
    add_events(server.store, events)
    ordered = sorted(events, key=lambda e: (e.timestamp, e.id), reverse=True)
    return [e.id for e in ordered if e.id is not None]


def _newer(server: Server, user_id: str, actions: list[str]) -> Any:
    def arrive(n: int) -> None:
        add_events(
            server.store,
            [
                event(user_id, actions[0], T0 + timedelta(hours=1 + n), id=f"new{n}-a"),
                event(user_id, actions[-1], T0 + timedelta(hours=1 + n), id=f"new{n}-b"),
            ],
        )

    return arrive


@pytest.mark.parametrize("limit", [1, 3, 4])
def test_queries_pages_neither_repeat_nor_skip_while_events_arrive(
    server: Server, alice: Account, limit: int
) -> None:
    actions = ["query.run", "query.explain"]
    expected = _seed_ties(server, alice.user.id, actions)
    add_events(server.store, [event(alice.user.id, "sync.trigger", T0, id="e99-not-a-query")])
    assert expected == ["e09", "e08", "e07", "e06", "e05", "e04", "e03", "e02", "e01", "e00"]
    with server.client(alice) as http:
        seen = _walk(http, "/api/me/stats/queries", limit, _newer(server, alice.user.id, actions))
        assert seen == expected
        # the events that arrived meanwhile lead the next first page
        first = http.get("/api/me/stats/queries", params={"limit": 2}).json()
    last = (10 + limit - 1) // limit - 2
    assert [r["id"] for r in first["rows"]] == [f"new{last}-b", f"new{last}-a"]


@pytest.mark.parametrize("limit", [1, 3, 4])
def test_sync_pages_neither_repeat_nor_skip_while_events_arrive(
    server: Server, alice: Account, limit: int
) -> None:
    actions = ["sync.trigger", "manifest.fetch", "session.upload"]
    expected = _seed_ties(server, alice.user.id, actions)
    add_events(server.store, [event(alice.user.id, "query.run", T0, id="e99-not-a-sync")])
    with server.client(alice) as http:
        seen = _walk(http, "/api/me/stats/sync", limit, _newer(server, alice.user.id, actions))
    assert seen == expected


def test_sync_shows_a_users_5_events_under_1000_newer_events_of_others(
    server: Server, alice: Account, bob: Account
) -> None:
    mine = [
        event(alice.user.id, "sync.trigger", T0 + timedelta(minutes=n), id=f"alice-{n}")
        for n in range(5)
    ]
    others = [
        event(
            bob.user.id if n % 2 else f"user-{n % 7}",
            "sync.trigger",
            T0 + timedelta(hours=1, seconds=n),
        )
        for n in range(1000)
    ]
    add_events(server.store, mine + others)
    with server.client(alice) as http:
        page = http.get("/api/me/stats/sync", params={"limit": 5}).json()
        default = http.get("/api/me/stats/sync").json()
    assert [r["id"] for r in page["rows"]] == [
        "alice-4",
        "alice-3",
        "alice-2",
        "alice-1",
        "alice-0",
    ]
    assert page["next_cursor"] is None
    assert [r["id"] for r in default["rows"]] == [r["id"] for r in page["rows"]]
