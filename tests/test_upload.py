"""``POST /api/upload/sessions``: a transcript is stored whole under the caller's folder,
can be downloaded again byte for byte, and leaves a ``session.upload`` record."""

from __future__ import annotations

import gzip
import hashlib
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from service.store import Cursor
from tests.conftest import Account, Server

MiB = 1024 * 1024


def transcript(seed: int, size: int) -> bytes:
    """``size`` bytes of JSON lines, different for every seed."""
    rng = random.Random(seed)
    lines = []
    total = 0
    while total < size:
        line = b'{"seed":%d,"n":%d,"text":"%s"}\n' % (
            seed,
            len(lines),
            rng.randbytes(60).hex().encode(),
        )
        lines.append(line)
        total += len(line)
    return b"".join(lines)[: size - 1] + b"\n"


def post(http: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return http.post(
        "/api/upload/sessions", files={"file": (name, data, "application/octet-stream")}
    )


def folder_of(server: Server, account: Account) -> Path:
    return server.settings.sessions_dir / account.user.id


def file_rows(cur: Cursor, user_id: str) -> list[tuple[object, ...]]:
    return cur.execute(
        "SELECT path, name, session_file, is_subagent, size, status FROM files"
        " WHERE user_id = ? ORDER BY name",
        [user_id],
    ).fetchall()


def test_plain_upload_is_stored_and_downloads_the_same_bytes(
    server: Server, alice: Account
) -> None:
    data = transcript(1, 5000)
    with server.client(alice) as http:
        response = post(http, "s1.jsonl", data)
        download = http.get("/api/me/sessions/s1.jsonl")
        sessions = wait_until_processed(http, "s1.jsonl")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "filename": "s1.jsonl", "size": 5000}
    assert (folder_of(server, alice) / "s1.jsonl").read_bytes() == data
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("application/x-ndjson")
    assert download.content == data
    assert sessions["total"] == 1
    row = sessions["rows"][0]
    assert (row["session_file"], row["pipeline_status"], row["processed"]) == (
        "s1.jsonl",
        "processed",
        True,
    )
    assert server.store.read_sync(file_rows, alice.user.id) == [
        (f"{alice.user.id}/s1.jsonl", "s1.jsonl", "s1.jsonl", False, 5000, "processed")
    ]


def wait_until_processed(http: httpx.Client, name: str) -> dict[str, Any]:
    """The sessions page once ``name`` left ``pending`` (ingest runs right after upload)."""
    deadline = time.monotonic() + 10
    while True:
        page = http.get("/api/me/stats/sessions").json()
        rows = [r for r in page["rows"] if r["session_file"] == name]
        if rows and rows[0]["pipeline_status"] != "pending":
            return page  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"{name} still pending"
        time.sleep(0.02)


def test_gzipped_upload_is_stored_inflated_under_the_name_without_gz(
    server: Server, alice: Account
) -> None:
    data = transcript(2, 300_000)
    with server.client(alice) as http:
        response = post(http, "s2.jsonl.gz", gzip.compress(data))
        download = http.get("/api/me/sessions/s2.jsonl")
        as_gz = http.get("/api/me/sessions/s2.jsonl.gz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "filename": "s2.jsonl", "size": 300_000}
    assert sorted(p.name for p in folder_of(server, alice).iterdir()) == ["s2.jsonl"]
    assert (folder_of(server, alice) / "s2.jsonl").read_bytes() == data
    assert download.content == data
    assert as_gz.status_code == 404


def test_concatenated_gzip_members_are_all_kept(server: Server, alice: Account) -> None:
    first, second = transcript(3, 1000), transcript(4, 2000)
    with server.client(alice) as http:
        response = post(http, "s3.jsonl.gz", gzip.compress(first) + gzip.compress(second))
    assert response.json() == {"status": "ok", "filename": "s3.jsonl", "size": 3000}
    assert (folder_of(server, alice) / "s3.jsonl").read_bytes() == first + second


def test_upload_appears_in_sync_as_a_session_upload(server: Server, alice: Account) -> None:
    with server.client(alice) as http:
        post(http, "s4.jsonl.gz", gzip.compress(b'{"a":1}\n'))
        sync = http.get("/api/me/stats/sync").json()
    assert len(sync["rows"]) == 1
    row = sync["rows"][0]
    assert (row["action"], row["resource"], row["params"], row["result"], row["client_kind"]) == (
        "session.upload",
        "s4.jsonl",
        {"size": 8},
        "ok",
        "api",
    )
    assert row["timestamp"].endswith("+00:00")
    assert sync["last_pull_at"] is None


def test_second_upload_of_the_same_name_replaces_the_file(server: Server, alice: Account) -> None:
    long, short = transcript(5, 10_000), transcript(6, 100)
    with server.client(alice) as http:
        assert post(http, "same.jsonl", long).json()["size"] == 10_000
        assert post(http, "same.jsonl.gz", gzip.compress(short)).json() == {
            "status": "ok",
            "filename": "same.jsonl",
            "size": 100,
        }
        download = http.get("/api/me/sessions/same.jsonl")
        sessions = http.get("/api/me/stats/sessions").json()
        manifest = http.get("/api/sync/manifest").json()
    assert download.content == short
    assert sorted(p.name for p in folder_of(server, alice).iterdir()) == ["same.jsonl"]
    assert sessions["total"] == 1
    assert manifest["files"] == [
        {"name": "same.jsonl", "size": 100, "download_url": "/api/me/sessions/same.jsonl"}
    ]


def test_subagent_transcript_travels_flat_and_belongs_to_its_session(
    server: Server, alice: Account
) -> None:
    parent, child = transcript(7, 500), transcript(8, 400)
    name = "0b7c5a52-1f2e-4d3c-9a8b-7c6d5e4f3a2b.agent-a1b2c3d4.jsonl"
    with server.client(alice) as http:
        assert post(http, "0b7c5a52-1f2e-4d3c-9a8b-7c6d5e4f3a2b.jsonl", parent).status_code == 200
        response = post(http, name + ".gz", gzip.compress(child))
        download = http.get(f"/api/me/sessions/{name}")
        sessions = http.get("/api/me/stats/sessions").json()
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "filename": name, "size": 400}
    assert download.content == child
    assert (folder_of(server, alice) / name).read_bytes() == child
    assert sessions["total"] == 1
    assert [r["session_file"] for r in sessions["rows"]] == [
        "0b7c5a52-1f2e-4d3c-9a8b-7c6d5e4f3a2b.jsonl"
    ]
    rows = server.store.read_sync(file_rows, alice.user.id)
    assert [(r[1], r[2], r[3]) for r in rows] == [
        (name, "0b7c5a52-1f2e-4d3c-9a8b-7c6d5e4f3a2b.jsonl", True),
        (
            "0b7c5a52-1f2e-4d3c-9a8b-7c6d5e4f3a2b.jsonl",
            "0b7c5a52-1f2e-4d3c-9a8b-7c6d5e4f3a2b.jsonl",
            False,
        ),
    ]


def test_concurrent_uploads_are_each_stored_whole(server: Server, alice: Account) -> None:
    """Twenty different files and two uploads of one name, all at once: every file is
    complete, the doubly uploaded one is exactly one of its two versions."""
    uploads = [(f"c{n:02d}.jsonl", transcript(100 + n, 1 * MiB + n * 37_000)) for n in range(20)]
    twin_a, twin_b = transcript(200, 2 * MiB + 3), transcript(201, 2 * MiB + 5)
    uploads += [("twin.jsonl", twin_a), ("twin.jsonl.gz", gzip.compress(twin_b, compresslevel=1))]
    start = threading.Barrier(len(uploads))

    def send(item: tuple[str, bytes]) -> tuple[int, dict[str, object]]:
        name, data = item
        with server.client(alice) as http:
            start.wait()
            response = post(http, name, data)
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=len(uploads)) as pool:
        results = list(pool.map(send, uploads))

    assert [status for status, _ in results] == [200] * 22
    assert [body["size"] for _, body in results[:20]] == [len(data) for _, data in uploads[:20]]
    assert [body["size"] for _, body in results[20:]] == [len(twin_a), len(twin_b)]
    folder = folder_of(server, alice)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"c{n:02d}.jsonl" for n in range(20)] + ["twin.jsonl"]
    )
    for name, data in uploads[:20]:
        stored = (folder / name).read_bytes()
        assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest(), name
    assert (folder / "twin.jsonl").read_bytes() in (twin_a, twin_b)

    rows = server.store.read_sync(file_rows, alice.user.id)
    assert len(rows) == 21
    twin_row = next(r for r in rows if r[1] == "twin.jsonl")
    # the row holds the size of whichever upload recorded itself last, which need not be
    # the one renamed into place last; ingest corrects it when it reads the file
    assert twin_row[4] in (len(twin_a), len(twin_b))
    with server.client(alice) as http:
        sync = http.get("/api/me/stats/sync", params={"limit": 200}).json()
        sessions = http.get("/api/me/stats/sessions", params={"limit": 200}).json()
    assert sorted(r["resource"] for r in sync["rows"]) == sorted(
        [f"c{n:02d}.jsonl" for n in range(20)] + ["twin.jsonl", "twin.jsonl"]
    )
    assert sessions["total"] == 21
