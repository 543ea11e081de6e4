"""Signing in in a browser: a token becomes an HttpOnly session cookie; writes made with the
cookie need the CSRF token."""

from __future__ import annotations

from contextlib import closing

import httpx

from service import operations
from tests.conftest import Account, Server


def sign_in(server: Server, account: Account) -> httpx.Client:
    http = server.client()
    response = http.post("/login", data={"token": account.token})
    assert response.status_code == 303
    assert response.headers["location"] == "/me/activity"
    return http


def test_login_page_is_a_form_posting_the_token(server: Server) -> None:
    with server.client() as http:
        page = http.get("/login")
    assert page.status_code == 200
    assert 'method="post" action="/login"' in page.text
    assert 'name="token"' in page.text


def test_a_wrong_token_says_so_on_the_login_page(server: Server) -> None:
    with server.client() as http:
        page = http.post("/login", data={"token": "agn_not-a-real-token"})
    assert page.status_code == 401
    assert "That token does not sign in: unknown token." in page.text
    assert "agnes_session" not in page.headers.get("set-cookie", "")


def test_sign_in_sets_an_httponly_samesite_lax_session_cookie(
    server: Server, alice: Account
) -> None:
    with server.client() as http:
        response = http.post("/login", data={"token": alice.token})
    cookies = response.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("agnes_session="))
    csrf = next(c for c in cookies if c.startswith("agnes_csrf="))
    assert "HttpOnly" in session
    assert "SameSite=lax" in session or "SameSite=Lax" in session
    assert "HttpOnly" not in csrf, "the page must be able to read the CSRF token"


def test_the_cookie_reads_the_callers_own_data(server: Server, alice: Account) -> None:
    with closing(sign_in(server, alice)) as http:
        me = http.get("/api/me")
        page = http.get("/me/activity")
    assert me.json()["email"] == "alice@example.com"
    assert page.status_code == 200


def test_the_dashboard_sends_strangers_to_login(server: Server) -> None:
    with server.client() as http:
        page = http.get("/me/activity")
    assert page.status_code == 303
    assert page.headers["location"] == "/login"


def test_old_dashboard_address_redirects_permanently(server: Server) -> None:
    with server.client() as http:
        response = http.get("/me/stats")
    assert response.status_code == 301
    assert response.headers["location"] == "/me/activity"


def test_cookie_writes_need_the_csrf_token(server: Server, alice: Account) -> None:
    files = {"file": ("s.jsonl", b'{"type":"user"}\n')}
    with closing(sign_in(server, alice)) as http:
        refused = http.post("/api/upload/sessions", files=files)
        assert refused.status_code == 403
        assert "CSRF" in refused.json()["detail"]
        csrf = http.cookies["agnes_csrf"]
        wrong = http.post("/api/upload/sessions", files=files, headers={"X-CSRF-Token": "x" + csrf})
        assert wrong.status_code == 403
        accepted = http.post("/api/upload/sessions", files=files, headers={"X-CSRF-Token": csrf})
        assert accepted.status_code == 200, accepted.text


def test_bearer_writes_need_no_csrf_token(server: Server, alice: Account) -> None:
    with server.client(alice) as http:
        response = http.post("/api/upload/sessions", files={"file": ("s.jsonl", b"{}\n")})
    assert response.status_code == 200


def test_sign_in_from_another_site_is_refused(server: Server, alice: Account) -> None:
    with server.client() as http:
        response = http.post(
            "/login", data={"token": alice.token}, headers={"Origin": "https://evil.example"}
        )
    assert response.status_code == 403
    assert "agnes_session" not in response.headers.get("set-cookie", "")


def test_sign_out_needs_csrf_and_ends_the_session(server: Server, alice: Account) -> None:
    with closing(sign_in(server, alice)) as http:
        csrf = http.cookies["agnes_csrf"]
        session = http.cookies["agnes_session"]
        assert http.post("/logout", data={}).status_code == 403
        assert http.get("/api/me").status_code == 200
        out = http.post("/logout", data={"csrf_token": csrf})
        assert out.status_code == 303
        assert out.headers["location"] == "/login"
    with server.client(cookies={"agnes_session": session}) as stale:
        assert stale.get("/api/me").status_code == 401


def test_revoking_the_token_ends_its_browser_sessions(server: Server, alice: Account) -> None:
    with closing(sign_in(server, alice)) as http:
        assert http.get("/api/me").status_code == 200
        server.store.write_sync(operations.revoke_token, alice.token)
        response = http.get("/api/me")
    assert response.status_code == 401
