from tests.conftest import Server


def test_health_needs_no_token_and_advertises_gzip_uploads(server: Server) -> None:
    with server.client() as http:
        response = http.get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.headers["X-Agnes-Accepts"] == "session-gzip"
