"""Stopping and starting again: nothing lost, versions keep growing, clients catch up."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.test_cli import cli, start_server
from tests.test_live import transcript


def test_after_a_restart_versions_go_on_upward_and_a_reconnecting_client_gets_a_snapshot(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    cli("users", "add", "ana@example.com", data_dir=data_dir)
    token = cli("tokens", "create", "ana@example.com", data_dir=data_dir).stdout.split()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    versions = []
    for n in range(2):
        proc, url = start_server(data_dir)
        try:
            ws_url = "ws" + url.removeprefix("http") + "/api/me/live"
            with connect(ws_url, additional_headers=headers) as ws:
                snapshot = json.loads(ws.recv(timeout=5))
                assert snapshot["type"] == "snapshot"
                versions.append(snapshot["version"])
                response = httpx.post(
                    f"{url}/api/upload/sessions",
                    headers=headers,
                    files={"file": (f"s{n}.jsonl", transcript(n))},
                )
                assert response.status_code == 200
                while True:
                    update = json.loads(ws.recv(timeout=5))
                    rows = update["tabs"].get("sessions", {}).get("rows", [])
                    if any(r["session_file"] == f"s{n}.jsonl" and r["processed"] for r in rows):
                        versions.append(update["version"])
                        break
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
    before_stop, after_start = versions[1], versions[2]
    assert versions[0] < before_stop, versions
    assert after_start == before_stop, "the second server starts where the first stopped"
    assert versions[3] > after_start, versions


def test_shutdown_with_open_sockets_and_a_busy_watcher_is_quick_and_checkpointed(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    added = cli("users", "add", "ana@example.com", data_dir=data_dir)
    user_id = added.stdout.split()[-1]
    token = cli("tokens", "create", "ana@example.com", data_dir=data_dir).stdout.split()[-1]
    proc, url = start_server(data_dir)
    ws_url = "ws" + url.removeprefix("http") + "/api/me/live"
    sockets = ExitStack()
    for _ in range(20):
        headers = {"Authorization": f"Bearer {token}"}
        sockets.enter_context(connect(ws_url, additional_headers=headers, close_timeout=0.5))
    folder = data_dir / "user_sessions" / user_id
    folder.mkdir(parents=True, exist_ok=True)
    copying = threading.Event()
    copying.set()

    def keep_copying() -> None:
        n = 0
        while copying.is_set():
            temp = folder / f".c{n}.tmp"
            temp.write_bytes(transcript(n) * 50)
            os.replace(temp, folder / f"c{n}.jsonl")
            n += 1
            time.sleep(0.002)

    copier = threading.Thread(target=keep_copying)
    copier.start()
    try:
        time.sleep(1.0)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        took = time.monotonic() - started
    finally:
        copying.clear()
        copier.join()
        sockets.close()
    assert took < 2, f"shutdown took {took:.2f} s"
    assert not (data_dir / "activity.duckdb.wal").exists(), "the database was checkpointed"
    assert not (data_dir / ".admin.json").exists()
