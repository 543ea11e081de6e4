"""Bad input gets the right status and a JSON error body, and changes nothing."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from service import operations
from service.store import Cursor, users
from tests.conftest import Account, Server
from tests.seed import assistant_line, count_events, error_body, serve, upload_and_wait

MiB = 1024 * 1024
LIMIT = 50 * MiB
BOUNDARY = "agnes-test-boundary"


def multipart(filename: str, data: bytes, *, field: str = "file") -> tuple[bytes, dict[str, str]]:
    """A multipart body written byte by byte, so the filename reaches the server as is."""
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def upload(server: Server, account: Account, filename: str, data: bytes) -> Any:
    body, headers = multipart(filename, data)
    with server.client(account) as http:
        return http.post("/api/upload/sessions", content=body, headers=headers)


def left_in(server: Server, account: Account) -> list[str]:
    folder = server.settings.sessions_dir / account.user.id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def files_rows(server: Server, account: Account) -> int:
    def count(cur: Cursor) -> int:
        row = cur.execute(
            "SELECT count(*) FROM files WHERE user_id = ?", [account.user.id]
        ).fetchone()
        return int(row[0]) if row else 0

    return server.store.read_sync(count)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests whose requests are all refused (and one that only reads)."""
    with serve(tmp_path_factory.mktemp("shared") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def carol(shared: Server) -> Account:
    return shared.account("carol@example.com")


@pytest.fixture(scope="module")
def dave(shared: Server) -> Account:
    return shared.account("dave@example.com")


@pytest.fixture(scope="module")
def root(shared: Server) -> Account:
    return shared.account("root@example.com", is_admin=True)


# -- authentication ---------------------------------------------------------------------


def test_no_token_is_401(shared: Server) -> None:
    with shared.client() as http:
        response = http.get("/api/me")
    assert error_body(response, 401)["detail"] == "no token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header", ["Bearer agn_wrong", "Bearer", "Basic YWxpY2U6c2VjcmV0", "agn_no_scheme"]
)
def test_wrong_or_malformed_token_is_401(shared: Server, carol: Account, header: str) -> None:
    with shared.client() as http:
        error_body(http.get("/api/me", headers={"Authorization": header}), 401)


def test_revoked_token_is_401_at_once(server: Server, alice: Account) -> None:
    with server.client(alice) as http:
        assert http.get("/api/me").status_code == 200
        server.store.write_sync(operations.revoke_token, alice.token)
        assert error_body(http.get("/api/me"), 401)["detail"] == "token revoked"


def test_a_remembered_token_is_refused_at_once_when_revoked_by_the_cli(
    server: Server, alice: Account
) -> None:
    with server.client(alice) as http:
        for _ in range(3):  # remembered by now
            assert http.get("/api/me/stats/sessions").status_code == 200
        revoked = server.admin("POST", "/tokens/revoke", json={"token_or_prefix": alice.token})
        assert revoked.status_code == 200
        assert error_body(http.get("/api/me/stats/sessions"), 401)["detail"] == "token revoked"


def test_a_remembered_user_is_refused_at_once_when_deactivated_and_back_when_activated(
    server: Server, alice: Account
) -> None:
    def active(yes: bool) -> None:
        body = {"email": alice.user.email, "active": yes}
        assert server.admin("POST", "/users/active", json=body).status_code == 200

    with server.client(alice) as http:
        for _ in range(3):
            assert http.get("/api/me").status_code == 200
        active(False)
        assert error_body(http.get("/api/me"), 401)["detail"] == "user deactivated"
        active(True)
        assert http.get("/api/me").status_code == 200


def test_a_remembered_token_is_refused_once_it_expires(server: Server, alice: Account) -> None:
    # 3 s: the first request must come before the expiry even on a busy machine
    expires = datetime.now(UTC) + timedelta(seconds=3)
    server.store.write_sync(
        lambda cur: cur.execute(
            "UPDATE tokens SET expires_at = ? WHERE user_id = ?", [expires, alice.user.id]
        )
    )
    with server.client(alice) as http:
        assert http.get("/api/me").status_code == 200
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)
        assert error_body(http.get("/api/me"), 401)["detail"] == "token expired"


def test_expired_token_is_401(server: Server, alice: Account) -> None:
    server.store.write_sync(
        lambda cur: cur.execute(
            "UPDATE tokens SET expires_at = ? WHERE user_id = ?",
            [datetime.now(UTC) - timedelta(seconds=1), alice.user.id],
        )
    )
    with server.client(alice) as http:
        assert error_body(http.get("/api/me/stats/sessions"), 401)["detail"] == "token expired"


def test_deactivated_user_is_401(server: Server, alice: Account) -> None:
    server.store.write_sync(users.set_active, alice.user.email, False)
    with server.client(alice) as http:
        assert error_body(http.get("/api/me"), 401)["detail"] == "user deactivated"
        error_body(http.get("/api/sync/manifest"), 401)
    assert count_events(server.store) == 0


# -- upload names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../x", "a/b", "", "..", ".x", "a" * 195 + ".jsonl", "séance.jsonl", "a b.jsonl", ".gz"],
    ids=[
        "dotdot-slash",
        "slash",
        "empty",
        "dotdot",
        "hidden",
        "201-chars",
        "non-ascii",
        "space",
        "only-gz",
    ],
)
def test_bad_upload_names_are_400(shared: Server, carol: Account, name: str) -> None:
    before = count_events(shared.store)
    response = upload(shared, carol, name, b'{"x":1}\n')
    error_body(response, 400, "invalid_filename")
    assert left_in(shared, carol) == []
    assert files_rows(shared, carol) == 0
    assert count_events(shared.store) == before


def test_200_character_name_is_accepted(server: Server, alice: Account) -> None:
    name = "a" * 194 + ".jsonl"
    assert upload(server, alice, name, b"{}\n").status_code == 200
    assert left_in(server, alice) == [name]


def test_upload_without_a_file_field_is_400(shared: Server, carol: Account) -> None:
    body, headers = multipart("x.jsonl", b"{}\n", field="other")
    with shared.client(carol) as http:
        error_body(
            http.post("/api/upload/sessions", content=body, headers=headers), 400, "invalid_upload"
        )
        error_body(http.post("/api/upload/sessions", json={"file": "x"}), 400, "invalid_upload")
    assert left_in(shared, carol) == []


# -- upload size and gzip -----------------------------------------------------------------


def test_upload_of_50_mib_plus_one_byte_is_413_and_leaves_nothing(
    server: Server, alice: Account
) -> None:
    response = upload(server, alice, "big.jsonl", b"x" * (LIMIT + 1))
    error_body(response, 413, "too_large")
    assert left_in(server, alice) == []
    assert files_rows(server, alice) == 0


def test_gzip_that_inflates_past_50_mib_is_413_and_leaves_nothing(
    server: Server, alice: Account
) -> None:
    bomb = gzip.compress(b"\n" * (LIMIT + 1), compresslevel=9)
    assert len(bomb) < MiB
    error_body(upload(server, alice, "bomb.jsonl.gz", bomb), 413, "too_large")
    assert left_in(server, alice) == []
    assert files_rows(server, alice) == 0


def test_gzip_that_inflates_to_exactly_50_mib_is_accepted(server: Server, alice: Account) -> None:
    packed = gzip.compress(b"\n" * LIMIT, compresslevel=9)
    response = upload(server, alice, "edge.jsonl.gz", packed)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "filename": "edge.jsonl", "size": LIMIT}
    assert left_in(server, alice) == ["edge.jsonl"]


@pytest.mark.parametrize(
    "data",
    [
        b"this is not gzip at all\n",
        gzip.compress(b'{"a":1}\n' * 1000)[:-12],
        gzip.compress(b'{"a":1}\n')[:10],
        gzip.compress(b'{"a":1}\n') + b"trailing garbage",
        b"",
    ],
    ids=["not-gzip", "truncated", "header-only", "trailing-garbage", "empty"],
)
def test_corrupt_or_truncated_gzip_is_400_invalid_gzip(
    shared: Server, carol: Account, data: bytes
) -> None:
    error_body(upload(shared, carol, "x.jsonl.gz", data), 400, "invalid_gzip")
    assert left_in(shared, carol) == []
    assert files_rows(shared, carol) == 0


def test_gzip_with_bad_crc_is_400_invalid_gzip(shared: Server, carol: Account) -> None:
    packed = bytearray(gzip.compress(b'{"a":1}\n' * 100))
    packed[-8] ^= 0xFF  # CRC32 of the trailer
    error_body(upload(shared, carol, "x.jsonl.gz", bytes(packed)), 400, "invalid_gzip")
    assert left_in(shared, carol) == []


def test_zlib_stream_under_a_gz_name_is_400_invalid_gzip(shared: Server, carol: Account) -> None:
    error_body(upload(shared, carol, "x.jsonl.gz", zlib.compress(b"{}\n")), 400, "invalid_gzip")


# -- query parameters -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["sessions", "queries", "sync"])
@pytest.mark.parametrize("limit", ["0", "201", "-1", "abc", "1.5", ""])
def test_bad_limit_is_400(shared: Server, carol: Account, path: str, limit: str) -> None:
    with shared.client(carol) as http:
        error_body(http.get(f"/api/me/stats/{path}", params={"limit": limit}), 400)


def test_limit_bounds_are_accepted(shared: Server, carol: Account) -> None:
    with shared.client(carol) as http:
        for path in ("sessions", "queries", "sync"):
            for limit in (1, 200):
                response = http.get(f"/api/me/stats/{path}", params={"limit": limit})
                assert response.status_code == 200
                assert response.json()["limit"] == limit


@pytest.mark.parametrize("offset", ["-1", "abc", "99999999999999999999", str(2**53)])
def test_bad_offset_is_400(shared: Server, carol: Account, offset: str) -> None:
    with shared.client(carol) as http:
        error_body(http.get("/api/me/stats/sessions", params={"offset": offset}), 400)


def test_largest_documented_offset_is_an_empty_page(shared: Server, carol: Account) -> None:
    """The document's ``maximum`` is exact (2**53 - 1 survives a JSON number), so a client
    that keeps to it is never refused; schemathesis found 2**63 + 191 passed the old one."""
    with shared.client(carol) as http:
        schema = http.get("/schema/openapi.json").json()
        params = schema["paths"]["/api/me/stats/sessions"]["get"]["parameters"]
        largest = next(p for p in params if p["name"] == "offset")["schema"]["maximum"]
        assert largest == 2**53 - 1
        response = http.get("/api/me/stats/sessions", params={"offset": int(largest)})
    assert response.status_code == 200
    assert response.json()["rows"] == []


@pytest.mark.parametrize("days", ["0", "3661", "-3", "abc", "1e3", "ALL"])
def test_bad_days_is_400(shared: Server, carol: Account, days: str) -> None:
    with shared.client(carol) as http:
        error_body(http.get("/api/me/stats/tokens", params={"days": days}), 400)


def test_bad_tz_is_400(shared: Server, carol: Account) -> None:
    with shared.client(carol) as http:
        error_body(
            http.get("/api/me/stats/tokens", params={"tz": "Nowhere/Atlantis"}), 400, "invalid_tz"
        )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("path", ["queries", "sync"])
@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!!",
        "Zm9v",
        _b64(b"[1,2,3]"),
        _b64(b'["not a time","x"]'),
        _b64(b'{"ts":"2026-01-01T00:00:00Z","id":"x"}'),
        _b64(b"\xff\xfe"),
        "a",
    ],
)
def test_garbage_cursor_is_400(shared: Server, carol: Account, path: str, cursor: str) -> None:
    with shared.client(carol) as http:
        response = http.get(f"/api/me/stats/{path}", params={"cursor": cursor})
    error_body(response, 400, "invalid_cursor")


# -- downloads --------------------------------------------------------------------------


def raw_get(server: Server, account: Account, path: str) -> tuple[int, dict[str, Any] | bytes]:
    """GET with the path sent exactly as written (no client-side dot-segment cleanup)."""
    host = urlsplit(server.url)
    conn = http.client.HTTPConnection(host.hostname or "", host.port, timeout=10)
    try:
        conn.request("GET", path, headers=account.headers)
        response = conn.getresponse()
        body = response.read()
        if response.getheader("content-type", "").startswith("application/json"):
            return response.status, json.loads(body)
        return response.status, body
    finally:
        conn.close()


BOBS_DATA = assistant_line("bob-secret", "b1", datetime(2026, 1, 5, tzinfo=UTC), "m", (1, 1, 1, 1))


@pytest.fixture(scope="module")
def bobs_file(shared: Server, dave: Account) -> str:
    upload_and_wait(shared, dave, "secret.jsonl", BOBS_DATA)
    return "secret.jsonl"


def test_download_of_another_users_file_is_404(
    shared: Server, carol: Account, dave: Account, bobs_file: str
) -> None:
    with shared.client(carol) as http:
        response = http.get(f"/api/me/sessions/{bobs_file}")
    error_body(response, 404, "not_found")
    with shared.client(dave) as http:
        assert http.get(f"/api/me/sessions/{bobs_file}").content == BOBS_DATA


@pytest.mark.parametrize(
    "trick",
    [
        "..",
        "%2e%2e",
        "..%2f{bob}%2fsecret.jsonl",
        "%2e%2e%2f{bob}%2fsecret.jsonl",
        "..%5c{bob}%5csecret.jsonl",
        "../{bob}/secret.jsonl",
        "../../activity.duckdb",
        "%2e%2e%2f%2e%2e%2factivity.duckdb",
        "{bob}%2fsecret.jsonl",
        ".upload-0000.tmp",
        "secret.jsonl.gz",
    ],
)
def test_download_path_tricks_are_404(
    shared: Server, carol: Account, dave: Account, bobs_file: str, trick: str
) -> None:
    status, body = raw_get(shared, carol, "/api/me/sessions/" + trick.format(bob=dave.user.id))
    assert status == 404
    assert isinstance(body, dict) and body["status_code"] == 404 and body["error"]
    assert b"bob-secret" not in repr(body).encode()


def test_download_of_unknown_file_is_404(shared: Server, carol: Account) -> None:
    with shared.client(carol) as http:
        error_body(http.get("/api/me/sessions/nothing-here.jsonl"), 404, "not_found")


def test_download_of_a_file_known_but_gone_from_disk_is_404(server: Server, alice: Account) -> None:
    sessions_dir: Path = server.settings.sessions_dir
    upload_and_wait(server, alice, "gone.jsonl", BOBS_DATA)
    (sessions_dir / alice.user.id / "gone.jsonl").unlink()
    with server.client(alice) as http:
        error_body(http.get("/api/me/sessions/gone.jsonl"), 404, "not_found")


# -- POST /api/audit/events ----------------------------------------------------------------


def good_events(user_id: str) -> list[dict[str, Any]]:
    return [
        {
            "id": "evt-1",
            "timestamp": "2026-01-10T08:00:00Z",
            "user_id": user_id,
            "action": "query.run",
            "resource": "orders",
            "params": {"sql": "select 1"},
            "result": "ok",
            "duration_ms": 12.5,
            "client_kind": "cli",
            "client_ip": "10.0.0.1",
            "correlation_id": "c-1",
        },
        {
            "timestamp": "2026-01-10T10:00:00+02:00",
            "user_id": user_id,
            "action": "sync.trigger",
        },
    ]


def test_audit_events_by_a_normal_user_are_403(shared: Server, carol: Account) -> None:
    before = count_events(shared.store)
    with shared.client(carol) as http:
        response = http.post("/api/audit/events", json=good_events(carol.user.id))
    error_body(response, 403)
    assert count_events(shared.store) == before


@pytest.mark.parametrize(
    "payload",
    [
        {"timestamp": "2026-01-10T08:00:00Z", "user_id": "u", "action": "query.run"},
        [{"user_id": "u", "action": "query.run"}],
        [{"timestamp": "2026-01-10T08:00:00Z", "action": "query.run"}],
        [{"timestamp": "2026-01-10T08:00:00Z", "user_id": "u"}],
        [{"timestamp": "yesterday", "user_id": "u", "action": "query.run"}],
        [{"timestamp": "0001-01-01T00:00:00+14:00", "user_id": "u", "action": "query.run"}],
        [{"timestamp": "9999-12-31T23:59:59-14:00", "user_id": "u", "action": "query.run"}],
        [{"timestamp": "2026-01-10T08:00:00Z", "user_id": 7, "action": "query.run"}],
        [{"timestamp": "2026-01-10T08:00:00Z", "user_id": "u", "action": "q", "params": [1]}],
        [{"timestamp": "2026-01-10T08:00:00Z", "user_id": "u", "action": "q", "duration_ms": "x"}],
        [{"timestamp": 0, "user_id": "u", "action": "query.run"}],
        [{"timestamp": 1767945600.5, "user_id": "u", "action": "query.run"}],
        [{"timestamp": "2026-01-10T08:00:00Z", "user_id": "u", "action": "q", "duration_ms": "5"}],
        [{"timestamp": "2026-01-10T08:00:00Z", "user_id": "", "action": "query.run"}],
        [{"timestamp": "2026-01-10T08:00:00Z", "user_id": "u", "action": "q", "id": ""}],
        ["not an object"],
        "not a list",
        None,
    ],
    ids=[
        "not-a-list",
        "no-timestamp",
        "no-user",
        "no-action",
        "bad-timestamp",
        "timestamp-before-year-1-in-utc",
        "timestamp-after-year-9999-in-utc",
        "user-not-string",
        "params-not-object",
        "duration-not-number",
        "timestamp-zero",
        "timestamp-epoch-seconds",
        "duration-a-string-of-digits",
        "empty-user",
        "empty-id",
        "list-of-strings",
        "string",
        "null",
    ],
)
def test_malformed_audit_events_are_400_and_nothing_is_stored(
    shared: Server, root: Account, payload: Any
) -> None:
    before = count_events(shared.store)
    with shared.client(root) as http:
        error_body(http.post("/api/audit/events", json=payload), 400)
    assert count_events(shared.store) == before


def test_one_bad_event_among_good_ones_stores_none(
    shared: Server, carol: Account, root: Account
) -> None:
    before = count_events(shared.store)
    batch: list[Any] = good_events(carol.user.id)
    batch.insert(1, {"timestamp": "2026-01-10T08:00:00Z", "user_id": carol.user.id})
    with shared.client(root) as http:
        error_body(http.post("/api/audit/events", json=batch), 400)
        error_body(
            http.post(
                "/api/audit/events",
                content=b"[{not json",
                headers={"Content-Type": "application/json"},
            ),
            400,
        )
    assert count_events(shared.store) == before


@pytest.mark.parametrize("kind", ["admin", "service"])
def test_good_batch_is_stored_once_even_when_posted_twice(
    server: Server, alice: Account, kind: str
) -> None:
    poster = server.account(
        f"{kind}@example.com", is_admin=kind == "admin", is_service=kind == "service"
    )
    batch = good_events(alice.user.id)
    with server.client(poster) as http:
        first = http.post("/api/audit/events", json=batch)
        second = http.post("/api/audit/events", json=batch)
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 2, "stored": 2}
    assert second.status_code == 200
    assert second.json() == {"accepted": 2, "stored": 0}
    assert count_events(server.store) == 2
    assert count_events(server.store, "id = 'evt-1'") == 1
    assert count_events(server.store, "id LIKE 'sha256:%'") == 1

    with server.client(alice) as http:
        queries = http.get("/api/me/stats/queries").json()["rows"]
        sync = http.get("/api/me/stats/sync").json()["rows"]
    assert [r["id"] for r in queries] == ["evt-1"]
    assert queries[0]["params"] == {"sql": "select 1"}
    assert queries[0]["timestamp"] == "2026-01-10T08:00:00+00:00"
    assert len(sync) == 1 and sync[0]["id"].startswith("sha256:")
    assert sync[0]["timestamp"] == "2026-01-10T08:00:00+00:00"


def test_event_without_id_gets_the_same_id_in_any_batch(server: Server, alice: Account) -> None:
    root = server.account("root@example.com", is_admin=True)
    no_id = good_events(alice.user.id)[1]
    same_moment_in_utc = {**no_id, "timestamp": "2026-01-10T08:00:00Z"}
    with server.client(root) as http:
        first = http.post("/api/audit/events", json=[no_id, no_id]).json()
        second = http.post("/api/audit/events", json=[same_moment_in_utc]).json()
        other = http.post("/api/audit/events", json=[{**no_id, "resource": "x"}]).json()
    assert (first["stored"], second["stored"], other["stored"]) == (1, 0, 1)
    assert count_events(server.store) == 2
