"""The audit spool: append-only ``audit/*.jsonl`` files, read from a stored offset, every
event stored exactly once, on a real store (and, for the HTTP route, a real server)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from service import operations
from service.ingest.pipeline import Ingest
from service.ingest.spool import MAX_LINE_BYTES, SpoolJob, read_spool
from service.models import AuditEvent, User
from service.settings import Settings
from service.spool_writer import append_events, daily_name
from service.store import Cursor, Store
from tests.conftest import Account, Server
from watchers.scan import unread_files


@pytest.fixture
def ingest(settings: Settings, store: Store) -> Ingest:
    return Ingest(settings, store)


@pytest.fixture
def ana(store: Store) -> User:
    return store.write_sync(operations.add_user, "ana@example.com", False)


def event(user_id: str, action: str = "query.run", n: int = 0, **fields: Any) -> dict[str, Any]:
    return {
        "timestamp": f"2026-02-01T09:00:{n:02d}Z",
        "user_id": user_id,
        "action": action,
        "resource": f"table_{n}",
        "params": {"n": n},
        **fields,
    }


def line(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode() + b"\n"


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def stored(cur: Cursor, user_id: str | None = None) -> list[tuple[str, str, str]]:
    """(action, resource, id) of stored events, oldest first."""
    where, params = ("WHERE user_id = ?", [user_id]) if user_id else ("", [])
    rows = cur.execute(
        f"SELECT action, resource, id FROM audit_events {where} ORDER BY ts, id", params
    ).fetchall()
    return [(str(a), str(r), str(i)) for a, r, i in rows]


def spool_row(cur: Cursor, name: str) -> tuple[int, int]:
    rows = cur.execute(
        "SELECT read_offset, bad_lines FROM spool_files WHERE path = ?", [name]
    ).fetchall()
    assert rows, f"no spool_files row for {name}"
    return int(rows[0][0]), int(rows[0][1])


# -- reading a spool file (pure) ------------------------------------------------------------


def test_only_complete_lines_are_read_and_the_torn_one_waits(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    whole = line(event("u", n=1))
    path.write_bytes(whole + line(event("u", n=2))[:25])
    first = read_spool(SpoolJob(absolute=str(path), path="s.jsonl", known=None))
    assert [e.resource for e in first.events] == ["table_1"]
    assert first.read_offset == len(whole) and first.size > len(whole)
    assert first.events[0].id is not None and first.events[0].id.startswith("sha256:")


def test_an_overlong_line_is_skipped_and_counted_without_stopping(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    huge = b'{"pad": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n'
    path.write_bytes(line(event("u", n=1)) + huge + line(event("u", n=2)))
    result = read_spool(SpoolJob(absolute=str(path), path="s.jsonl", known=None))
    assert [e.resource for e in result.events] == ["table_1", "table_2"]
    assert (result.bad_lines_read, result.read_offset) == (1, path.stat().st_size)


# -- ingest on a real store -----------------------------------------------------------------


def test_spool_events_are_stored_with_their_tabs_and_a_new_version(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = settings.audit_dir / "svc.jsonl"
    path.write_bytes(
        line(event(ana.id, "query.run", 1, id="q-1"))
        + line(event(ana.id, "sync.trigger", 2))
        + line(event("someone-else", "login", 3))
    )
    report = ingest.run([path])
    assert store.read_sync(stored, ana.id)[0] == ("query.run", "table_1", "q-1")
    assert [a for a, _, _ in store.read_sync(stored)] == ["query.run", "sync.trigger", "login"]
    assert report.changed == {ana.id: {"queries", "sync"}, "someone-else": set()}
    assert set(report.versions) == {ana.id, "someone-else"}
    assert (report.files, report.lines, report.events, report.bad_lines) == (1, 3, 3, 0)
    assert store.read_sync(spool_row, "svc.jsonl") == (path.stat().st_size, 0)


def test_a_torn_spool_line_is_stored_once_after_it_is_completed(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = settings.audit_dir / "svc.jsonl"
    whole = line(event(ana.id, n=1))
    torn = line(event(ana.id, n=2))
    path.write_bytes(whole + torn[:30])
    ingest.run([path])
    assert [r for _, r, _ in store.read_sync(stored)] == ["table_1"]
    assert unread_files(settings, store) == [path], "the torn line keeps the file unread"

    nothing_yet = ingest.run([path])
    assert nothing_yet.changed == {} and nothing_yet.versions == {}
    append(path, torn[30:])
    completed = ingest.run([path])
    assert completed.changed == {ana.id: {"queries"}}
    ingest.run([path])
    assert [r for _, r, _ in store.read_sync(stored)] == ["table_1", "table_2"]
    assert unread_files(settings, store) == []


def test_the_same_event_appended_twice_is_stored_once(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = settings.audit_dir / "svc.jsonl"
    with_id = line(event(ana.id, n=1, id="evt-1"))
    without_id = line(event(ana.id, n=2))
    path.write_bytes(with_id + without_id + with_id)
    ingest.run([path])
    append(path, without_id + with_id)
    second = ingest.run([path])
    (settings.audit_dir / "other.jsonl").write_bytes(without_id)
    third = ingest.run([settings.audit_dir / "other.jsonl"])
    assert [r for _, r, _ in store.read_sync(stored)] == ["table_1", "table_2"]
    assert second.events == 2 and second.changed == {} and second.versions == {}
    assert third.changed == {}


def test_bad_spool_lines_are_skipped_and_counted(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = settings.audit_dir / "svc.jsonl"
    bad = [
        b"{not json\n",
        b'["a list"]\n',
        line({"user_id": ana.id, "action": "query.run"}),  # no timestamp
        line(event(ana.id, timestamp="0001-01-01T00:00:00+14:00")),  # before year 1 in UTC
        line(event(ana.id, params=[1])),
        b"\xff\xfe\n",
    ]
    path.write_bytes(line(event(ana.id, n=1)) + b"".join(bad) + b"\n" + line(event(ana.id, n=2)))
    report = ingest.run([path])
    assert [r for _, r, _ in store.read_sync(stored)] == ["table_1", "table_2"]
    assert (report.bad_lines, report.lines, report.errors) == (len(bad), len(bad) + 2, [])
    append(path, b"{still bad}\n" + line(event(ana.id, n=3)))
    ingest.run([path])
    assert store.read_sync(spool_row, "svc.jsonl") == (path.stat().st_size, len(bad) + 1)
    assert len(store.read_sync(stored)) == 3


def test_a_replaced_spool_file_is_read_again_and_stores_only_what_is_new(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = settings.audit_dir / "svc.jsonl"
    path.write_bytes(line(event(ana.id, n=1)) + line(event(ana.id, n=2)))
    ingest.run([path])
    replacement = line(event(ana.id, n=3)) + line(event(ana.id, n=2)) + line(event(ana.id, n=4))
    path.write_bytes(replacement)
    report = ingest.run([path])
    assert [r for _, r, _ in store.read_sync(stored)] == [f"table_{n}" for n in (1, 2, 3, 4)]
    assert report.lines == 3, "read again from the start"
    assert store.read_sync(spool_row, "svc.jsonl") == (len(replacement), 0)


def test_only_spool_files_in_the_audit_folder_are_read(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    content = line(event(ana.id, n=1))
    (settings.audit_dir / ".writing.jsonl").write_bytes(content)
    (settings.audit_dir / "notes.txt").write_bytes(content)
    (settings.audit_dir / "nested").mkdir()
    (settings.audit_dir / "nested" / "deep.jsonl").write_bytes(content)
    link = settings.audit_dir / "link.jsonl"
    link.symlink_to(settings.audit_dir / "notes.txt")
    report = ingest.run(
        [
            settings.audit_dir / ".writing.jsonl",
            settings.audit_dir / "notes.txt",
            settings.audit_dir / "nested" / "deep.jsonl",
            link,
        ]
    )
    assert store.read_sync(stored) == []
    assert report.errors == [("audit/link.jsonl", "symlink not followed")]
    assert unread_files(settings, store) == []


# -- the writer helper ----------------------------------------------------------------------


def test_append_events_writes_complete_lines_with_ids_from_many_threads(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    name = daily_name("worker")
    assert name == f"worker-{datetime.now(UTC).date().isoformat()}.jsonl"

    def write(thread: int) -> None:
        for n in range(50):
            one = msgspec.convert(
                event(ana.id, n=n % 60, correlation_id=f"{thread}-{n}"), AuditEvent
            )
            append_events(settings.audit_dir, [one, one], name=name)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (settings.audit_dir / name).read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 8 * 50 * 2 + 1
    decoded = [json.loads(raw) for raw in lines[:-1]]
    assert all(d["id"].startswith("sha256:") for d in decoded)
    report = ingest.run([settings.audit_dir / name])
    assert (report.lines, report.bad_lines) == (800, 0)
    assert len(store.read_sync(stored)) == 400


@pytest.mark.parametrize("name", ["x.txt", ".hidden.jsonl", "a/b.jsonl", "../up.jsonl"])
def test_append_events_refuses_names_the_service_would_not_read(
    settings: Settings, name: str
) -> None:
    one = msgspec.convert(event("u"), AuditEvent)
    with pytest.raises(ValueError, match="spool file name"):
        append_events(settings.audit_dir, [one], name=name)


# -- POST /api/audit/events through the spool ----------------------------------------------


def test_posted_events_go_through_the_servers_own_spool_file(
    server: Server, alice: Account
) -> None:
    root = server.account("root@example.com", is_admin=True)
    batch = [event(alice.user.id, n=1, id="evt-1"), event(alice.user.id, "sync.trigger", 2)]
    with server.client(root) as http:
        first = http.post("/api/audit/events", json=batch)
        again = http.post("/api/audit/events", json=batch)
    assert first.json() == {"accepted": 2, "stored": 2}, first.text
    assert again.json() == {"accepted": 2, "stored": 0}
    spool = server.settings.audit_dir / daily_name("api")
    ids = [json.loads(raw)["id"] for raw in spool.read_bytes().splitlines()]
    assert len(ids) == 4 and ids[:2] == ids[2:] and ids[0] == "evt-1"
    assert server.store.read_sync(spool_row, spool.name) == (spool.stat().st_size, 0)
    with server.client(alice) as http:
        assert [r["id"] for r in http.get("/api/me/stats/queries").json()["rows"]] == ["evt-1"]
