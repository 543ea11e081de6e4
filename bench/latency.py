"""Push latency: from an upload's 200 (or a plain file copy) to the update on the socket.

Starts `agnes-activity serve` in its own process on a fresh data dir, connects IDLE other
users' sockets, then for each of N uploads measures the time from the upload's 200 response
to the uploader's socket receiving (a) the first update and (b) the update that shows the
session processed with its tokens. Then the same for a plain file copy (write a temp file,
rename it into user_sessions/<id>/), which only the watcher sees.

    python bench/latency.py [--uploads 200] [--idle 200] [--copies 50] [--runs 3]

Targets (issue 4): upload → socket p50 ≤ 50 ms, p99 ≤ 150 ms; copy → socket p50 ≤ 100 ms.
The baseline is the replaced service's 10-minute rescan (600,000 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from service import admin
from service.settings import Settings, prepare_data_dir
from service.store import Store

BASELINE_MS = 600_000.0
ROOT = Path(__file__).resolve().parents[1]


def transcript(n: int) -> bytes:
    """One response, stamped now: the sessions tab lists newest first, 50 to a page."""
    now = datetime.now(UTC).isoformat()
    line = {
        "type": "assistant",
        "sessionId": f"bench-{n}",
        "version": "2.1.12",
        "cwd": "/w",
        "uuid": f"u-{n}",
        "timestamp": now,
        "requestId": f"req_{n}",
        "isSidechain": False,
        "message": {
            "id": f"msg_{n}",
            "model": "claude-opus-4-6",
            "role": "assistant",
            "content": [{"type": "text", "text": "hi"}],
            "usage": {
                "input_tokens": 10,
                "output_tokens": 20,
                "cache_creation_input_tokens": 30,
                "cache_read_input_tokens": 40,
            },
        },
    }
    return (json.dumps(line) + "\n").encode()


def setup(data_dir: Path, idle_users: int) -> tuple[str, str, list[str]]:
    """Users and tokens made on the data dir before the server takes it."""
    settings = Settings(data_dir=data_dir)
    prepare_data_dir(settings)
    store = Store(settings.db_path)
    try:
        user = store.write_sync(admin.add_user, "bench@example.com", False)
        token = store.write_sync(admin.create_token, "bench@example.com").token
        idle = []
        for n in range(idle_users):
            store.write_sync(admin.add_user, f"idle{n}@example.com", False)
            idle.append(store.write_sync(admin.create_token, f"idle{n}@example.com").token)
    finally:
        store.close()
    return user.id, token, idle


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def wait_for(ws: websockets.ClientConnection, name: str, first: list[float]) -> float:
    """Seconds until an update shows ``name`` processed; records the first update's time."""
    while True:
        message = json.loads(await ws.recv())
        if message["type"] not in ("update", "snapshot"):
            continue
        now = time.perf_counter()
        if not first:
            first.append(now)
        rows = message["tabs"].get("sessions", {}).get("rows", [])
        if any(r["session_file"] == name and r["processed"] for r in rows):
            return now


async def one_run(args: argparse.Namespace) -> dict[str, list[float]]:
    data_dir = Path(tempfile.mkdtemp(prefix="agnes-latency-"))
    user_id, token, idle_tokens = setup(data_dir, idle_users=min(args.idle, 50))
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", "0", "--data-dir", str(data_dir)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert server.stderr is not None
    url = re.search(r"(http://\S+)/me/activity", server.stderr.readline())
    assert url, "server did not announce its URL"
    base = url.group(1)
    ws_url = "ws" + base.removeprefix("http") + "/api/me/live"
    results: dict[str, list[float]] = {"first": [], "processed": [], "copy": []}
    idle = []
    try:
        for n in range(args.idle):
            headers = {"Authorization": f"Bearer {idle_tokens[n % len(idle_tokens)]}"}
            idle.append(
                await websockets.connect(ws_url, additional_headers=headers, max_queue=None)
            )
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            websockets.connect(ws_url, additional_headers=headers, max_queue=None) as ws,
            httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http,
        ):
            await ws.recv()  # snapshot
            for n in range(args.uploads):
                name = f"up-{n}.jsonl"
                first: list[float] = []
                waiter = asyncio.ensure_future(wait_for(ws, name, first))
                response = await http.post(
                    "/api/upload/sessions", files={"file": (name, transcript(n))}
                )
                answered = time.perf_counter()
                assert response.status_code == 200, response.text
                done = await asyncio.wait_for(waiter, 10)
                results["processed"].append((done - answered) * 1000)
                results["first"].append(max(0.0, first[0] - answered) * 1000)
            folder = data_dir / "user_sessions" / user_id
            for n in range(args.copies):
                name = f"copy-{n}.jsonl"
                waiter = asyncio.ensure_future(wait_for(ws, name, []))
                temp = folder / f".copy-{n}.tmp"
                temp.write_bytes(transcript(100_000 + n))
                started = time.perf_counter()
                os.replace(temp, folder / name)
                done = await asyncio.wait_for(waiter, 30)
                results["copy"].append((done - started) * 1000)
    finally:
        for ws in idle:
            await ws.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    per_run = []
    for run in range(args.runs):
        results = asyncio.run(one_run(args))
        row = {key: (statistics.median(v), percentile(v, 99)) for key, v in results.items() if v}
        per_run.append(row)
        print(
            f"run {run + 1}: "
            + ", ".join(f"{k} p50 {p50:.1f} ms p99 {p99:.1f} ms" for k, (p50, p99) in row.items())
        )
    print(f"\nmedian of {args.runs} runs, {args.uploads} uploads, {args.idle} idle sockets:")
    for key, label, target in (
        ("first", "upload 200 → first update", None),
        ("processed", "upload 200 → processed update", (50, 150)),
        ("copy", "file copy → processed update", (100, None)),
    ):
        if key not in per_run[0]:
            continue
        p50 = statistics.median(r[key][0] for r in per_run)
        p99 = statistics.median(r[key][1] for r in per_run)
        goal = (
            f"  (target p50 ≤ {target[0]} ms"
            + (f", p99 ≤ {target[1]} ms)" if target and target[1] else ")")
            if target
            else ""
        )
        ratio = BASELINE_MS / p50
        print(
            f"  {label}: p50 {p50:.1f} ms, p99 {p99:.1f} ms;"
            f" 10-min rescan / p50 = {ratio:,.0f}x{goal}"
        )


if __name__ == "__main__":
    main()
