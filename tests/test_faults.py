"""Faults the service survives, each test ending with "nothing lost": killed mid-stream,
a watcher that misses everything, a full disk, sockets that never read or vanish, clients
whose clocks are wrong. (A database locked by another process at start:
``tests/test_cli.py::test_a_second_server_on_the_same_data_dir_gets_a_clear_error``.)"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.corpus import assistant, jsonl
from tests.test_cli import cli, start_server
from tests.test_live import USAGE, transcript


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


def query_event(user_id: str, n: int, timestamp: str = "2026-03-01T10:00:00Z") -> str:
    event = {
        "id": f"evt-{n}",
        "timestamp": timestamp,
        "user_id": user_id,
        "action": "query.run",
        "resource": f"t{n}",
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

    proc, url = start_server(data_dir, "--no-watch", "--scan-interval", "0.5")
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
        time.sleep(1.2)  # two more scans: reading again stores nothing twice
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
