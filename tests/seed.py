"""Seeding helpers: put rows straight into the store the way ingest would leave them.

Ingestion has its own tests; the API tests here only need known rows to read back, so
they write the tables of ``service/store/migrations/0001_initial.sql`` directly.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn

from service.app import create_app
from service.ingest.audit import prepared
from service.models import AuditEvent
from service.server import uvicorn_config
from service.settings import Settings, bind_socket, prepare_data_dir
from service.store import Cursor, Store, audit, usage, users
from service.store.copies import message_key
from service.synthetic.lines import assistant, jsonl
from tests.conftest import Account, Server

_keys = itertools.count()


def utc(text: str) -> datetime:
    """``"2026-03-01T23:30:00"`` → an aware UTC datetime."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def add_file(
    store: Store,
    user_id: str,
    name: str,
    *,
    status: str = "processed",
    first_seen_at: datetime | None = None,
    is_subagent: bool = False,
    session_file: str | None = None,
    size: int = 0,
) -> None:
    """A row in ``files`` for ``user_sessions/<user_id>/<name>`` (the file itself is not
    written; see :func:`write_session_file`)."""

    def insert(cur: Cursor) -> None:
        cur.execute(
            "INSERT INTO files (path, user_id, name, session_file, is_subagent, size, status,"
            " first_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                f"{user_id}/{name}",
                user_id,
                name,
                session_file or name,
                is_subagent,
                size,
                status,
                first_seen_at or datetime.now(UTC),
            ],
        )

    store.write_sync(insert)


def assistant_line(
    session_id: str,
    message_id: str,
    ts: datetime,
    model: str,
    tokens: tuple[int, int, int, int],
) -> bytes:
    """One transcript line carrying one API response: ``tokens`` is (input, output,
    cache_read, cache_creation)."""
    inp, out, read, create = tokens
    return jsonl(
        assistant(
            uuid=f"uuid-{message_id}",
            ts=ts.isoformat().replace("+00:00", "Z"),
            message_id=f"msg_{message_id}",
            request_id=f"req_{message_id}",
            model=model,
            usage={
                "input_tokens": inp,
                "output_tokens": out,
                "cache_read_input_tokens": read,
                "cache_creation_input_tokens": create,
            },
            content=[{"type": "text", "text": "ok"}],
            session=session_id,
            cwd="/home/analyst/project",
        )
    )


def upload_and_wait(server: Server, account: Account, name: str, data: bytes) -> None:
    """Upload a transcript through the API and wait until ingest has read it."""
    with server.client(account) as http:
        response = http.post("/api/upload/sessions", files={"file": (name, data)})
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 10
        while True:
            rows = http.get("/api/me/stats/sessions", params={"limit": 200}).json()["rows"]
            if any(r["session_file"] == name and r["pipeline_status"] != "pending" for r in rows):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} was not ingested within 10 s: {rows}")
            time.sleep(0.02)


def add_session(
    store: Store,
    user_id: str,
    session_file: str,
    *,
    session_id: str,
    started_at: datetime,
    ended_at: datetime | None = None,
    primary_model: str | None = None,
    tokens: tuple[int, int, int, int] = (0, 0, 0, 0),
    user_messages: int = 0,
    tool_calls: int = 0,
) -> None:
    """A row in ``sessions`` (the summary ingest would write for a parent file)."""
    inp, out, read, create = tokens

    def insert(cur: Cursor) -> None:
        cur.execute(
            "INSERT INTO sessions (key, user_id, session_file, session_id, started_at, ended_at,"
            " primary_model, input_tokens, output_tokens, cache_read_tokens,"
            " cache_creation_tokens, user_messages, tool_calls)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                f"{user_id}/{session_file}",
                user_id,
                session_file,
                session_id,
                started_at,
                ended_at or started_at,
                primary_model,
                inp,
                out,
                read,
                create,
                user_messages,
                tool_calls,
            ],
        )

    store.write_sync(insert)


def add_usage(
    store: Store,
    user_id: str,
    *,
    session_file: str,
    ts: datetime,
    model: str | None,
    tokens: tuple[int, int, int, int],
    cost_usd: float | None = None,
    session_id: str | None = None,
) -> None:
    """One deduplicated usage entry (a winning copy): ``tokens`` is (input, output,
    cache_read, cache_creation)."""
    inp, out, read, create = tokens
    key = f"key-{next(_keys)}"

    def insert(cur: Cursor) -> None:
        cur.execute(
            "INSERT INTO usage_entries (user_id, file_path, line_key, file_name, session_file,"
            " message_id, request_id, session_id, ts, model, input_tokens, output_tokens,"
            " cache_read_tokens, cache_creation_tokens, cache_creation_5m, cache_creation_1h,"
            " is_sidechain, speed, cost_usd, winner, message_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false, NULL, ?, true, ?)",
            [
                user_id,
                f"{user_id}/{session_file}",
                key,
                session_file,
                session_file,
                f"msg_{key}",
                f"req_{key}",
                session_id or session_file.removesuffix(".jsonl"),
                ts,
                model,
                inp,
                out,
                read,
                create,
                create,
                0,
                cost_usd,
                message_key(user_id, f"msg_{key}"),
            ],
        )
        usage.rebuild(cur, [user_id])  # what ingest keeps beside the entries

    store.write_sync(insert)


def event(
    user_id: str, action: str, ts: datetime, *, id: str | None = None, **fields: Any
) -> AuditEvent:
    return AuditEvent(id=id, timestamp=ts, user_id=user_id, action=action, **fields)


def add_events(store: Store, events: list[AuditEvent]) -> None:
    """Store audit events the way the spool and ``POST /api/audit/events`` do."""

    def insert(cur: Cursor) -> None:
        stored_for = audit.insert_events(cur, [prepared(e) for e in events])
        users.bump_versions(cur, set(stored_for))

    store.write_sync(insert)


def count_events(store: Store, where: str = "true", params: list[object] | None = None) -> int:
    def count(cur: Cursor) -> int:
        row = cur.execute(
            f"SELECT count(*) FROM audit_events WHERE {where}", params or []
        ).fetchone()
        return int(row[0]) if row else 0

    return store.read_sync(count)


def error_body(response: Any, status: int, error: str | None = None) -> dict[str, Any]:
    """Check that ``response`` is the JSON error the service promises, and return it."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["status_code"] == status
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["detail"], str) and body["detail"]
    if error is not None:
        assert body["error"] == error, body
    return body


@contextmanager
def serve(data_dir: Path) -> Iterator[Server]:
    """A server like conftest's ``server`` fixture, for a module-scoped fixture: tests that
    only read and are refused (bad input) share one instead of paying a start each."""
    settings = Settings(data_dir=data_dir, host="127.0.0.1", port=0)
    prepare_data_dir(settings)
    store = Store(settings.db_path)
    sock = bind_socket(settings.host, 0)
    app = create_app(settings, store)
    config = uvicorn_config(
        app, settings, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not uv.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        port = sock.getsockname()[1]
        yield Server(url=f"http://127.0.0.1:{port}", settings=settings, store=store, app=app)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()
        store.close()
