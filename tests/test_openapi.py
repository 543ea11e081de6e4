"""``/schema`` documents every public endpoint with the Structs it answers with."""

from __future__ import annotations

from tests.conftest import Server

PUBLIC = {
    ("get", "/api/health"),
    ("post", "/api/upload/sessions"),
    ("get", "/api/sync/manifest"),
    ("post", "/api/audit/events"),
    ("get", "/api/me"),
    ("get", "/api/me/stats/sessions"),
    ("get", "/api/me/stats/tokens"),
    ("get", "/api/me/stats/queries"),
    ("get", "/api/me/stats/sync"),
    ("get", "/api/me/sessions/{filename}"),
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
    ):
        assert name in schemas, name
    upload = doc["paths"]["/api/upload/sessions"]["post"]["requestBody"]["content"]
    assert upload["multipart/form-data"]["schema"]["required"] == ["file"]
    sessions = doc["paths"]["/api/me/stats/sessions"]["get"]["parameters"]
    limit = next(p for p in sessions if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 200)
