"""Faults: the service killed mid-stream loses nothing and counts nothing twice."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.test_cli import cli, start_server
from tests.test_live import transcript


def stats(url: str, token: str) -> tuple[int, int, int]:
    """(sessions, total tokens, query events) as the API reports them."""
    headers = {"Authorization": f"Bearer {token}"}
    sessions = httpx.get(f"{url}/api/me/stats/sessions?limit=200", headers=headers).json()
    tokens = httpx.get(f"{url}/api/me/stats/tokens", headers=headers).json()
    queries, cursor = 0, None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{url}/api/me/stats/queries", params=params, headers=headers).json()
        queries += len(page["rows"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    processed = sum(1 for r in sessions["rows"] if r["processed"])
    assert processed == sessions["total"], "every stored file is processed"
    return sessions["total"], tokens["totals"]["total"], queries


def test_kill_9_mid_stream_then_restart_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    user_id = cli("users", "add", "ana@example.com", data_dir=data_dir).stdout.split()[-1]
    token = cli("tokens", "create", "ana@example.com", data_dir=data_dir).stdout.split()[-1]
    proc, url = start_server(data_dir)
    spool = data_dir / "audit" / "other-service.jsonl"
    stored_uploads: list[str] = []
    appended: list[str] = []
    stop = threading.Event()

    def uploads() -> None:
        n = 0
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=5) as http:
            while not stop.is_set():
                name = f"s{n}.jsonl"
                try:
                    response = http.post(
                        f"{url}/api/upload/sessions", files={"file": (name, transcript(n))}
                    )
                    if response.status_code == 200:
                        stored_uploads.append(name)
                except httpx.HTTPError:
                    return  # the server is gone
                n += 1

    def appends() -> None:
        n = 0
        while not stop.is_set():
            event = {
                "id": f"evt-{n}",
                "timestamp": "2026-03-01T10:00:00Z",
                "user_id": user_id,
                "action": "query.run",
                "resource": f"t{n}",
            }
            with spool.open("a") as out:
                out.write(json.dumps(event) + "\n")
            appended.append(event["id"])
            n += 1
            time.sleep(0.002)

    workers = [threading.Thread(target=uploads), threading.Thread(target=appends)]
    for worker in workers:
        worker.start()
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    stop.set()
    for worker in workers:
        worker.join(timeout=10)
    assert stored_uploads and appended

    (data_dir / ".admin.json").unlink(missing_ok=True)  # a killed server leaves it behind
    proc, url = start_server(data_dir)
    try:
        on_disk = sorted(p.name for p in (data_dir / "user_sessions" / user_id).iterdir())
        files = [n for n in on_disk if not n.startswith(".")]  # a killed upload's temp file
        # may stay behind under its dot name; it is never ingested
        assert set(stored_uploads) <= set(files), "every upload answered 200 is kept"
        deadline = time.monotonic() + 30
        while True:
            try:
                after_restart = stats(url, token)
            except AssertionError:
                after_restart = None
            if (
                after_restart
                and after_restart[0] == len(files)
                and after_restart[2] == len(appended)
            ):
                break
            assert time.monotonic() < deadline, (after_restart, len(files), len(appended))
            time.sleep(0.2)
        assert after_restart == (len(files), 1000 * len(files), len(appended))
        rebuilt = cli("reprocess", data_dir=data_dir)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert stats(url, token) == after_restart, "a clean rebuild gives the same numbers"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
