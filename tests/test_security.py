"""What a hostile review found, each reproduced as the attacker or the unlucky user would
meet it: a credential is checked wherever it is used (a ticket, a socket held open), bad
names and times are clear 400s, and a batch of audit events is all or nothing."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from service.store import Cursor
from tests.conftest import Account, Server
from tests.seed import error_body
from tests.test_limits import served


def closed_with(ws: ClientConnection, timeout: float = 5) -> tuple[int, str]:
    """The close code and reason of a socket that is about to be closed by the server."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=timeout)
    assert closed.value.rcvd is not None, "the server did not close the socket"
    return closed.value.rcvd.code, closed.value.rcvd.reason


def snapshot(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = msgspec.json.decode(ws.recv(timeout=5))
    assert message["type"] == "snapshot"
    return message


@contextmanager
def signed_in(server: Server, account: Account) -> Iterator[httpx.Client]:
    with closing(server.client()) as http:
        assert http.post("/login", data={"token": account.token}).status_code == 303
        yield http


def cookie_header(http: httpx.Client) -> dict[str, str]:
    return {"Cookie": f"agnes_session={http.cookies['agnes_session']}"}


def ticket_of(http: httpx.Client) -> str:
    headers = {"X-CSRF-Token": http.cookies.get("agnes_csrf") or ""}
    response = http.post("/api/me/live/ticket", headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["ticket"])


def expire_tokens_in(server: Server, account: Account, seconds: float) -> datetime:
    expires = datetime.now(UTC) + timedelta(seconds=seconds)
    server.store.write_sync(
        lambda cur: cur.execute(
            "UPDATE tokens SET expires_at = ? WHERE user_id = ?", [expires, account.user.id]
        )
    )
    return expires


def sleep_past(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.05)


# -- 2. sockets end with their credential --------------------------------------------------


def test_a_ticket_issued_before_its_token_was_revoked_opens_no_socket(
    server: Server, alice: Account
) -> None:
    with server.client(alice) as http:
        ticket = ticket_of(http)
    assert server.admin("POST", "/tokens/revoke", json={"token_or_prefix": alice.token}).is_success
    with connect(f"{server.ws_url}?ticket={ticket}") as ws:
        assert closed_with(ws) == (4401, "token revoked")


def test_a_ticket_issued_before_the_user_was_deactivated_opens_no_socket(
    server: Server, alice: Account
) -> None:
    with server.client(alice) as http:
        ticket = ticket_of(http)
    body = {"email": alice.user.email, "active": False}
    assert server.admin("POST", "/users/active", json=body).is_success
    with connect(f"{server.ws_url}?ticket={ticket}") as ws:
        assert closed_with(ws) == (4401, "user deactivated")


def test_a_ticket_issued_before_sign_out_opens_no_socket(server: Server, alice: Account) -> None:
    with signed_in(server, alice) as http:
        ticket = ticket_of(http)
        out = http.post("/logout", data={"csrf_token": http.cookies["agnes_csrf"]})
        assert out.status_code == 303
    with connect(f"{server.ws_url}?ticket={ticket}") as ws:
        assert closed_with(ws) == (4401, "not signed in")


def test_a_ticket_issued_before_its_token_expired_opens_no_socket(
    server: Server, alice: Account
) -> None:
    expires = expire_tokens_in(server, alice, 1.0)
    with server.client(alice) as http:
        ticket = ticket_of(http)
    sleep_past(expires)
    with connect(f"{server.ws_url}?ticket={ticket}") as ws:
        assert closed_with(ws) == (4401, "token expired")


def test_a_ticket_still_opens_a_socket_while_its_credential_holds(
    server: Server, alice: Account
) -> None:
    with signed_in(server, alice) as http:
        ticket = ticket_of(http)
    with connect(f"{server.ws_url}?ticket={ticket}") as ws:
        assert snapshot(ws)["version"] >= 0


def test_signing_out_closes_that_sessions_sockets_and_no_others(
    server: Server, alice: Account
) -> None:
    headers = {"Authorization": f"Bearer {alice.token}"}
    with (
        signed_in(server, alice) as http,
        connect(server.ws_url, additional_headers=cookie_header(http), origin=server.url) as ws,  # type: ignore[arg-type]
        connect(server.ws_url, additional_headers=headers) as other,
    ):
        snapshot(ws)
        snapshot(other)
        started = time.monotonic()
        out = http.post("/logout", data={"csrf_token": http.cookies["agnes_csrf"]})
        assert out.status_code == 303
        assert closed_with(ws) == (4401, "signed out")
        assert time.monotonic() - started < 1
        other.send('{"type": "resync"}')
        assert snapshot(other)["type"] == "snapshot", "a bearer socket of the same user stays"


def test_a_socket_opened_before_its_token_expired_is_closed_at_the_expiry(
    server: Server, alice: Account
) -> None:
    expires = expire_tokens_in(server, alice, 1.5)
    headers = {"Authorization": f"Bearer {alice.token}"}
    with connect(server.ws_url, additional_headers=headers) as ws:
        snapshot(ws)
        assert closed_with(ws, timeout=10) == (4401, "token expired")
        late = (datetime.now(UTC) - expires).total_seconds()
    assert 0 <= late < 1, f"closed {late:.2f} s after the expiry"


def test_a_socket_opened_with_a_cookie_is_closed_when_the_session_expires(
    server: Server, alice: Account
) -> None:
    with signed_in(server, alice) as http:
        ends = datetime.now(UTC) + timedelta(seconds=1.5)
        server.store.write_sync(
            lambda cur: cur.execute(
                "UPDATE web_sessions SET expires_at = ? WHERE user_id = ?", [ends, alice.user.id]
            )
        )
        headers = cookie_header(http)
        with connect(server.ws_url, additional_headers=headers, origin=server.url) as ws:  # type: ignore[arg-type]
            snapshot(ws)
            assert closed_with(ws, timeout=10) == (4401, "session expired")


# -- 3. the socket's Origin check cannot be skipped -----------------------------------------


@pytest.mark.parametrize("value", ["", " ", "Basic Zm9vOmJhcg==", "Bearer"])
def test_a_cookie_socket_from_another_site_is_refused_whatever_authorization_header_it_adds(
    server: Server, alice: Account, value: str
) -> None:
    with signed_in(server, alice) as http:
        headers = {**cookie_header(http), "Authorization": value}
        with connect(
            server.ws_url,
            additional_headers=headers,
            origin="https://evil.example",  # type: ignore[arg-type]
        ) as ws:
            code, _ = closed_with(ws)
    assert code in (4401, 4403)


def test_an_empty_authorization_header_never_falls_back_to_the_cookie(
    server: Server, alice: Account
) -> None:
    with signed_in(server, alice) as http:
        headers = {**cookie_header(http), "Authorization": ""}
        answer = http.get("/api/me", headers={"Authorization": ""})
        with connect(server.ws_url, additional_headers=headers, origin=server.url) as ws:  # type: ignore[arg-type]
            code, reason = closed_with(ws)
    assert error_body(answer, 401)["detail"].startswith("malformed Authorization header")
    assert (code, reason.split(":")[0]) == (4401, "malformed Authorization header")


# -- 6. times near the ends of the calendar ---------------------------------------------------


def cursor_at(ts: str, event_id: str = "zzz") -> str:
    raw = msgspec.json.encode([ts, event_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_paging_through_events_from_year_1_works(server: Server, alice: Account) -> None:
    service = server.account("svc@example.com", is_service=True)
    events = [
        {
            "id": f"old-{action}-{n}",
            "timestamp": f"0001-01-0{n + 1}T00:00:00Z",
            "user_id": alice.user.id,
            "action": action,
        }
        for n in range(3)
        for action in ("query.run", "sync.trigger")
    ]
    with server.client(service) as http:
        assert http.post("/api/audit/events", json=events).status_code == 200
    with server.client(alice) as http:
        for path in ("/api/me/stats/queries", "/api/me/stats/sync"):
            seen: list[str] = []
            cursor: str | None = None
            while True:
                params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
                page = http.get(path, params=params)
                assert page.status_code == 200, page.text
                seen += [row["timestamp"][:10] for row in page.json()["rows"]]
                cursor = page.json()["next_cursor"]
                if cursor is None:
                    break
            assert seen == ["0001-01-03", "0001-01-02", "0001-01-01"]


@pytest.mark.parametrize("path", ["/api/me/stats/queries", "/api/me/stats/sync"])
@pytest.mark.parametrize(
    ("ts", "status"),
    [
        ("0001-01-01T00:00:00+00:00", 200),
        ("0001-01-01T00:00:00", 200),
        ("9999-12-31T23:59:59+00:00", 200),
        ("0001-01-01T00:30:00+01:00", 400),  # before year 1 once in UTC
        ("9999-12-31T23:30:00-01:00", 400),  # after year 9999 once in UTC
    ],
)
def test_a_cursor_at_the_ends_of_the_calendar_is_a_page_or_a_400(
    server: Server, alice: Account, path: str, ts: str, status: int
) -> None:
    with server.client(alice) as http:
        answer = http.get(path, params={"cursor": cursor_at(ts)})
    if status == 200:
        assert answer.status_code == 200, answer.text
        assert answer.json()["rows"] == []
    else:
        assert error_body(answer, 400, "invalid_cursor")


@pytest.mark.parametrize("days", [36_501, 10**9, 2**62])
def test_a_token_lasting_past_the_calendar_is_a_400(
    server: Server, alice: Account, days: int
) -> None:
    body = {"email": alice.user.email, "expires_days": days}
    answer = server.admin("POST", "/tokens", json=body)
    assert error_body(answer, 400)["detail"].startswith("--expires-days must be 1 to 36500")


def test_a_token_lasting_a_hundred_years_is_made(server: Server, alice: Account) -> None:
    body = {"email": alice.user.email, "expires_days": 36_500}
    answer = server.admin("POST", "/tokens", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["info"]["expires_at"].startswith(str(datetime.now(UTC).year + 100)[:3])


# -- 7. a name is matched whole -----------------------------------------------------------------

BOUNDARY = "agnes-test-boundary"


def raw_upload(server: Server, account: Account, filename: str, data: bytes) -> httpx.Response:
    """A multipart body written byte by byte, so the filename reaches the server as is."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    with server.client(account) as http:
        return http.post("/api/upload/sessions", content=body, headers=headers)


def stored_names(server: Server, account: Account) -> list[str]:
    def names(cur: Cursor) -> list[str]:
        rows = cur.execute("SELECT name FROM files WHERE user_id = ?", [account.user.id])
        return [str(r[0]) for r in rows.fetchall()]

    folder = server.settings.sessions_dir / account.user.id
    on_disk = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return sorted(set(on_disk) | set(server.store.read_sync(names)))


@pytest.mark.parametrize(
    "filename", ["nl-test.jsonl\n", "x.jsonl.gz%0A", "x.jsonl\r", "x.jsonl%0A.gz", "\nx.jsonl"]
)
def test_a_name_with_a_line_break_is_refused_and_nothing_is_stored(
    server: Server, alice: Account, filename: str
) -> None:
    import gzip

    answer = raw_upload(server, alice, filename, gzip.compress(b'{"a": 1}\n'))
    assert error_body(answer, 400, "invalid_filename")
    assert stored_names(server, alice) == []


def test_a_download_name_with_a_line_break_is_404(server: Server, alice: Account) -> None:
    assert raw_upload(server, alice, "s.jsonl", b'{"a": 1}\n').status_code == 200
    with server.client(alice) as http:
        assert http.get("/api/me/sessions/s.jsonl").status_code == 200
        assert error_body(http.get("/api/me/sessions/s.jsonl%0A"), 404, "not_found")


# -- 8 and 10. a batch of audit events is all or nothing -------------------------------------


def audit_event(user_id: str, n: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"evt-{n}",
        "timestamp": f"2026-03-01T10:00:{n:02d}Z",
        "user_id": user_id,
        "action": "query.run",
        **fields,
    }


def stored_event_ids(server: Server) -> list[str]:
    rows = server.store.read_sync(
        lambda cur: cur.execute("SELECT id FROM audit_events ORDER BY id").fetchall()
    )
    return [str(r[0]) for r in rows]


def api_spool_lines(server: Server) -> int:
    return sum(
        len(path.read_bytes().splitlines()) for path in server.settings.audit_dir.glob("api-*")
    )


def test_an_event_too_long_for_a_spool_line_refuses_the_whole_batch(
    server: Server, alice: Account
) -> None:
    service = server.account("svc@example.com", is_service=True)
    batch = [
        audit_event(alice.user.id, 1),
        audit_event(alice.user.id, 2, params={"sql": "x" * (1 << 20)}),
        audit_event(alice.user.id, 3),
    ]
    with server.client(service) as http:
        answer = http.post("/api/audit/events", json=batch)
    detail = error_body(answer, 413, "event_too_large")["detail"]
    assert detail.startswith("event 1 (id 'evt-2') is ")
    assert detail.endswith("bytes as a spool line, more than 1048576; nothing was stored")
    assert stored_event_ids(server) == []
    assert api_spool_lines(server) == 0


def test_an_event_exactly_as_long_as_a_spool_line_may_be_is_stored(
    server: Server, alice: Account
) -> None:
    from service.ingest.audit import prepared
    from service.models import AuditEvent
    from service.spool_writer import spool_line

    def line_length(event: dict[str, Any]) -> int:
        return len(spool_line(prepared(msgspec.convert(event, AuditEvent))))

    service = server.account("svc@example.com", is_service=True)
    empty = line_length(audit_event(alice.user.id, 1, params={"sql": ""}))
    fits = audit_event(alice.user.id, 1, params={"sql": "x" * ((1 << 20) - empty)})
    assert line_length(fits) == 1 << 20
    with server.client(service) as http:
        answer = http.post("/api/audit/events", json=[fits, audit_event(alice.user.id, 2)])
    assert answer.json() == {"accepted": 2, "stored": 2}, answer.text


def test_an_event_for_an_unknown_user_refuses_the_whole_batch(
    server: Server, alice: Account
) -> None:
    service = server.account("svc@example.com", is_service=True)
    batch = [audit_event(alice.user.id, 1), audit_event("no-such-user", 2)]
    with server.client(service) as http:
        answer = http.post("/api/audit/events", json=batch)
    detail = error_body(answer, 400, "unknown_user")["detail"]
    assert detail.startswith("no user has the id 'no-such-user': ")
    assert stored_event_ids(server) == []
    assert api_spool_lines(server) == 0


def test_an_id_reused_for_another_event_is_409_and_stores_nothing(
    server: Server, alice: Account
) -> None:
    service = server.account("svc@example.com", is_service=True)
    with server.client(service) as http:
        first = http.post("/api/audit/events", json=[audit_event(alice.user.id, 1)])
        same = http.post("/api/audit/events", json=[audit_event(alice.user.id, 1)])
        other = audit_event(alice.user.id, 1, action="query.export")
        reused = http.post("/api/audit/events", json=[audit_event(alice.user.id, 2), other])
        twice = http.post(
            "/api/audit/events",
            json=[audit_event(alice.user.id, 3), other, audit_event(alice.user.id, 3, result="x")],
        )
    assert first.json() == {"accepted": 1, "stored": 1}
    assert same.json() == {"accepted": 1, "stored": 0}, "the same event again is no conflict"
    detail = error_body(reused, 409, "conflicting_event")["detail"]
    assert detail == (
        "the id 'evt-1' belongs to a stored event with other content; nothing was stored"
    )
    detail = error_body(twice, 409, "conflicting_event")["detail"]
    assert detail.startswith("event 2 reuses the id 'evt-3' of an earlier event in the batch")
    assert stored_event_ids(server) == ["evt-1"]


def test_spool_lines_for_unknown_users_or_reused_ids_are_logged(
    server: Server, alice: Account, caplog: pytest.LogCaptureFixture
) -> None:
    from service.models import AuditEvent
    from service.spool_writer import append_events

    def spool(events: list[dict[str, Any]]) -> None:
        append_events(
            server.settings.audit_dir,
            [msgspec.convert(e, AuditEvent) for e in events],
            name="other-service.jsonl",
        )

    caplog.set_level("WARNING", logger="agnes.audit")
    spool([audit_event(alice.user.id, 1), audit_event("ghost", 2)])
    deadline = time.monotonic() + 10
    while len(stored_event_ids(server)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    spool([audit_event(alice.user.id, 1, action="query.export")])
    while "reused" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored_event_ids(server) == ["evt-1", "evt-2"]
    assert "1 audit events name no known user (stored, but shown to no one): user ids ghost" in (
        caplog.text
    )
    assert "1 audit event ids were reused for other content" in caplog.text
    assert caplog.text.rstrip().endswith("dropped: evt-1")


def test_append_events_writes_nothing_of_a_batch_with_an_overlong_event(tmp_path: Any) -> None:
    from service.models import AuditEvent
    from service.spool_writer import append_events

    events = [
        msgspec.convert(audit_event("u", 1), AuditEvent),
        msgspec.convert(audit_event("u", 2, params={"sql": "x" * (1 << 20)}), AuditEvent),
    ]
    with pytest.raises(ValueError, match=r"^event 1 is "):
        append_events(tmp_path, events, name="w.jsonl")
    assert not (tmp_path / "w.jsonl").exists()
    for name in ("x\n.jsonl", "x.jsonl\n", "a\tb.jsonl"):
        with pytest.raises(ValueError, match="spool file name"):
            append_events(tmp_path, events[:1], name=name)
    assert list(tmp_path.iterdir()) == []


# -- 10. who the client is ----------------------------------------------------------------------


def recorded_client_ip(server: Server, account: Account) -> str:
    with server.client(account) as http:
        pulled = http.get("/api/sync/manifest", headers={"X-Forwarded-For": "203.0.113.9"})
        assert pulled.status_code == 200, pulled.text
        rows = http.get("/api/me/stats/sync").json()["rows"]
    assert [row["action"] for row in rows] == ["manifest.fetch"]
    return str(rows[0]["client_ip"])


def test_a_local_client_cannot_choose_its_recorded_address(server: Server, alice: Account) -> None:
    assert recorded_client_ip(server, alice) == "127.0.0.1"


@pytest.mark.settings(forwarded_allow_ips="127.0.0.1")
def test_a_trusted_proxy_names_the_client(server: Server, alice: Account) -> None:
    assert recorded_client_ip(server, alice) == "203.0.113.9"


# -- 9 and 10. the operator's side ---------------------------------------------------------------


def public_address() -> str:
    """An address of this machine other than loopback ("0.0.0.0" when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = str(probe.getsockname()[0])
        except OSError:
            return "0.0.0.0"
    return "0.0.0.0" if ipaddress.ip_address(address).is_loopback else address


def cli(*args: str, data_dir: Path | None = None, cwd: Path | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "AGNES_DATA_DIR"}
    if data_dir is not None:
        env["AGNES_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", public_address()])
def test_admin_commands_work_while_the_server_listens_on_a_public_address(
    tmp_path: Path, host: str
) -> None:
    data_dir = tmp_path / "data"
    with served(data_dir, "--host", host) as (_, url):
        added = cli("users", "add", "op@example.com", data_dir=data_dir)
        assert added.returncode == 0, added.stderr
        made = cli("tokens", "create", "op@example.com", data_dir=data_dir)
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip().splitlines()[-1]
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/api/me", headers=headers).status_code == 200
        revoked = cli("tokens", "revoke", token, data_dir=data_dir)
        assert revoked.returncode == 0, revoked.stderr
        assert httpx.get(f"{url}/api/me", headers=headers).status_code == 401


def test_the_admin_api_answers_only_on_its_own_loopback_listener(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with served(data_dir) as (_, url):
        endpoint = json.loads((data_dir / ".admin.json").read_text())
        headers = {"x-agnes-admin-secret": endpoint["secret"]}
        public = httpx.get(f"{url}/api/admin/users", headers=headers)
        own = httpx.get(f"{endpoint['url']}/api/admin/users", headers=headers)
    assert error_body(public, 403)["detail"] == "the admin API is for the local CLI only"
    assert own.status_code == 200 and own.json() == []
    assert urlsplit(endpoint["url"]).hostname in ("127.0.0.1", "::1")
    assert endpoint["url"] != url


@pytest.mark.parametrize(
    "args",
    [
        ("users", "list"),
        ("users", "deactivate", "x@example.com"),
        ("tokens", "list"),
        ("tokens", "revoke", "agn_12345678"),
        ("tokens", "create", "x@example.com"),
    ],
)
def test_admin_commands_on_a_missing_data_dir_say_so_and_create_nothing(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    missing = cli(*args, cwd=tmp_path)  # the default, ./data
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"error: no data dir {tmp_path / 'data'}: is --data-dir")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()
    empty = cli(*args, data_dir=tmp_path / "empty")
    assert empty.returncode == 1
    assert empty.stderr.startswith(f"error: no database in {tmp_path / 'empty'} (no activity")
    assert list((tmp_path / "empty").iterdir()) == []


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_database_and_transcripts_are_private_to_the_services_user(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)  # as a umask of 022 leaves it
    with served(data_dir) as (_, url):
        assert cli("users", "add", "m@example.com", data_dir=data_dir).returncode == 0
        root = cli("users", "add", "root@example.com", "--admin", data_dir=data_dir)
        assert root.returncode == 0
        made = cli("tokens", "create", "root@example.com", data_dir=data_dir)
        headers = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
        uploaded = httpx.post(
            f"{url}/api/upload/sessions", headers=headers, files={"file": ("s.jsonl", b"{}\n")}
        )
        assert uploaded.status_code == 200, uploaded.text
        user_id = root.stdout.strip().splitlines()[-1]
        event = {"timestamp": "2026-03-01T10:00:00Z", "user_id": user_id, "action": "query.x"}
        posted = httpx.post(f"{url}/api/audit/events", headers=headers, json=[event])
        assert posted.status_code == 200, posted.text
    assert mode_of(data_dir) == 0o750, "others are shut out, the group kept as it was"
    folders = [data_dir / "user_sessions", data_dir / "audit", data_dir / "user_sessions" / user_id]
    assert {p.name: mode_of(p) for p in folders} == {p.name: 0o700 for p in folders}
    files = [
        data_dir / "activity.duckdb",
        data_dir / "user_sessions" / user_id / "s.jsonl",
        *(data_dir / "audit").glob("api-*.jsonl"),
    ]
    assert len(files) == 3
    assert {p.name: mode_of(p) for p in files} == {p.name: 0o600 for p in files}


def pulls_recorded(server: Server, account: Account) -> int:
    row = server.store.read_sync(
        lambda cur: cur.execute(
            "SELECT count(*) FROM audit_events WHERE user_id = ? AND action = 'manifest.fetch'",
            [account.user.id],
        ).fetchone()
    )
    return int(row[0]) if row else 0


def test_another_site_cannot_make_a_signed_in_browser_record_a_pull(
    server: Server, alice: Account
) -> None:
    with signed_in(server, alice) as http:
        # what a link or redirect from another site does: the Lax cookie goes along
        crossed = http.get("/api/sync/manifest", headers={"Sec-Fetch-Site": "cross-site"})
        own = http.get("/api/sync/manifest", headers={"X-CSRF-Token": http.cookies["agnes_csrf"]})
    assert error_body(crossed, 403)["detail"].startswith("missing or wrong CSRF token")
    assert own.status_code == 200 and own.json()["user_id"] == alice.user.id
    with server.client(alice) as http:
        assert http.get("/api/sync/manifest").status_code == 200, "a sync client needs no CSRF"
    assert pulls_recorded(server, alice) == 2


def test_a_long_poll_that_outlives_its_token_ends_with_401(server: Server, alice: Account) -> None:
    answers: list[httpx.Response] = []

    def poll() -> None:
        with server.client(alice) as http:
            now = http.get("/api/me/live/poll", params={"since": 0, "timeout": 0})
            params = {"since": now.json()["version"] if now.status_code == 200 else 0, "timeout": 3}
            answers.append(http.get("/api/me/live/poll", params=params))

    waiting = threading.Thread(target=poll)
    waiting.start()
    time.sleep(1)
    assert server.admin("POST", "/tokens/revoke", json={"token_or_prefix": alice.token}).is_success
    waiting.join()
    assert error_body(answers[0], 401)["detail"] == "token revoked"
