"""The reconciling scan holds up under load: a real server scanning every 0.3 s (with
DuckDB 2, whose refusal of ``register`` on a cursor with a half-read result once failed
about one scan in eight) while uploads, plain copies, spool lines and reads go on, logs no
failure, and ingests everything.

It runs ``AGNES_SCAN_SOAK_SECONDS`` seconds (30 by default; 60 for the figure in the
README)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

from service.models import AuditEvent
from service.spool_writer import append_events
from service.synthetic.lines import assistant, jsonl
from tests.test_limits import served

SECONDS = float(os.environ.get("AGNES_SCAN_SOAK_SECONDS", "30"))


def line(n: int, session: str) -> bytes:
    return jsonl(
        assistant(
            uuid=f"{session}-u{n}",
            ts=f"2026-03-01T10:{n // 60 % 60:02d}:{n % 60:02d}Z",
            message_id=f"msg_{session}_{n}",
            request_id=f"req_{session}_{n}",
            usage={"input_tokens": 10, "output_tokens": 20},
            session=session,
        )
    )


def admin(data_dir: Path, *args: str) -> str:
    """An admin command beside the running server; its last line."""
    env = {**os.environ, "AGNES_DATA_DIR": str(data_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "service", *args], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def repeat(
    stop: threading.Event, failures: list[str], every: float, step: Callable[[int], None]
) -> threading.Thread:
    """A thread doing ``step(0)``, ``step(1)``, ... every ``every`` seconds until ``stop``."""

    def run() -> None:
        n = 0
        while not stop.is_set():
            try:
                step(n)
            except Exception as exc:  # every failure is reported at the end
                failures.append(f"{step.__name__} #{n}: {exc!r}")
            n += 1
            stop.wait(every)

    return threading.Thread(target=run, daemon=True)


def session_rows(http: httpx.Client) -> dict[str, dict[str, object]]:
    rows: dict[str, dict[str, object]] = {}
    offset = 0
    while True:
        page = http.get("/api/me/stats/sessions", params={"limit": 200, "offset": offset}).json()
        rows.update((row["session_file"], row) for row in page["rows"])
        offset += len(page["rows"])
        if offset >= page["total"] or not page["rows"]:
            return rows


def stored_query_ids(http: httpx.Client) -> set[str]:
    ids: set[str] = set()
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = http.get("/api/me/stats/queries", params=params).json()
        ids.update(row["id"] for row in page["rows"])
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def test_a_scan_every_0_3_s_beside_uploads_copies_spool_lines_and_reads_logs_no_failure(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    # No watcher: the copies and spool lines reach the store only through the scan.
    with served(data_dir, "--scan-interval", "0.3", "--no-watch") as (_, url):
        admin(data_dir, "users", "add", "soak@example.com")
        user_id = admin(data_dir, "users", "list", "--json").split('"id":"')[1].split('"')[0]
        token = admin(data_dir, "tokens", "create", "soak@example.com")
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        folder = data_dir / "user_sessions" / user_id
        grown: dict[str, bytes] = {}
        copies: list[str] = []
        events = 0
        reads = 0

        def upload(n: int) -> None:
            name = f"up{n % 10}.jsonl"
            grown[name] = grown.get(name, b"") + line(n, name)
            answer = http.post("/api/upload/sessions", files={"file": (name, grown[name])})
            assert answer.status_code == 200, answer.text

        def copy(n: int) -> None:
            name = f"copy{n}.jsonl"
            temp = tmp_path / name
            temp.write_bytes(b"".join(line(i, name) for i in range(5)))
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(temp, folder / name)
            copies.append(name)

        def spool(n: int) -> None:
            nonlocal events
            event = AuditEvent(
                id=f"soak-{n}",
                timestamp=datetime.now(UTC),
                user_id=user_id,
                action="query.run",
                resource=f"table_{n}",
            )
            append_events(data_dir / "audit", [event], name="soak.jsonl")
            events += 1

        def read(n: int) -> None:
            nonlocal reads
            path = ("sessions", "tokens", "queries", "sync")[n % 4]
            # Pages other than the first are read from the database every time, not kept.
            params = {"days": 1 + n % 90} if path == "tokens" else {"limit": 1 + n % 49}
            answer = http.get(f"/api/me/stats/{path}", params=params)
            assert answer.status_code == 200, answer.text
            if n % 10 == 0:
                assert http.get("/api/sync/manifest").status_code == 200
            if n % 5 == 0:
                download = http.get("/api/me/sessions/first.jsonl")
                assert download.status_code == 200, download.text
            reads += 1

        assert http.post("/api/upload/sessions", files={"file": ("first.jsonl", line(0, "f"))})
        stop = threading.Event()
        failures: list[str] = []
        threads = [
            repeat(stop, failures, 0.05, upload),
            repeat(stop, failures, 0.2, copy),
            repeat(stop, failures, 0.1, spool),
            repeat(stop, failures, 0.0, read),
        ]
        for thread in threads:
            thread.start()
        time.sleep(SECONDS)
        stop.set()
        for thread in threads:
            thread.join()
        assert failures == []

        deadline = time.monotonic() + 30
        while True:
            rows = session_rows(http)
            stored = stored_query_ids(http)
            done = all(rows.get(name, {}).get("processed") for name in copies) and (
                stored >= {f"soak-{n}" for n in range(events)}
            )
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        http.close()
    assert [name for name in copies if not rows.get(name, {}).get("processed")] == []
    assert {f"soak-{n}" for n in range(events)} - stored == set()
    assert len(copies) >= SECONDS and events >= SECONDS * 2, "the copies and lines were made"
    assert reads >= SECONDS * 2, "the reads went on"
    log = (tmp_path / "data.log").read_text()
    noise = [
        entry
        for entry in log.splitlines()
        if not entry.startswith(("agnes-activity ", "data dir: "))
    ]
    assert noise == [], log
    print(
        f"{SECONDS:g} s of scans every 0.3 s: {len(copies)} copies, {events} spool lines,"
        f" {reads} reads, {len(grown)} files uploaded again and again; the log is clean"
    )
