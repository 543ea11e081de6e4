"""Every ``/api/me`` answer is about the caller alone: Alice never sees Bob's rows, files
or counts, and a user with nothing yet gets empty answers, not errors."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.conftest import Account, Server
from tests.seed import add_events, assistant_line, event, upload_and_wait, utc

OPUS, HAIKU, SONNET = "claude-opus-4-6", "claude-haiku-4-5-20251001", "claude-sonnet-4-5-20250929"

ALICE_FILES = {
    "shared.jsonl": assistant_line("sa", "a1", utc("2026-01-05T10:01"), OPUS, (1, 2, 3, 4))
    + assistant_line("sa", "a2", utc("2026-01-05T10:02"), OPUS, (10, 20, 30, 40)),
    "alice-1.jsonl": assistant_line("a1", "a3", utc("2026-01-06T10:01"), HAIKU, (100, 0, 0, 0)),
}
BOB_FILES = {
    "shared.jsonl": assistant_line("sb", "b1", utc("2026-01-07T10:02"), OPUS, (7000, 0, 0, 0)),
    "bob-1.jsonl": assistant_line("b1", "b2", utc("2026-01-07T10:01"), SONNET, (5000,) * 4),
    "bob-2.jsonl": assistant_line("b2", "b3", utc("2026-01-07T10:03"), SONNET, (1, 1, 1, 1)),
}


@dataclass
class Seeded:
    alice: Account
    bob: Account


@pytest.fixture
def seeded(server: Server, alice: Account, bob: Account) -> Seeded:
    """Alice: two sessions (3 responses), 2 queries, 1 sync event. Bob: three sessions, one
    with the same name as Alice's, 3 queries, 2 sync events; his numbers are larger, so a
    leak shows in every count. Transcripts go through the real upload and ingest."""
    for name, data in ALICE_FILES.items():
        upload_and_wait(server, alice, name, data)
    for name, data in BOB_FILES.items():
        upload_and_wait(server, bob, name, data)
    a, b = alice.user.id, bob.user.id
    add_events(
        server.store,
        [
            event(a, "query.run", utc("2026-01-05T09:00"), id="a-q1"),
            event(a, "query.explain", utc("2026-01-05T09:01"), id="a-q2"),
            event(a, "sync.trigger", utc("2026-01-05T09:02"), id="a-s1"),
            event(b, "query.run", utc("2026-01-05T09:00"), id="b-q1"),
            event(b, "query.run", utc("2026-01-05T09:03"), id="b-q2"),
            event(b, "query.run", utc("2026-01-05T09:04"), id="b-q3"),
            event(b, "sync.trigger", utc("2026-01-05T09:05"), id="b-s1"),
            event(b, "session.upload", utc("2026-01-05T09:06"), id="b-s2"),
        ],
    )
    return Seeded(alice=alice, bob=bob)


def alices_sync(rows: list[dict[str, object]]) -> list[tuple[object, object]]:
    """Alice's sync rows as (action, resource or id): her two uploads, then her sync."""
    return [
        (r["action"], r["id"] if r["action"] == "sync.trigger" else r["resource"]) for r in rows
    ]


ALICES_SYNC = [
    ("session.upload", "alice-1.jsonl"),
    ("session.upload", "shared.jsonl"),
    ("sync.trigger", "a-s1"),
]


def test_me_names_the_caller(server: Server, seeded: Seeded) -> None:
    with server.client(seeded.alice) as http:
        body = http.get("/api/me").json()
    assert body == {"id": seeded.alice.user.id, "email": "alice@example.com", "is_admin": False}


def test_sessions_list_only_the_callers_files(server: Server, seeded: Seeded) -> None:
    with server.client(seeded.alice) as http:
        body = http.get("/api/me/stats/sessions").json()
    assert body["total"] == 2
    assert [r["session_file"] for r in body["rows"]] == ["alice-1.jsonl", "shared.jsonl"]
    assert [r["session_id"] for r in body["rows"]] == ["a1", "sa"]


def test_token_stats_count_only_the_callers_usage(server: Server, seeded: Seeded) -> None:
    with server.client(seeded.alice) as http:
        body = http.get("/api/me/stats/tokens", params={"days": 365}).json()
    totals = body["totals"]
    assert totals.pop("cost_usd") < 0.01  # Bob's tokens alone would cost far more
    assert totals == {
        "input": 111,
        "output": 22,
        "cache_read": 33,
        "cache_creation": 44,
        "total": 210,
        "sessions": 2,
    }
    assert {m["model"]: m["total"] for m in body["by_model"]} == {
        "claude-opus-4-6": 110,
        "claude-haiku-4-5-20251001": 100,
    }
    assert [(s["session_file"], s["total"]) for s in body["top_sessions"]] == [
        ("shared.jsonl", 110),
        ("alice-1.jsonl", 100),
    ]


def test_queries_show_only_the_callers_events(server: Server, seeded: Seeded) -> None:
    with server.client(seeded.alice) as http:
        body = http.get("/api/me/stats/queries").json()
    assert [r["id"] for r in body["rows"]] == ["a-q2", "a-q1"]
    assert body["next_cursor"] is None


def test_sync_shows_only_the_callers_events(server: Server, seeded: Seeded) -> None:
    with server.client(seeded.alice) as http:
        body = http.get("/api/me/stats/sync").json()
    assert alices_sync(body["rows"]) == ALICES_SYNC
    assert body["last_pull_at"] is None


def test_download_gives_the_callers_own_copy_of_a_shared_name(
    server: Server, seeded: Seeded
) -> None:
    with server.client(seeded.alice) as http:
        response = http.get("/api/me/sessions/shared.jsonl")
    assert response.status_code == 200
    assert response.content == ALICE_FILES["shared.jsonl"]


def test_download_of_another_users_file_is_404(server: Server, seeded: Seeded) -> None:
    with server.client(seeded.alice) as http:
        response = http.get("/api/me/sessions/bob-1.jsonl")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert b"b2" not in response.content


def test_manifest_lists_only_the_callers_files(server: Server, seeded: Seeded) -> None:
    with server.client(seeded.alice) as http:
        body = http.get("/api/sync/manifest").json()
    assert body["user_id"] == seeded.alice.user.id
    assert body["files"] == [
        {
            "name": "alice-1.jsonl",
            "size": len(ALICE_FILES["alice-1.jsonl"]),
            "download_url": "/api/me/sessions/alice-1.jsonl",
        },
        {
            "name": "shared.jsonl",
            "size": len(ALICE_FILES["shared.jsonl"]),
            "download_url": "/api/me/sessions/shared.jsonl",
        },
    ]


def test_bobs_manifest_fetch_does_not_touch_alices_sync(server: Server, seeded: Seeded) -> None:
    with server.client(seeded.bob) as http:
        assert http.get("/api/sync/manifest").status_code == 200
    with server.client(seeded.alice) as http:
        body = http.get("/api/me/stats/sync").json()
    assert alices_sync(body["rows"]) == ALICES_SYNC
    assert body["last_pull_at"] is None


def test_empty_user_gets_zero_shaped_answers(server: Server, seeded: Seeded) -> None:
    carol = server.account("carol@example.com")
    with server.client(carol) as http:
        sessions = http.get("/api/me/stats/sessions")
        tokens = http.get("/api/me/stats/tokens", params={"days": 7, "tz": "Europe/Prague"})
        queries = http.get("/api/me/stats/queries")
        sync = http.get("/api/me/stats/sync")
        missing = http.get("/api/me/sessions/shared.jsonl")
    assert sessions.status_code == 200
    assert sessions.json() == {"total": 0, "offset": 0, "limit": 50, "rows": []}

    assert tokens.status_code == 200
    body = tokens.json()
    assert body["days"] == 7 and body["tz"] == "Europe/Prague"
    assert len(body["daily"]) == 7
    for day in body["daily"]:
        assert {k: v for k, v in day.items() if k != "day"} == {
            "input": 0,
            "output": 0,
            "cache_read": 0,
            "cache_creation": 0,
            "total": 0,
            "cost_usd": 0.0,  # nothing used costs $0 (None would say "no known price")
            "sessions": 0,
        }
    assert body["by_model"] == []
    assert body["by_project"] == [] and body["window"]["by_project"] == []
    assert body["top_sessions"] == []
    assert body["unpriced_models"] == []
    assert body["totals"] == {
        "input": 0,
        "output": 0,
        "cache_read": 0,
        "cache_creation": 0,
        "total": 0,
        "cost_usd": 0.0,
        "sessions": 0,
    }
    assert body["window"]["totals"] == body["totals"]

    assert queries.status_code == 200
    assert queries.json() == {"limit": 50, "rows": [], "next_cursor": None}
    assert sync.status_code == 200
    assert sync.json() == {"limit": 50, "rows": [], "next_cursor": None, "last_pull_at": None}
    assert missing.status_code == 404
