"""``/schema`` documents every public endpoint with the Structs it answers with."""

from __future__ import annotations

from tests.conftest import Server

PUBLIC = {
    ("get", "/api/health"),
    ("post", "/api/upload/sessions"),
    ("post", "/api/upload/local-md"),
    ("get", "/api/sync/manifest"),
    ("post", "/api/audit/events"),
    ("get", "/api/me"),
    ("get", "/api/me/stats/sessions"),
    ("get", "/api/me/stats/tokens"),
    ("get", "/api/me/stats/queries"),
    ("get", "/api/me/stats/sync"),
    ("get", "/api/me/stats/blocks"),
    ("get", "/api/me/sessions/{filename}"),
    ("get", "/api/me/local-md"),
    ("post", "/api/me/live/ticket"),
    ("get", "/api/me/live/poll"),
}


def test_schema_lists_every_endpoint_with_its_types(server: Server) -> None:
    with server.client() as http:
        doc = http.get("/schema").json()
        assert http.get("/schema/openapi.json").json() == doc
    found = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert found == PUBLIC, "admin and page routes stay out; every API route is in"
    schemas = doc["components"]["schemas"]
    for name in (
        "SessionsPage",
        "SessionRow",
        "TokenStats",
        "TokenDay",
        "AuditPage",
        "SyncPage",
        "AuditEvent",
        "UploadResult",
        "Manifest",
        "Me",
        "Health",
        "Ticket",
        "Changes",
        "BlockStats",
        "BlockRow",
        "ActiveBlock",
    ):
        assert name in schemas, name
    upload = doc["paths"]["/api/upload/sessions"]["post"]["requestBody"]["content"]
    assert upload["multipart/form-data"]["schema"]["required"] == ["file"]
    sessions = doc["paths"]["/api/me/stats/sessions"]["get"]["parameters"]
    limit = next(p for p in sessions if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 200)


def test_schema_documents_the_error_answers_and_which_operations_are_public(
    server: Server,
) -> None:
    """What the fuzz test (test_fuzz.py) holds the service to: every answer it can give is
    in the document, with the JSON error body for errors."""
    with server.client() as http:
        doc = http.get("/schema/openapi.json").json()
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/api/health"]["get"]["security"] == [], "health needs no token"
    error = {"$ref": "#/components/schemas/ErrorBody"}
    assert set(doc["components"]["schemas"]["ErrorBody"]["required"]) == {
        "status_code",
        "error",
        "detail",
    }
    for method, path in PUBLIC - {("get", "/api/health")}:
        responses = doc["paths"][path][method]["responses"]
        assert responses["401"]["content"]["application/json"]["schema"] == error, path
    upload = doc["paths"]["/api/upload/sessions"]["post"]["responses"]
    assert {"200", "400", "401", "403", "413", "507"} <= set(upload)
    download = doc["paths"]["/api/me/sessions/{filename}"]["get"]["responses"]
    assert download["404"]["content"]["application/json"]["schema"] == error
    last_modified = download["200"]["headers"]["last-modified"]["schema"]
    assert "format" not in last_modified, "an HTTP date is no RFC 3339 date-time"
    for tab in ("sessions", "tokens", "queries", "sync", "blocks"):
        assert "304" in doc["paths"][f"/api/me/stats/{tab}"]["get"]["responses"], tab
    assert "204" in doc["paths"]["/api/me/live/poll"]["get"]["responses"]


BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_a_browser_opening_schema_gets_a_page_and_clients_the_document(server: Server) -> None:
    with server.client() as http:
        page = http.get("/schema", headers=BROWSER)
        document = http.get("/schema", headers={"Accept": "application/json"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/api.js">' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    assert document.json()["openapi"].startswith("3.")


def test_an_unknown_address_is_a_page_for_browsers_and_json_for_clients(server: Server) -> None:
    with server.client() as http:
        page = http.get("/no/such/page", headers=BROWSER)
        api = http.get("/no/such/page", headers={"Accept": "application/json"})
        anything = http.get("/api/nothing-here")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert 'href="/me/activity"' in page.text
    assert "/no/such/page" in page.text
    for response in (api, anything):
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


def test_the_404_page_shows_the_address_as_text(server: Server) -> None:
    with server.client() as http:
        page = http.get("/<script>alert(1)</script>", headers=BROWSER)
    assert page.status_code == 404
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
