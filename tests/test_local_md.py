"""``POST /api/upload/local-md``, as the original ``agnes push`` sends it (a JSON body with
the ``CLAUDE.local.md`` text, the bearer token), kept as the analyst's latest copy, read
back with ``GET /api/me/local-md`` and shown on the Sync tab."""

from __future__ import annotations

from contextlib import closing

import httpx

from service.api.local_md import MAX_LOCAL_MD_BYTES
from tests.conftest import Account, Server
from tests.seed import error_body
from tests.test_login import sign_in

NOTES = "# Team conventions\n\nRevenue excludes intra-group invoices. Ünïcödé: ✓\n"


def push_local_md(server: Server, account: Account, content: object) -> httpx.Response:
    """What agnes push 0.84.8 does: ``api_post("/api/upload/local-md", json={...})``."""
    return httpx.post(
        f"{server.url}/api/upload/local-md",
        json={"content": content},
        headers={"Authorization": f"Bearer {account.token}"},
        timeout=30,
    )


def test_the_original_clients_local_md_is_kept_read_back_and_on_the_sync_tab(
    server: Server, alice: Account
) -> None:
    response = push_local_md(server, alice, NOTES)
    assert response.status_code == 200, response.text
    size = len(NOTES.encode())
    assert response.json() == {"status": "ok", "user": "alice@example.com", "size": size}
    kept = server.settings.data_dir / "user_local_md" / f"{alice.user.id}.md"
    assert kept.read_text(encoding="utf-8") == NOTES
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]  # no temp file left

    with server.client(alice) as http:
        back = http.get("/api/me/local-md")
        sync = http.get("/api/me/stats/sync").json()
    assert back.status_code == 200
    assert back.headers["content-type"] == "text/markdown; charset=utf-8"
    assert back.text == NOTES
    (row,) = sync["rows"]
    assert (row["action"], row["resource"], row["params"], row["result"]) == (
        "local_md.upload",
        "CLAUDE.local.md",
        {"size": size},
        "ok",
    )

    again = push_local_md(server, alice, "# shorter\n")
    assert again.json()["size"] == 10
    with server.client(alice) as http:
        assert http.get("/api/me/local-md").text == "# shorter\n"
        assert len(http.get("/api/me/stats/sync").json()["rows"]) == 2


def test_local_md_is_the_callers_own(server: Server, alice: Account, bob: Account) -> None:
    with server.client(alice) as http:
        error_body(http.get("/api/me/local-md"), 404, "not_found")
    assert push_local_md(server, bob, "bob's notes").status_code == 200
    with server.client(alice) as http:
        error_body(http.get("/api/me/local-md"), 404, "not_found")
        assert http.get("/api/me/stats/sync").json()["rows"] == []
    with server.client() as http:
        error_body(http.get("/api/me/local-md"), 401)
        error_body(http.post("/api/upload/local-md", json={"content": "x"}), 401)


def test_more_than_1_mib_is_refused_and_the_earlier_copy_stays(
    server: Server, alice: Account
) -> None:
    assert push_local_md(server, alice, NOTES).status_code == 200
    exactly = "x" * MAX_LOCAL_MD_BYTES
    assert push_local_md(server, alice, exactly).json()["size"] == MAX_LOCAL_MD_BYTES
    error_body(push_local_md(server, alice, exactly + "y"), 413, "too_large")
    error_body(push_local_md(server, alice, "é" * (MAX_LOCAL_MD_BYTES // 2 + 1)), 413)
    escaped = "\u0001" * (MAX_LOCAL_MD_BYTES + 1)  # six bytes each in JSON
    error_body(push_local_md(server, alice, escaped), 413)
    with server.client(alice) as http:
        assert http.get("/api/me/local-md").text == exactly
        assert len(http.get("/api/me/stats/sync").json()["rows"]) == 2


def test_a_wrong_body_is_a_400_and_keeps_nothing(server: Server, alice: Account) -> None:
    bearer = {"Authorization": f"Bearer {alice.token}"}
    with server.client(alice) as http:
        for body in [
            {"content": 42},
            {"contents": "typo"},
            ["content"],
        ]:
            error_body(http.post("/api/upload/local-md", json=body), 400)
        for raw in [b"not json", b'{"content": "\\ud800"}', b""]:
            response = http.post(
                "/api/upload/local-md",
                content=raw,
                headers={**bearer, "Content-Type": "application/json"},
            )
            error_body(response, 400)
        error_body(http.get("/api/me/local-md"), 404)
        assert http.get("/api/me/stats/sync").json()["rows"] == []
    assert not (server.settings.data_dir / "user_local_md" / f"{alice.user.id}.md").exists()


def test_an_empty_local_md_is_kept_empty(server: Server, alice: Account) -> None:
    assert push_local_md(server, alice, "").json() == {
        "status": "ok",
        "user": "alice@example.com",
        "size": 0,
    }
    with server.client(alice) as http:
        back = http.get("/api/me/local-md")
    assert (back.status_code, back.text) == (200, "")


def test_a_cookie_upload_needs_the_csrf_token(server: Server, alice: Account) -> None:
    with closing(sign_in(server, alice)) as http:
        refused = http.post("/api/upload/local-md", json={"content": "x"})
        assert refused.status_code == 403
        csrf = http.cookies["agnes_csrf"]
        accepted = http.post(
            "/api/upload/local-md", json={"content": "x"}, headers={"X-CSRF-Token": csrf}
        )
        assert accepted.status_code == 200, accepted.text
