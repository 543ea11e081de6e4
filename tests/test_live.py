"""Live updates end to end: a real server, real websocket clients, real uploads."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from service.hub import QUEUE_LIMIT, Connection
from service.models import Caller
from service.plugins.live import LivePlugin
from service.synthetic.lines import assistant, jsonl
from tests.conftest import Account, Server

USAGE = {
    "input_tokens": 100,
    "output_tokens": 200,
    "cache_creation_input_tokens": 300,
    "cache_read_input_tokens": 400,
}


def transcript(n: int) -> bytes:
    return jsonl(
        assistant(
            uuid=f"u{n}",
            ts="2026-03-01T10:00:00Z",
            message_id=f"msg_{n}",
            request_id=f"req_{n}",
            usage=USAGE,
            session=f"s{n}",
        )
    )


@contextmanager
def socket(server: Server, account: Account, **kw: Any) -> Iterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {account.token}"}
    with connect(server.ws_url, additional_headers=headers, open_timeout=5, **kw) as ws:
        yield ws


def receive(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))  # type: ignore[no-any-return]


def until(ws: ClientConnection, done: Any, timeout: float = 5) -> dict[str, Any]:
    """Messages until one satisfies ``done``; that one."""
    deadline = time.monotonic() + timeout
    while True:
        message = receive(ws, max(0.01, deadline - time.monotonic()))
        if done(message):
            return message


def processed(name: str) -> Any:
    def check(message: dict[str, Any]) -> bool:
        rows = message["tabs"].get("sessions", {}).get("rows", [])
        return any(r["session_file"] == name and r["processed"] for r in rows)

    return check


def upload(http: httpx.Client, name: str, data: bytes) -> None:
    response = http.post("/api/upload/sessions", files={"file": (name, data)})
    assert response.status_code == 200, response.text


def test_an_upload_reaches_its_owner_socket_only_with_the_rest_numbers(
    server: Server, alice: Account, bob: Account
) -> None:
    with server.client(alice) as http, socket(server, alice) as mine, socket(server, bob) as theirs:
        first = receive(mine)
        assert first["type"] == "snapshot"
        assert set(first["tabs"]) == {"sessions", "tokens", "queries", "sync", "blocks"}
        assert receive(theirs)["type"] == "snapshot"
        before = http.get("/api/me/stats/sessions")
        version = first["version"]
        poll: dict[str, Any] = {}
        waiter = threading.Thread(
            target=lambda: poll.update(
                response=http.get("/api/me/live/poll", params={"since": version, "timeout": 10})
            )
        )
        waiter.start()

        upload(http, "s1.jsonl", transcript(1))
        update = until(mine, processed("s1.jsonl"))
        assert update["type"] == "update"
        assert update["version"] > version
        rest = http.get("/api/me/stats/sessions")
        assert update["tabs"]["sessions"] == rest.json()
        assert rest.headers["ETag"] != before.headers["ETag"]
        # The ingest's update carries sessions and tokens together; the upload's own update
        # (sessions and sync) can already show the file processed if it left after ingest.
        if "tokens" not in update["tabs"]:
            update = until(mine, lambda m: "tokens" in m["tabs"])
        assert update["tabs"]["tokens"]["totals"]["total"] == 1000
        assert update["tabs"]["tokens"] == http.get("/api/me/stats/tokens").json()
        waiter.join(timeout=10)
        assert poll["response"].status_code == 200
        assert poll["response"].json()["version"] > version
        with pytest.raises(TimeoutError):
            theirs.recv(timeout=0.5)


def test_updates_are_numbered_one_by_one_and_resync_gives_a_snapshot(
    server: Server, alice: Account
) -> None:
    with server.client(alice) as http, socket(server, alice) as ws:
        seen = [receive(ws)["version"]]
        for n in range(3):
            upload(http, f"s{n}.jsonl", transcript(n))
        until(ws, processed("s2.jsonl"))
        ws.send(json.dumps({"type": "resync"}))
        snapshot = until(ws, lambda m: m["type"] == "snapshot")
        assert [r["session_file"] for r in snapshot["tabs"]["sessions"]["rows"]] == [
            "s2.jsonl",
            "s1.jsonl",
            "s0.jsonl",
        ]
        assert snapshot["version"] > seen[0]


def test_a_socket_without_credentials_is_closed_with_4401(server: Server) -> None:
    with connect(server.ws_url, open_timeout=5) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_a_wrong_token_is_closed_with_4401(server: Server) -> None:
    headers = {"Authorization": "Bearer agn_nope"}
    with (
        connect(server.ws_url, additional_headers=headers) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def signed_in_cookie(server: Server, account: Account) -> str:
    with server.client() as http:
        http.post("/login", data={"token": account.token})
        return f"agnes_session={http.cookies['agnes_session']}"


def test_the_session_cookie_opens_a_socket_from_our_own_origin(
    server: Server, alice: Account
) -> None:
    headers = {"Cookie": signed_in_cookie(server, alice)}
    with connect(server.ws_url, additional_headers=headers, origin=server.url) as ws:  # type: ignore[arg-type]
        assert receive(ws)["type"] == "snapshot"


def test_a_socket_from_a_foreign_origin_is_refused_even_with_a_valid_cookie(
    server: Server, alice: Account
) -> None:
    headers = {"Cookie": signed_in_cookie(server, alice)}
    with (
        connect(server.ws_url, additional_headers=headers, origin="https://evil.example") as ws,  # type: ignore[arg-type]
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


def test_a_ticket_opens_one_socket_once(server: Server, alice: Account) -> None:
    with server.client(alice) as http:
        ticket = http.post("/api/me/live/ticket").json()["ticket"]
    url = f"{server.ws_url}?ticket={ticket}"
    with connect(url) as ws:
        assert receive(ws)["type"] == "snapshot"
    with connect(url) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_revoking_a_token_closes_its_open_socket_within_a_second(
    server: Server, alice: Account
) -> None:
    with socket(server, alice) as ws:
        assert receive(ws)["type"] == "snapshot"
        revoked = server.admin("POST", "/tokens/revoke", json={"token_or_prefix": alice.token})
        assert revoked.status_code == 200
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert time.monotonic() - started < 1
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "token revoked")


def test_deactivating_a_user_closes_their_sockets(server: Server, alice: Account) -> None:
    with socket(server, alice) as ws:
        receive(ws)
        server.admin("POST", "/users/active", json={"email": alice.user.email, "active": False})
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.reason == "user deactivated"


def test_a_client_that_never_reads_does_not_delay_others(server: Server, alice: Account) -> None:
    # The idle client's receive buffer fills and it stops reading the socket; closing it
    # then cannot complete the close handshake, hence the short close timeout.
    with (
        server.client(alice) as http,
        socket(server, alice) as reader,
        socket(server, alice, close_timeout=0.5),
    ):
        receive(reader)
        started = time.monotonic()
        for n in range(30):
            upload(http, f"s{n}.jsonl", transcript(n))
        until(reader, processed("s29.jsonl"), timeout=10)
        assert time.monotonic() - started < 10
        hub = server.app.plugins.get(LivePlugin).hub
        assert all(len(c.pending) <= QUEUE_LIMIT for c in hub._connections[alice.user.id])


def test_a_full_connection_queue_is_replaced_by_one_snapshot(alice_caller: Caller) -> None:
    async def overflow() -> Connection:
        connection = Connection(caller=alice_caller, tz="UTC", needs_snapshot=False)
        for version in range(1, 100):
            connection.offer(version, b"update %d" % version)
            assert len(connection.pending) <= QUEUE_LIMIT
        return connection

    connection = anyio.run(overflow)
    assert connection.needs_snapshot, "the overflow asks for a fresh snapshot"
    assert not connection.pending, "queued updates are dropped: the snapshot covers them"


@pytest.fixture
def alice_caller() -> Caller:
    return Caller(
        user_id="u1",
        email="a@example.com",
        is_admin=False,
        token_id="t1",
        is_service=False,
        via="bearer",
    )


def test_stats_answers_carry_an_etag_and_304_when_unchanged(server: Server, alice: Account) -> None:
    with server.client(alice) as http:
        for path, other_query in [
            ("sessions", "limit=7"),
            ("tokens", "days=7"),
            ("queries", "limit=7"),
            ("sync", "limit=7"),
        ]:
            first = http.get(f"/api/me/stats/{path}")
            etag = first.headers["ETag"]
            again = http.get(f"/api/me/stats/{path}", headers={"If-None-Match": etag})
            assert again.status_code == 304, path
            assert again.content == b""
            other = http.get(f"/api/me/stats/{path}?{other_query}", headers={"If-None-Match": etag})
            assert other.status_code == 200, "another query is another answer"
        etag = http.get("/api/me/stats/sessions").headers["ETag"]
        upload(http, "s.jsonl", transcript(1))
        changed = http.get("/api/me/stats/sessions", headers={"If-None-Match": etag})
        assert changed.status_code == 200
        assert changed.headers["ETag"] != etag


def wait_for_processed(http: httpx.Client, name: str) -> dict[str, Any]:
    """The sessions answer once ``name`` is processed (polled, as a script would)."""
    deadline = time.monotonic() + 10
    while True:
        page = http.get("/api/me/stats/sessions").json()
        if any(r["session_file"] == name and r["processed"] for r in page["rows"]):
            return page  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"{name} not processed within 10 s"
        time.sleep(0.02)


def test_answers_read_before_an_upload_are_never_served_after_it(
    server: Server, alice: Account
) -> None:
    with server.client(alice) as http:
        before = {
            path: http.get(f"/api/me/stats/{path}")
            for path in ("sessions", "tokens", "queries", "sync")
        }
        for path, answer in before.items():  # served from memory now
            cached = http.get(f"/api/me/stats/{path}")
            assert (cached.json(), cached.headers["ETag"]) == (
                answer.json(),
                answer.headers["ETag"],
            )
        upload(http, "s.jsonl", transcript(1))
        wait_for_processed(http, "s.jsonl")
        tokens = http.get(
            "/api/me/stats/tokens", headers={"If-None-Match": before["tokens"].headers["ETag"]}
        )
        assert tokens.status_code == 200
        assert tokens.json()["totals"]["total"] == 1000
        sync = http.get(
            "/api/me/stats/sync", headers={"If-None-Match": before["sync"].headers["ETag"]}
        )
        assert sync.status_code == 200
        assert [r["action"] for r in sync.json()["rows"]] == ["session.upload"]
        queries = http.get(
            "/api/me/stats/queries", headers={"If-None-Match": before["queries"].headers["ETag"]}
        )
        assert queries.status_code == 304, "an upload does not change the Data access tab"


def test_an_audit_event_changes_the_etag_of_its_tab_only(server: Server, alice: Account) -> None:
    service = server.account("svc@example.com", is_service=True)
    with server.client(alice) as http, server.client(service) as svc:
        tags = {p: http.get(f"/api/me/stats/{p}").headers["ETag"] for p in ("tokens", "queries")}
        event = {
            "timestamp": "2026-03-01T10:00:00Z",
            "user_id": alice.user.id,
            "action": "query.run",
        }
        assert svc.post("/api/audit/events", json=[event]).status_code == 200
        queries = http.get("/api/me/stats/queries", headers={"If-None-Match": tags["queries"]})
        assert queries.status_code == 200, "the POST answers after its events are stored"
        assert [r["action"] for r in queries.json()["rows"]] == ["query.run"]
        assert queries.headers["ETag"] != tags["queries"]
        tokens = http.get("/api/me/stats/tokens", headers={"If-None-Match": tags["tokens"]})
        assert tokens.status_code == 304


def test_the_socket_and_rest_carry_the_same_answer(server: Server, alice: Account) -> None:
    with socket(server, alice) as ws, server.client(alice) as http:
        assert receive(ws)["type"] == "snapshot"
        upload(http, "s.jsonl", transcript(1))
        update = until(ws, processed("s.jsonl"))
        for tab, pushed in update["tabs"].items():
            assert http.get(f"/api/me/stats/{tab}").json() == pushed, tab


def test_a_long_poll_without_changes_ends_with_204(server: Server, alice: Account) -> None:
    with server.client(alice) as http:
        version = int(http.get("/api/me/stats/sync").headers["ETag"].split('"')[1].split("-")[0])
        started = time.monotonic()
        response = http.get("/api/me/live/poll", params={"since": version, "timeout": 0.5})
        assert response.status_code == 204
        assert 0.4 < time.monotonic() - started < 5
        upload(http, "s.jsonl", transcript(1))
        behind = http.get("/api/me/live/poll", params={"since": version, "timeout": 5})
        assert behind.status_code == 200
        assert "sessions" in behind.json()["changed"]


@pytest.mark.parametrize("params", [{"since": -1}, {"since": 0, "timeout": 31}, {"since": "x"}])
def test_bad_long_poll_parameters_are_400(
    server: Server, alice: Account, params: dict[str, Any]
) -> None:
    with server.client(alice) as http:
        response = http.get("/api/me/live/poll", params=params)
    assert response.status_code == 400


def test_a_plain_file_copy_and_a_spool_line_from_another_process_reach_the_open_socket(
    server: Server, alice: Account
) -> None:
    folder = server.settings.sessions_dir / alice.user.id
    folder.mkdir(parents=True, exist_ok=True)
    with socket(server, alice) as ws:
        assert receive(ws)["type"] == "snapshot"
        temp = folder / ".copying.tmp"
        temp.write_bytes(transcript(7))
        temp.rename(folder / "copied.jsonl")  # what rsync or a legacy collector does
        until(ws, processed("copied.jsonl"))

        line = json.dumps(
            {
                "id": "evt-spool-1",
                "timestamp": "2026-03-01T10:00:00Z",
                "user_id": alice.user.id,
                "action": "query.run",
                "resource": "sales",
            }
        )
        script = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"  # another process
        spool = server.settings.audit_dir / "other-service.jsonl"
        subprocess.run([sys.executable, "-c", script, str(spool), line], check=True)
        update = until(ws, lambda m: "queries" in m["tabs"] and m["tabs"]["queries"]["rows"])
        assert [r["id"] for r in update["tabs"]["queries"]["rows"]] == ["evt-spool-1"]


def test_metrics_count_batches_lines_sockets_and_push_latency(
    server: Server, alice: Account
) -> None:
    with server.client(alice) as http, socket(server, alice) as ws:
        receive(ws)
        upload(http, "m.jsonl", transcript(1))
        until(ws, processed("m.jsonl"))
        page = httpx.get(f"{server.url}/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in page.text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["agnes_ingest_batches_total"] >= 1
    assert values["agnes_ingest_lines_total"] >= 1
    assert values["agnes_live_connections"] >= 1
    assert values["agnes_push_seconds_count"] >= 1
    assert "agnes_ingest_queue_depth" in values
