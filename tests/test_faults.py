"""Faults the service survives, each test ending with "nothing lost": killed mid-stream,
a watcher that misses everything, a full disk, sockets that never read or vanish, clients
whose clocks are wrong. (A database locked by another process at start:
``tests/test_cli.py::test_a_second_server_on_the_same_data_dir_gets_a_clear_error``.)"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from service.synthetic.lines import assistant, jsonl
from tests.conftest import Account, Server
from tests.test_cli import cli, start_server
from tests.test_live import USAGE, transcript, upload


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


# -- helpers shared by the tests below ------------------------------------------------------


def account(data_dir: Path, email: str) -> tuple[str, str]:
    """A new user's (id, token), made with the CLI the way an operator does."""
    user_id = cli("users", "add", email, data_dir=data_dir).stdout.split()[-1]
    token = cli("tokens", "create", email, data_dir=data_dir).stdout.split()[-1]
    return user_id, token


@contextmanager
def serving(proc: subprocess.Popen[str]) -> Iterator[list[str]]:
    """Keep reading a started server's standard error (so a chatty server never blocks on
    a full pipe) into the list yielded; stop the server on the way out."""
    assert proc.stderr is not None
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stderr or ()), daemon=True)
    reader.start()
    try:
        yield log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        reader.join(timeout=5)


def settle(url: str, token: str, expected: tuple[int, int, int], seconds: float = 15) -> None:
    """Wait until :func:`stats` (every file processed) reports ``expected``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            now: tuple[int, int, int] | None = stats(url, token)
        except AssertionError:
            now = None  # a file is still pending
        if now == expected:
            return
        assert time.monotonic() < deadline, f"{now} != {expected}"
        time.sleep(0.1)


def query_event(user_id: str, n: int, **params: str) -> str:
    event = {
        "id": f"evt-{n}",
        "timestamp": "2026-03-01T10:00:00Z",
        "user_id": user_id,
        "action": "query.run",
        "resource": f"t{n}",
        "params": params,
    }
    return json.dumps(event) + "\n"


def append(path: Path, text: str) -> None:
    with path.open("a") as out:
        out.write(text)


def second_response(n: int) -> bytes:
    """Another API response in session ``s{n}``: what a grown transcript gains."""
    line = assistant(
        uuid=f"u{n}b",
        ts="2026-03-01T10:05:00Z",
        message_id=f"msg_{n}b",
        request_id=f"req_{n}b",
        usage=USAGE,
        session=f"s{n}",
    )
    return jsonl(line)


# -- the watcher misses everything -----------------------------------------------------------


def test_with_nothing_watching_the_scan_ingests_every_file_and_line_exactly_once(
    tmp_path: Path,
) -> None:
    """Watching off (what a kernel queue overflow or a network file system amounts to):
    the start-up scan and the periodic scan alone find copied files, a grown transcript,
    appended lines and a torn line completed later, and rescans count nothing twice."""
    data_dir = tmp_path / "data"
    user_id, token = account(data_dir, "ana@example.com")
    folder = data_dir / "user_sessions" / user_id
    folder.mkdir(parents=True)
    spool = data_dir / "audit" / "other-service.jsonl"
    for n in range(3):  # there before the server starts
        (folder / f"s{n}.jsonl").write_bytes(transcript(n))
    append(spool, "".join(query_event(user_id, n) for n in range(10)))
    elsewhere = tmp_path / "copies"
    elsewhere.mkdir()

    proc, url = start_server(data_dir, "--no-watch", "--scan-interval", "0.3")
    with serving(proc) as log:
        settle(url, token, (3, 3000, 10))

        for n in range(3, 8):  # copied in while the server runs, unwatched
            (elsewhere / f"s{n}.jsonl").write_bytes(transcript(n))
            shutil.copyfile(elsewhere / f"s{n}.jsonl", folder / f"s{n}.jsonl")
        append(folder / "s0.jsonl", second_response(0).decode())  # a transcript grows
        append(spool, "".join(query_event(user_id, n) for n in range(10, 30)))
        torn = query_event(user_id, 30)
        append(spool, torn[:25])  # a writer caught mid-line
        settle(url, token, (8, 9000, 30))

        append(spool, torn[25:] + query_event(user_id, 5))  # completed; and event 5 again
        settle(url, token, (8, 9000, 31))
        time.sleep(1)  # three more scans: reading again stores nothing twice
        assert stats(url, token) == (8, 9000, 31), "nothing lost, nothing counted twice"
    assert "Traceback" not in "".join(log)


# -- a full disk -----------------------------------------------------------------------------


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


class SmallDisk:
    """A tmpfs of ``size`` over ``folder``: mounted here when the test may mount (root, as in
    CI), else in a private mount namespace that the server starts in (``unshare``)."""

    def __init__(self, folder: Path, size: str) -> None:
        self.folder = folder.resolve()
        self.size = size
        self.private = False
        self.server: subprocess.Popen[str] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        mounted = run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.folder))
        if mounted.returncode == 0:
            return
        probe = run("unshare", "--mount", "--map-root-user", "true")
        if probe.returncode != 0:
            pytest.fail(
                "this test needs a small file system and cannot make one: "
                f"`mount -t tmpfs` failed ({mounted.stderr.strip()}) and so did "
                f"`unshare --mount --map-root-user` ({probe.stderr.strip()}); "
                "run the tests as root or where user namespaces are allowed"
            )
        self.private = True

    def start_server(self, data_dir: Path) -> tuple[subprocess.Popen[str], str]:
        if not self.private:
            self.server, url = start_server(data_dir)
            return self.server, url
        # The server mounts the tmpfs in a namespace of its own, then becomes the server.
        script = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'
        unshare = ["unshare", "--mount", "--map-root-user", "--propagation", "private"]
        mount = ["sh", "-c", script, "sh", self.size, str(self.folder)]
        serve = [sys.executable, "-m", "service", "serve", "--port", "0", "--data-dir"]
        self.server = subprocess.Popen(
            [*unshare, *mount, *serve, str(data_dir)],
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.server.stderr is not None
        line = self.server.stderr.readline()
        found = line.split("serving ", 1)[-1].split("/me/activity")[0]
        assert found.startswith("http://"), f"no URL announced: {line!r}"
        return self.server, found

    @property
    def view(self) -> Path:
        """The mounted folder as this process sees it."""
        if not self.private:
            return self.folder
        assert self.server is not None
        return Path(f"/proc/{self.server.pid}/root{self.folder}")

    def remount(self, mode: str) -> None:
        command = ["mount", "-o", f"remount,{mode}", str(self.folder)]
        if self.private:
            assert self.server is not None
            enter = ["nsenter", "--target", str(self.server.pid), "--mount", "--user"]
            command = [*enter, "--preserve-credentials", *command]
        done = run(*command)
        assert done.returncode == 0, done.stderr

    def fill(self) -> Path:
        """Write a ballast file until the disk is full; returns it."""
        ballast = self.view / ".ballast"
        with ballast.open("wb", buffering=0) as out:
            try:
                while True:
                    out.write(b"x" * 4096)
            except OSError as exc:
                assert exc.errno == 28, exc  # ENOSPC
        return ballast

    def unmount(self) -> None:
        if not self.private and run("umount", str(self.folder)).returncode != 0:
            run("umount", "--lazy", str(self.folder))


def left_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_full_disk_refuses_uploads_with_507_keeps_nothing_partial_and_serves_reads(
    tmp_path: Path,
) -> None:
    """``user_sessions/`` on a 1 MiB file system (the database stays on the main disk: it
    is not what this test is about, and DuckDB on a full disk is another story)."""
    data_dir = tmp_path / "data"
    user_id, token = account(data_dir, "ana@example.com")
    disk = SmallDisk(data_dir / "user_sessions", "1m")
    try:
        proc, url = disk.start_server(data_dir)
        with (
            serving(proc) as log,
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http,
        ):

            def put(name: str, data: bytes) -> httpx.Response:
                return http.post("/api/upload/sessions", files={"file": (name, data)})

            first = transcript(1)
            assert put("a.jsonl", first).status_code == 200
            settle(url, token, (1, 1000, 0))
            folder = disk.view / user_id
            too_big = transcript(2) * (2 * 1024 * 1024 // len(transcript(2)))  # > 1 MiB

            refused = put("big.jsonl", too_big)
            assert refused.status_code == 507, refused.text
            assert refused.json() == {
                "status_code": 507,
                "error": "insufficient_storage",
                "detail": "no space left to store the upload; nothing was kept",
            }
            assert left_in(folder) == ["a.jsonl"], "no partial file, no temp file"

            replaced = put("a.jsonl", too_big)
            assert replaced.status_code == 507
            assert left_in(folder) == ["a.jsonl"]
            assert (folder / "a.jsonl").read_bytes() == first, "the earlier version is intact"
            assert http.get("/api/me/sessions/a.jsonl").content == first

            ballast = disk.fill()  # now even a small upload cannot be written
            small = put("b.jsonl", transcript(3))
            assert small.status_code == 507, small.text
            assert left_in(folder) == ["a.jsonl"]
            # gzip members of one line each: many small writes, so the refused bytes sit
            # in the file's buffer when the disk says no, and again when it is discarded
            members = b"".join(gzip.compress(transcript(n)) for n in range(100))
            assert put("c.jsonl.gz", members).status_code == 507
            assert left_in(folder) == ["a.jsonl"]
            reads = http.get("/api/me/stats/sessions")
            assert reads.status_code == 200, "reads go on while the disk is full"
            assert [r["session_file"] for r in reads.json()["rows"]] == ["a.jsonl"]

            disk.remount("ro")  # a file system gone read-only after errors
            try:
                broken = put("b.jsonl", transcript(3))
            finally:
                disk.remount("rw")
            assert broken.status_code == 500, broken.text
            assert broken.json() == {
                "status_code": 500,
                "error": "storage_error",
                "detail": "cannot store the upload: Read-only file system; nothing was kept",
            }

            ballast.unlink()  # space freed: uploads work again
            assert put("b.jsonl", transcript(3)).status_code == 200
            assert put("a.jsonl", first + second_response(1)).status_code == 200
            settle(url, token, (2, 3000, 0))
            assert left_in(folder) == ["a.jsonl", "b.jsonl"]
            assert (folder / "a.jsonl").read_bytes() == first + second_response(1)
            sync = http.get("/api/me/stats/sync").json()["rows"]
            uploads = sorted(r["resource"] for r in sync if r["action"] == "session.upload")
            assert uploads == ["a.jsonl", "a.jsonl", "b.jsonl"], "refusals record no upload"
        assert "Traceback" not in "".join(log)
        assert "cannot store the upload: No space left on device" in "".join(log)
    finally:
        disk.unmount()


def test_a_full_disk_refuses_audit_events_with_507_and_leaves_no_torn_line(
    tmp_path: Path,
) -> None:
    """``audit/`` on a 64 KiB file system: a batch of events that does not fit is refused
    whole (a torn line in the spool would swallow the next append's first event)."""
    data_dir = tmp_path / "data"
    user_id, token = account(data_dir, "ana@example.com")
    cli("users", "add", "ingest@example.com", "--admin", data_dir=data_dir)
    service = cli("tokens", "create", "ingest@example.com", data_dir=data_dir).stdout.split()[-1]
    disk = SmallDisk(data_dir / "audit", "64k")
    try:
        proc, url = disk.start_server(data_dir)
        with serving(proc) as log, httpx.Client(base_url=url) as http:

            def post(events: list[str]) -> httpx.Response:
                body = "[" + ",".join(events) + "]"
                return http.post(
                    "/api/audit/events",
                    content=body,
                    headers={
                        "Authorization": f"Bearer {service}",
                        "Content-Type": "application/json",
                    },
                )

            assert post([query_event(user_id, n) for n in range(3)]).status_code == 200
            [spool] = [p for p in disk.view.iterdir() if p.suffix == ".jsonl"]
            before = spool.read_bytes()
            padding = "x" * 2000
            too_many = [query_event(user_id, n, sql=padding) for n in range(3, 60)]  # > 64 KiB
            refused = post(too_many)
            assert refused.status_code == 507, refused.text
            assert refused.json()["error"] == "insufficient_storage"
            assert spool.read_bytes() == before, "nothing of the refused batch stays"
            assert http.get("/api/health").status_code == 200

            assert post([query_event(user_id, n) for n in range(3, 6)]).status_code == 200
            settle(url, token, (0, 0, 6))
            assert spool.read_bytes().count(b"\n") == 6, "every line whole"
        assert "Traceback" not in "".join(log)
    finally:
        disk.unmount()


# -- sockets that never read, and thousands that come and go ----------------------------------


def live_gauge(url: str) -> float:
    """``agnes_live_connections`` from ``/metrics``: the sockets the hub holds."""
    page = httpx.get(f"{url}/metrics").text
    return metric(page, "agnes_live_connections")


def metric(page: str, name: str) -> float:
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_for_gauge(url: str, expected: float, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while (now := live_gauge(url)) != expected:
        assert time.monotonic() < deadline, f"the hub holds {now} sockets, not {expected}"
        time.sleep(0.05)


def raw_socket(url: str, token: str, *, receive_buffer: int | None = None) -> socket.socket:
    """A TCP connection that has asked for the live socket; nothing is read from it."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /api/me/live HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    return sock


def reset(sock: socket.socket) -> None:
    """Close abruptly: a RST, no close handshake (a laptop lid, a dropped network)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def come_and_go(url: str, token: str, n: int) -> None:
    """One client that connects and leaves: one in 16 closes cleanly after its snapshot,
    one in 16 drops (a RST) after the start of its snapshot, and the rest drop right after
    asking, before any answer (a snapshot costs the server milliseconds of CPU; a dropped
    request next to nothing)."""
    if n % 16 == 0:
        ws_url = "ws" + url.removeprefix("http") + "/api/me/live"
        headers = {"Authorization": f"Bearer {token}"}
        with connect(ws_url, additional_headers=headers, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
        return
    sock = raw_socket(url, token)
    if n % 16 == 1:
        sock.settimeout(10)
        seen = b""
        while b"\r\n\r\n" not in seen or not seen.split(b"\r\n\r\n", 1)[1]:
            chunk = sock.recv(65536)
            assert chunk, "the server closed a socket it had accepted"
            seen += chunk
        assert seen.startswith(b"HTTP/1.1 101"), seen[:100]
    reset(sock)


def until_processed(ws: ClientConnection, name: str, seconds: float = 5) -> None:
    """Read updates until one shows ``name`` processed."""
    deadline = time.monotonic() + seconds
    while True:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        rows = message["tabs"].get("sessions", {}).get("rows", [])
        if any(r["session_file"] == name and r["processed"] for r in rows):
            return


def until_queries(ws: ClientConnection, count: int, seconds: float = 5) -> None:
    """Read updates until one shows ``count`` query events (up to a page of 50)."""
    deadline = time.monotonic() + seconds
    while True:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if len(message["tabs"].get("queries", {}).get("rows", [])) == min(count, 50):
            return


def test_thousands_of_sockets_coming_and_going_and_50_that_never_read_hold_up_nobody(
    tmp_path: Path,
) -> None:
    """2,000 sockets open and leave (cleanly, or dropped mid-snapshot or mid-request): the
    hub keeps none of them, reads stay fast, and a new socket gets its snapshot and an
    upload's update within a second. Then 50 sockets of the same user never read while
    updates of up to 800 KB fill their buffers and queues: another socket still sees each
    upload processed within a second (ingest included), and dropping them frees them all."""
    data_dir = tmp_path / "data"
    user_id, token = account(data_dir, "ana@example.com")
    proc, url = start_server(data_dir)
    headers = {"Authorization": f"Bearer {token}"}
    ws_url = "ws" + url.removeprefix("http") + "/api/me/live"
    uploaded = 0

    def upload_and_time(reader: ClientConnection) -> float:
        """Seconds from an upload to the reader's update showing it processed."""
        nonlocal uploaded
        name = f"s{uploaded}.jsonl"
        began = time.monotonic()
        sent = http.post("/api/upload/sessions", files={"file": (name, transcript(uploaded))})
        assert sent.status_code == 200, sent.text
        until_processed(reader, name)
        uploaded += 1
        return time.monotonic() - began

    def slowest_of_10_reads() -> float:
        slowest = 0.0
        for _ in range(10):
            began = time.monotonic()
            assert http.get("/api/me/stats/sessions").status_code == 200
            slowest = max(slowest, time.monotonic() - began)
        return slowest

    with serving(proc) as log, httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: come_and_go(url, token, n), range(2000)))
        wait_for_gauge(url, 0)  # every socket that came and went has left the hub
        assert (read := slowest_of_10_reads()) < 0.5, f"a read after the churn took {read} s"
        with connect(ws_url, additional_headers=headers, open_timeout=5) as fresh:
            began = time.monotonic()
            assert json.loads(fresh.recv(timeout=1))["type"] == "snapshot"
            assert time.monotonic() - began < 1
            assert (latency := upload_and_time(fresh)) < 1, f"upload → update: {latency} s"
        wait_for_gauge(url, 0)

        # 50 sockets of the same user that never read a byte, with small receive buffers
        stuck = [raw_socket(url, token, receive_buffer=4096) for _ in range(50)]
        wait_for_gauge(url, 50)
        page = httpx.get(f"{url}/metrics").text
        overflows_before = metric(page, "agnes_live_queue_overflows_total")
        spool = data_dir / "audit" / "query-service.jsonl"
        with connect(ws_url, additional_headers=headers, open_timeout=5, max_size=None) as reader:
            assert json.loads(reader.recv(timeout=5))["type"] == "snapshot"
            # Queries with 16 KB of SQL each, one update apiece: pages of up to 50 of them
            # fill the kernel's buffers (megabytes) of the stuck sockets, then their queues.
            for n in range(45):
                append(spool, query_event(user_id, n, sql="select 1 -- " + "x" * 16_000))
                until_queries(reader, n + 1)
            page = httpx.get(f"{url}/metrics").text
            overflows = metric(page, "agnes_live_queue_overflows_total") - overflows_before
            assert overflows == 50, "each stuck socket's queue overflowed, the reader's never"
            latencies = [upload_and_time(reader) for _ in range(20)]
            assert max(latencies) < 1, f"upload → update, slowest: {sorted(latencies)[-5:]}"
            assert (read := slowest_of_10_reads()) < 0.5, f"a read took {read} s"
            for sock in stuck:
                reset(sock)
            wait_for_gauge(url, 1)
        wait_for_gauge(url, 0)
        assert stats(url, token) == (uploaded, 1000 * uploaded, 45), "nothing lost"
    assert "Traceback" not in "".join(log), "".join(log)[-3000:]


# -- clients whose clocks are wrong -----------------------------------------------------------


def settle_in_process(
    http: httpx.Client, sessions: int, tokens: int, queries: int, seconds: float = 10
) -> None:
    """Wait until every file is processed and the API reports these numbers."""
    deadline = time.monotonic() + seconds
    while True:
        rows = http.get("/api/me/stats/sessions", params={"limit": 200}).json()["rows"]
        now = (
            sum(r["processed"] for r in rows),
            http.get("/api/me/stats/tokens").json()["totals"]["total"],
            len(walk(http, "/api/me/stats/queries", 200)),
        )
        if now == (sessions, tokens, queries) and len(rows) == sessions:
            return
        assert time.monotonic() < deadline, f"{now} != {(sessions, tokens, queries)}"
        time.sleep(0.1)


def priced_line(uuid: str, ts: str, session: str) -> dict[str, Any]:
    """One API response of 1,000 tokens at ``ts``."""
    return assistant(
        uuid=uuid,
        ts=ts,
        message_id=f"msg_{uuid}",
        request_id=f"req_{uuid}",
        usage=USAGE,
        session=session,
    )


def walk(http: httpx.Client, path: str, limit: int) -> list[dict[str, Any]]:
    """Every row of a keyset-paginated list, ``limit`` at a time."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = http.get(path, params=params)
        assert page.status_code == 200, page.text
        rows += page.json()["rows"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            return rows


def test_timestamps_from_wrong_clocks_are_kept_ordered_and_paginated(
    server: Server, alice: Account
) -> None:
    """Transcripts and audit events from 2099, 1971, before 1970, the first and last
    moments of the calendar, without a zone, and garbage: each is stored (or, for an event
    whose time is no time, counted as a bad line); lists keep their order across pages;
    the tokens window shows only its own days but the totals count everything."""
    moment = datetime.now(UTC) - timedelta(minutes=5)
    now = moment.isoformat().replace("+00:00", "Z")
    transcripts = {  # name: the timestamps of its lines, 1,000 tokens each
        "future.jsonl": ["2099-06-01T12:00:00Z"],
        "now.jsonl": [now],
        "zoneless.jsonl": ["2020-03-01T10:00:00"],
        "past.jsonl": ["1971-01-01T00:00:00+02:00"],
        "pre-epoch.jsonl": ["1969-07-20T20:17:40Z"],
        "calendar-ends.jsonl": ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"],
    }
    admin = server.account("ops@example.com", is_admin=True)
    with server.client(alice) as http, server.client(admin) as ops:
        for name, stamps in transcripts.items():
            lines = [priced_line(f"{name}-{n}", ts, name) for n, ts in enumerate(stamps)]
            upload(http, name, jsonl(*lines))
        # a line whose time is garbage is no usage entry (TRANSCRIPTS.md rule 1)
        garbage = jsonl(
            priced_line("g-0", "last tuesday", "garbage"),
            priced_line("g-1", "2023-05-05T00:00:00+02:00", "garbage"),
        )
        upload(http, "garbage.jsonl", garbage)

        good_events = {
            "q-9999": "9999-12-31T23:59:59.999999Z",
            "q-2099": "2099-06-01T12:00:00+14:00",
            "q-zoneless": "2020-03-01T10:00:00",
            "q-1971": "1971-01-01T00:00:00Z",
            "q-1969": "1969-07-20T20:17:40Z",
            "q-0001": "0001-01-01T00:00:00Z",
        }
        bad_events = {
            "q-garbage": "not a time",
            "q-before-year-1": "0001-01-01T00:00:00+01:00",  # 31 Dec of year 0 in UTC
            "q-after-9999": "9999-12-31T23:59:59-01:00",
            "q-number": 1700000000,
        }
        spool = server.settings.audit_dir / "wrong-clocks.jsonl"
        lines = [
            json.dumps(
                {"id": id_, "timestamp": ts, "user_id": alice.user.id, "action": "query.run"}
            )
            for id_, ts in {**good_events, **bad_events}.items()
        ]
        append(spool, "".join(line + "\n" for line in lines))
        synced = {"sync-2099": "2099-01-01T00:00:00Z", "sync-1971": "1971-01-01T00:00:00Z"}
        synced["sync-0001"] = "0001-01-01T00:00:00Z"
        posted = ops.post(
            "/api/audit/events",
            json=[
                {"id": id_, "timestamp": ts, "user_id": alice.user.id, "action": "sync.trigger"}
                for id_, ts in synced.items()
            ],
        )
        assert posted.status_code == 200, posted.text

        names = [*transcripts, "garbage.jsonl"]
        settle_in_process(http, len(names), 8000, len(good_events))

        # sessions: newest first by their first line, the same on every page size
        newest_first = [
            "future.jsonl",
            "now.jsonl",
            "garbage.jsonl",
            "zoneless.jsonl",
            "past.jsonl",
            "pre-epoch.jsonl",
            "calendar-ends.jsonl",
        ]
        for limit in (2, 3, 200):
            pages = [
                http.get("/api/me/stats/sessions", params={"limit": limit, "offset": o}).json()
                for o in range(0, len(names), limit)
            ]
            assert [r["session_file"] for p in pages for r in p["rows"]] == newest_first
        rows = {r["session_file"]: r for r in pages[0]["rows"]}
        assert rows["zoneless.jsonl"]["started_at"] == "2020-03-01T10:00:00+00:00"
        assert rows["past.jsonl"]["started_at"] == "1970-12-31T22:00:00+00:00"
        assert rows["calendar-ends.jsonl"]["started_at"] == "0001-01-01T00:00:00+00:00"
        assert rows["calendar-ends.jsonl"]["ended_at"] == "9999-12-31T23:59:59.999999+00:00"
        assert rows["garbage.jsonl"]["tokens_total"] == 1000
        assert all(r["pipeline_status"] == "processed" for r in rows.values())

        # queries and sync: newest first by (timestamp, id), keyset pages across the extremes
        expected_queries = ["q-9999", "q-2099", "q-zoneless", "q-1971", "q-1969", "q-0001"]
        for limit in (1, 2, 4, 200):
            seen = walk(http, "/api/me/stats/queries", limit)
            assert [r["id"] for r in seen] == expected_queries
        stamps = {r["id"]: r["timestamp"] for r in seen}
        assert stamps["q-2099"] == "2099-05-31T22:00:00+00:00"
        assert stamps["q-zoneless"] == "2020-03-01T10:00:00+00:00"
        assert stamps["q-0001"] == "0001-01-01T00:00:00+00:00"
        for limit in (1, 2, 200):
            sync = [r["id"] for r in walk(http, "/api/me/stats/sync", limit)]
            assert sync[0] == "sync-2099"
            assert sync[-2:] == ["sync-1971", "sync-0001"]
            assert len(sync) == 3 + len(names), "and one session.upload per upload"

        # tokens: the daily window covers only its days, in any zone; totals cover all
        for tz in ("UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"):
            for days in (1, 7, 365):
                answer = http.get("/api/me/stats/tokens", params={"days": days, "tz": tz})
                assert answer.status_code == 200, answer.text
                body = answer.json()
                daily = body["daily"]
                assert len(daily) == days
                last = datetime.now(ZoneInfo(tz)).date()
                assert [d["day"] for d in daily] == [
                    (last - timedelta(days=days - 1 - n)).isoformat() for n in range(days)
                ]
                local_day = moment.astimezone(ZoneInfo(tz)).date().isoformat()
                shown = 1000 if local_day >= daily[0]["day"] else 0  # now.jsonl's, no other
                assert sum(d["total"] for d in daily) == shown, (tz, days, daily)
                assert body["totals"]["total"] == 8000
                assert sum(m["total"] for m in body["by_model"]) == 8000
        top = {s["session_file"]: s["total"] for s in body["top_sessions"]}
        assert top == {name: 1000 * len(stamps) for name, stamps in transcripts.items()} | {
            "garbage.jsonl": 1000
        }

    with connect(server.ws_url + "?tz=Pacific/Kiritimati", additional_headers=alice.headers) as ws:
        snapshot = json.loads(ws.recv(timeout=5))
    assert snapshot["type"] == "snapshot"
    assert snapshot["tabs"]["tokens"]["totals"]["total"] == 8000

    bad = server.store.read_sync(
        lambda cur: cur.execute(
            "SELECT bad_lines FROM spool_files WHERE path = 'wrong-clocks.jsonl'"
        ).fetchone()
    )
    assert bad == (len(bad_events),), "events whose time is no time are counted as bad lines"


@pytest.mark.settings(watch=False, scan_interval=0.3)
def test_a_transcript_time_outside_years_1_to_9999_in_utc_holds_up_no_other_file(
    server: Server, alice: Account
) -> None:
    """``0001-01-01T00:00:00+01:00`` parses, but is the last hour of year 0 in UTC, which no
    datetime holds (and ``9999-12-31T23:59:59-01:00`` is in year 10000): such a line is no
    usage entry (its time does not parse, rule 1), and the file with it, and every file read
    in the same batch, is stored all the same."""
    folder = server.settings.sessions_dir / alice.user.id
    folder.mkdir(parents=True)
    (folder / "year-0.jsonl").write_bytes(
        jsonl(
            priced_line("y-0", "0001-01-01T00:00:00+01:00", "year-0"),
            priced_line("y-10000", "9999-12-31T23:59:59-01:00", "year-0"),
            priced_line("y-2026", "2026-03-01T10:00:00Z", "year-0"),
        )
    )
    (folder / "good.jsonl").write_bytes(transcript(1))  # the same scan, the same batch
    with server.client(alice) as http:
        settle_in_process(http, 2, 2000, 0, seconds=2)
