"""Uploads that batch: concurrent uploads are stored, with their records, by one ingest
batch in one transaction; the 200 comes once that is committed; and each file is read
once (the watcher's later event for a file read already is dropped, unless the file
changed)."""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest

from service import metrics, operations
from service.ingest.pipeline import UPLOAD_TABS, BatchReport, Ingest, session_file_of
from service.ingest.queue import READ_BUDGET, SETTLED_NS, IngestQueue
from service.models import AuditEvent, User
from service.settings import Settings
from service.store import Cursor, Store
from service.store.files import Arrival
from service.store.ingest import TRANSCRIPT_TABS
from service.synthetic.lines import assistant, jsonl
from tests.conftest import Account, Server

USAGE = {
    "input_tokens": 10,
    "output_tokens": 20,
    "cache_creation_input_tokens": 30,
    "cache_read_input_tokens": 40,
}


def response(n: int) -> bytes:
    return jsonl(
        assistant(
            uuid=f"a{n}",
            ts="2026-03-01T10:00:00Z",
            message_id=f"msg_{n}",
            request_id=f"req_{n}",
            usage=USAGE,
        )
    )


def echoes() -> float:
    return metrics.REGISTRY.get_sample_value("agnes_ingest_echoes_total") or 0.0


def arrival(user: User, name: str, size: int) -> Arrival:
    session_file, is_subagent = session_file_of(name)
    return Arrival(
        path=f"{user.id}/{name}",
        user_id=user.id,
        name=name,
        session_file=session_file,
        is_subagent=is_subagent,
        size=size,
        event=AuditEvent(
            id=str(uuid.uuid4()),
            timestamp=datetime.now(UTC),
            user_id=user.id,
            action="session.upload",
            resource=name,
            params={"size": size},
            result="ok",
        ),
    )


def uploads_of(cur: Cursor, user_id: str) -> int:
    row = cur.execute(
        "SELECT count(*) FROM audit_events WHERE user_id = ? AND action = 'session.upload'",
        [user_id],
    ).fetchone()
    return int(row[0]) if row else 0


def statuses(cur: Cursor, user_id: str) -> dict[str, str]:
    rows = cur.execute("SELECT name, status FROM files WHERE user_id = ?", [user_id]).fetchall()
    return {str(name): str(status) for name, status in rows}


def test_an_upload_answered_200_is_already_processed_with_its_tokens_and_listed_in_sync(
    server: Server, alice: Account
) -> None:
    with server.client(alice) as http:
        answer = http.post("/api/upload/sessions", files={"file": ("s1.jsonl", response(1))})
        sessions = http.get("/api/me/stats/sessions").json()
        tokens = http.get("/api/me/stats/tokens").json()
        sync = http.get("/api/me/stats/sync").json()
    assert answer.status_code == 200
    assert [(r["session_file"], r["pipeline_status"]) for r in sessions["rows"]] == [
        ("s1.jsonl", "processed")
    ]
    assert tokens["totals"]["total"] == 100
    assert [(r["action"], r["resource"]) for r in sync["rows"]] == [("session.upload", "s1.jsonl")]


def test_twenty_analysts_uploading_at_once_all_get_their_files_and_records_stored(
    server: Server,
) -> None:
    accounts = [server.account(f"analyst{n}@example.com") for n in range(20)]
    batches = metrics.REGISTRY.get_sample_value("agnes_ingest_batches_total") or 0.0

    def upload(n: int) -> tuple[int, dict[str, object]]:
        with server.client(accounts[n]) as http:
            answer = http.post("/api/upload/sessions", files={"file": (f"s{n}.jsonl", response(n))})
            return answer.status_code, http.get("/api/me/stats/tokens").json()

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(upload, range(20)))
    assert [status for status, _ in answers] == [200] * 20
    assert [tokens["totals"]["total"] for _, tokens in answers] == [100] * 20  # type: ignore[index]
    for account in accounts:
        assert server.store.read_sync(uploads_of, account.user.id) == 1
        assert server.store.read_sync(statuses, account.user.id) == {
            f"s{accounts.index(account)}.jsonl": "processed"
        }
    done = (metrics.REGISTRY.get_sample_value("agnes_ingest_batches_total") or 0.0) - batches
    assert done < 20, "concurrent uploads share batches"


@pytest.fixture
def ana(store: Store) -> User:
    return store.write_sync(operations.add_user, "ana@example.com", False)


def test_uploads_waiting_together_are_read_and_committed_in_one_batch(
    settings: Settings, store: Store, ana: User
) -> None:
    queue = IngestQueue(Ingest(settings, store))
    folder = queue.pipeline.root / ana.id
    folder.mkdir(parents=True)
    reports: list[BatchReport] = []

    async def heard(report: BatchReport) -> None:
        reports.append(report)

    queue.listeners.append(heard)
    answers: list[BatchReport] = []

    async def upload(n: int) -> None:
        data = response(n)
        (folder / f"s{n}.jsonl").write_bytes(data)
        answers.append(
            await queue.arrive(folder / f"s{n}.jsonl", arrival(ana, f"s{n}.jsonl", len(data)))
        )

    async def scenario() -> None:
        async with anyio.create_task_group() as tasks:
            async with anyio.create_task_group() as uploads:
                for n in range(12):
                    uploads.start_soon(upload, n)
                await anyio.sleep(0.1)  # all twelve wait before the consumer starts
                tasks.start_soon(queue.run)
            tasks.cancel_scope.cancel()

    anyio.run(scenario)
    assert len(reports) == 1, "one batch, one transaction"
    assert reports[0].files == 12 and reports[0].lines == 12
    assert reports[0].changed == {ana.id: set(TRANSCRIPT_TABS | UPLOAD_TABS)}
    assert all(answer is reports[0] for answer in answers)
    assert store.read_sync(uploads_of, ana.id) == 12
    assert set(store.read_sync(statuses, ana.id).values()) == {"processed"}


def test_the_watchers_event_for_an_uploaded_file_read_already_is_dropped_unread(
    settings: Settings, store: Store, ana: User
) -> None:
    queue = IngestQueue(Ingest(settings, store))
    folder = queue.pipeline.root / ana.id
    folder.mkdir(parents=True)
    path = folder / "s.jsonl"
    reports: list[BatchReport] = []

    async def heard(report: BatchReport) -> None:
        reports.append(report)

    queue.listeners.append(heard)

    async def scenario() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(queue.run)
            temp = folder / ".upload-1.tmp"
            temp.write_bytes(response(1))
            os.replace(temp, path)  # as the upload handler stores it
            await queue.arrive(path, arrival(ana, "s.jsonl", path.stat().st_size))
            before = echoes()
            queue.put([path])  # the watcher's event for the rename
            await queue.idle()
            assert echoes() == before + 1, "the echo is recognized"
            with path.open("ab") as out:  # the file grows: the next event is read
                out.write(response(2))
            queue.put([path])
            await queue.idle()
            assert echoes() == before + 1
            tasks.cancel_scope.cancel()

    anyio.run(scenario)
    assert [r.lines for r in reports] == [1, 1]


def test_a_file_rewritten_in_place_right_after_its_read_is_read_again(
    settings: Settings, store: Store, ana: User
) -> None:
    """A file copied in by other means (not an upload) can change in place within the
    clock tick of a read, keeping its size and times: its signature is not trusted until
    it has been left alone a while, so the change's event is read, not dropped."""
    queue = IngestQueue(Ingest(settings, store))
    folder = queue.pipeline.root / ana.id
    folder.mkdir(parents=True)
    path = folder / "s.jsonl"
    first, second = response(1), response(2)
    assert len(first) == len(second)

    async def scenario() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(queue.run)
            path.write_bytes(first)
            queue.put([path])
            await queue.idle()
            with path.open("r+b") as out:  # same size, in place, at once
                out.write(second)
            queue.put([path])
            await queue.idle()
            tasks.cancel_scope.cancel()

    anyio.run(scenario)
    keys = store.read_sync(
        lambda cur: [
            r[0]
            for r in cur.execute("SELECT message_id FROM usage_entries WHERE winner").fetchall()
        ]
    )
    assert keys == ["msg_2"]


def test_a_settled_file_seen_again_unchanged_is_not_read_again(
    settings: Settings, store: Store, ana: User
) -> None:
    queue = IngestQueue(Ingest(settings, store))
    folder = queue.pipeline.root / ana.id
    folder.mkdir(parents=True)
    path = folder / "s.jsonl"
    path.write_bytes(response(1))
    time.sleep(SETTLED_NS / 1e9 + 0.05)

    async def scenario() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(queue.run)
            queue.put([path])
            await queue.idle()
            before = echoes()
            queue.put([path])  # e.g. the reconciling scan, or a touch that changed nothing
            await queue.idle()
            assert echoes() == before + 1
            report = await queue.ingest([path])  # asked for outright: read
            assert report.files == 1
            tasks.cancel_scope.cancel()

    anyio.run(scenario)


def test_an_upload_of_a_file_already_read_answers_once_its_record_is_stored(
    server: Server, alice: Account
) -> None:
    """The same bytes uploaded twice (a hook that fires with nothing new): the second 200
    also means its audit event is stored, though nothing was read."""
    data = response(1)
    with server.client(alice) as http:
        first = http.post("/api/upload/sessions", files={"file": ("s.jsonl", data)})
        second = http.post("/api/upload/sessions", files={"file": ("s.jsonl", data)})
        sync = http.get("/api/me/stats/sync").json()
        sessions = http.get("/api/me/stats/sessions").json()
    assert (first.status_code, second.status_code) == (200, 200)
    assert [r["resource"] for r in sync["rows"]] == ["s.jsonl", "s.jsonl"]
    assert [(r["session_file"], r["pipeline_status"]) for r in sessions["rows"]] == [
        ("s.jsonl", "processed")
    ]


def post(http: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return http.post("/api/upload/sessions", files={"file": (name, data)})


def test_a_growing_transcript_uploaded_again_and_again_counts_every_response_once(
    server: Server, alice: Account
) -> None:
    """The hook's pattern: the whole file each time, one response more."""
    body = b""
    with server.client(alice) as http:
        for n in range(15):
            body += response(n)
            assert post(http, "grow.jsonl", body).status_code == 200
        tokens = http.get("/api/me/stats/tokens").json()
        sessions = http.get("/api/me/stats/sessions").json()
    assert tokens["totals"]["total"] == 15 * 100
    assert sessions["total"] == 1
    assert Path(server.settings.sessions_dir / alice.user.id / "grow.jsonl").read_bytes() == body


def test_a_large_upload_is_answered_after_its_first_part_and_read_whole_by_the_batches_after(
    settings: Settings, store: Store, ana: User
) -> None:
    """No batch (and so no upload waiting for one) waits long on one large file: a batch
    reads about READ_BUDGET of it, and the batches that follow read the rest, with the
    same numbers as one read."""
    queue = IngestQueue(Ingest(settings, store))
    folder = queue.pipeline.root / ana.id
    folder.mkdir(parents=True)
    path = folder / "big.jsonl"
    lines = [response(n) for n in range(3 * READ_BUDGET // len(response(0)) + 50)]
    path.write_bytes(b"".join(lines))
    answered: list[BatchReport] = []

    async def scenario() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(queue.run)
            answered.append(
                await queue.arrive(path, arrival(ana, "big.jsonl", path.stat().st_size))
            )
            await queue.idle()
            tasks.cancel_scope.cancel()

    anyio.run(scenario)
    first = answered[0]
    assert first.unfinished == [f"{ana.id}/big.jsonl"]
    assert 0 < first.lines < len(lines)
    assert first.bytes <= READ_BUDGET
    count = store.read_sync(
        lambda cur: cur.execute(
            "SELECT count(*), sum(input_tokens) FROM usage_entries WHERE winner"
        ).fetchone()
    )
    assert count == (len(lines), 10 * len(lines))
    assert store.read_sync(statuses, ana.id) == {"big.jsonl": "processed"}


def test_an_explicit_ingest_of_a_large_file_returns_once_all_of_it_is_read(
    settings: Settings, store: Store, ana: User
) -> None:
    queue = IngestQueue(Ingest(settings, store))
    folder = queue.pipeline.root / ana.id
    folder.mkdir(parents=True)
    path = folder / "big.jsonl"
    lines = [response(n) for n in range(2 * READ_BUDGET // len(response(0)) + 10)]
    path.write_bytes(b"".join(lines))
    reports: list[BatchReport] = []

    async def scenario() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(queue.run)
            reports.append(await queue.ingest([path]))
            tasks.cancel_scope.cancel()

    anyio.run(scenario)
    assert reports[0].lines == len(lines)
    assert reports[0].bytes == path.stat().st_size
    assert reports[0].unfinished == []
