"""``GET /api/sync/manifest`` leaves one ``manifest.fetch`` record and the time of the pull."""

from __future__ import annotations

from datetime import UTC, datetime

from service.store import Cursor
from tests.conftest import Account, Server


def fetch_rows(cur: Cursor, user_id: str) -> list[tuple[object, ...]]:
    return cur.execute(
        "SELECT id, ts, action, resource, result, client_kind, params FROM audit_events"
        " WHERE user_id = ? ORDER BY ts",
        [user_id],
    ).fetchall()


def test_manifest_fetch_writes_exactly_one_audit_row(server: Server, alice: Account) -> None:
    with server.client(alice) as http:
        before = datetime.now(UTC)
        response = http.get("/api/sync/manifest")
        after = datetime.now(UTC)
    assert response.status_code == 200
    body = response.json()
    assert (body["user_id"], body["files"]) == (alice.user.id, [])

    rows = server.store.read_sync(fetch_rows, alice.user.id)
    assert len(rows) == 1
    _id, ts, action, resource, result, client_kind, params = rows[0]
    assert (action, resource, result, client_kind, params) == (
        "manifest.fetch",
        "manifest",
        "ok",
        "api",
        "{}",
    )
    assert isinstance(ts, datetime) and before <= ts <= after
    assert datetime.fromisoformat(body["generated_at"]) == ts


def test_each_manifest_fetch_is_recorded_once(server: Server, alice: Account) -> None:
    with server.client(alice) as http:
        for _ in range(3):
            assert http.get("/api/sync/manifest").status_code == 200
    rows = server.store.read_sync(fetch_rows, alice.user.id)
    assert [r[2] for r in rows] == ["manifest.fetch"] * 3
    assert len({r[0] for r in rows}) == 3


def test_manifest_fetch_sets_last_pull_and_shows_in_sync(server: Server, alice: Account) -> None:
    with server.client(alice) as http:
        assert http.get("/api/me/stats/sync").json()["last_pull_at"] is None
        manifest = http.get("/api/sync/manifest").json()
        sync = http.get("/api/me/stats/sync").json()
    assert sync["last_pull_at"] == manifest["generated_at"]
    assert sync["last_pull_at"].endswith("+00:00")
    assert len(sync["rows"]) == 1
    row = sync["rows"][0]
    assert (row["action"], row["resource"], row["result"], row["client_kind"]) == (
        "manifest.fetch",
        "manifest",
        "ok",
        "api",
    )
    assert row["timestamp"] == manifest["generated_at"]
    assert row["client_ip"] == "127.0.0.1"
