"""No client, signed in or not, can take the server's memory: a real ``agnes-activity serve``
process, its resident memory read from ``/proc/<pid>/status`` while it is attacked."""

from __future__ import annotations

import gzip
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

MiB = 1024 * 1024


@contextmanager
def served(data_dir: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``agnes-activity serve`` on a free port; (process, base URL). Its standard error goes
    to ``<data dir>.log`` (a pipe nobody reads could fill and stop the server)."""
    log = data_dir.with_name(data_dir.name + ".log")
    command = [sys.executable, "-m", "service", "serve", "--port", "0", "--data-dir"]
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*command, str(data_dir), *extra],
            stderr=err,
            stdout=subprocess.DEVNULL,
            text=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"serving (http://\S+)/me/activity", log.read_text())):
            assert proc.poll() is None, f"the server stopped: {log.read_text()}"
            assert time.monotonic() < deadline, f"no URL announced: {log.read_text()}"
            time.sleep(0.05)
        yield proc, match.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` now (VmRSS), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) / 1024


class PeakRss:
    """Samples a process's resident memory every 10 ms until stopped; the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))


def request_with_header(url: str, header_bytes: int) -> str:
    """GET /api/health with one header of ``header_bytes``: the status line answered, or
    ``"closed"`` when the server closed the connection instead."""
    parts = urlsplit(url)
    head = (
        f"GET /api/health HTTP/1.1\r\nHost: {parts.netloc}\r\nX-Big: ".encode()
        + b"a" * header_bytes
        + b"\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        try:
            view = memoryview(head)
            while view:
                view = view[sock.send(view[: 256 * 1024]) :]
            answer = sock.recv(4096)
        except (BrokenPipeError, ConnectionResetError):
            return "closed"
    if not answer:
        return "closed"
    return answer.split(b"\r\n", 1)[0].decode()


def test_a_4_mib_header_is_refused_without_growing_the_servers_memory(tmp_path: Path) -> None:
    with served(tmp_path / "data") as (proc, url):
        assert httpx.get(f"{url}/api/health").status_code == 200
        assert request_with_header(url, 100) == "HTTP/1.1 200 OK"
        before = rss_mb(proc.pid)
        with PeakRss(proc.pid) as rss:
            answers = [request_with_header(url, 4 * MiB) for _ in range(6)]
            answers.append(request_with_header(url, 16 * MiB))
        assert set(answers) <= {"HTTP/1.1 431 Request Header Fields Too Large", "closed"}, answers
        assert rss.peak - before < 8, f"RSS grew {rss.peak - before:.1f} MB"
        assert httpx.get(f"{url}/api/health").status_code == 200, "the server still serves"


def test_headers_up_to_the_limit_are_served_and_the_limit_can_be_raised(
    tmp_path: Path,
) -> None:
    with served(tmp_path / "data") as (_, url):
        assert request_with_header(url, 60 * 1024) == "HTTP/1.1 200 OK"
        answer = request_with_header(url, 70 * 1024)
        assert answer in {"HTTP/1.1 431 Request Header Fields Too Large", "closed"}
    with served(tmp_path / "data2", "--max-header-bytes", str(MiB)) as (_, url):
        assert request_with_header(url, 900 * 1024) == "HTTP/1.1 200 OK"
        assert request_with_header(url, 2 * MiB) != "HTTP/1.1 200 OK"


def test_a_header_refused_in_time_gets_a_431_with_a_json_reason(tmp_path: Path) -> None:
    with served(tmp_path / "data") as (_, url):
        parts = urlsplit(url)
        head = b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (80 * 1024)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(head)  # fits the socket buffers: the answer is read, not reset
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert rest.endswith(
        b'{"status_code":431,"error":"headers_too_large",'
        b'"detail":"the request line and headers may be at most 65536 bytes"}'
    )


# -- gzip uploads inflate a piece at a time -------------------------------------------------

LINE = b'{"type":"summary","summary":"' + b"a" * (64 * 1024) + b'"}\n'


def gzipped_lines(inflated: int) -> bytes:
    """A transcript of ``inflated`` bytes (long lines, cheap to read), gzipped: about 1 KB
    of gzip for every MB."""
    lines = LINE * (inflated // len(LINE))
    return gzip.compress(lines + b"\n" * (inflated - len(lines)), compresslevel=9)


def sign_up(data_dir: Path) -> str:
    """A user and token made with the CLI beside the running server; the token."""
    run = [sys.executable, "-m", "service"]
    env = {**os.environ, "AGNES_DATA_DIR": str(data_dir)}
    made = [
        subprocess.run([*run, *args], capture_output=True, text=True, env=env)
        for args in (["users", "add", "gz@example.com"], ["tokens", "create", "gz@example.com"])
    ]
    assert all(m.returncode == 0 for m in made), [m.stderr for m in made]
    return made[-1].stdout.strip().splitlines()[-1]


def upload_all(url: str, token: str, bodies: dict[str, bytes]) -> dict[str, httpx.Response]:
    """Upload every body at once, each on its own connection."""
    answers: dict[str, httpx.Response] = {}
    start = threading.Barrier(len(bodies))

    def one(name: str, body: bytes) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            start.wait()
            answers[name] = http.post(
                "/api/upload/sessions",
                headers={"Authorization": f"Bearer {token}"},
                files={"file": (name, body, "application/gzip")},
            )

    threads = [threading.Thread(target=one, args=item) for item in bodies.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_six_concurrent_49_mib_gzip_uploads_raise_rss_by_less_than_120_mb(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    body = gzipped_lines(49 * MiB)
    assert len(body) < 200 * 1024
    with served(data_dir) as (proc, url):
        token = sign_up(data_dir)
        upload_all(url, token, {"warm-up.jsonl.gz": gzipped_lines(MiB)})
        before = rss_mb(proc.pid)
        with PeakRss(proc.pid) as rss:
            answers = upload_all(url, token, {f"s{n}.jsonl.gz": body for n in range(6)})
        assert {name: a.status_code for name, a in answers.items()} == {
            f"s{n}.jsonl.gz": 200 for n in range(6)
        }
        assert {a.json()["size"] for a in answers.values()} == {49 * MiB}
        grew = rss.peak - before
        print(f"six 49 MiB gzip uploads: RSS {before:.0f} -> peak {rss.peak:.0f} MB (+{grew:.0f})")
        assert grew < 120, f"RSS grew {grew:.0f} MB"


def test_six_concurrent_gzip_bombs_are_413_keep_nothing_and_take_no_memory(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    bomb = gzipped_lines(200 * MiB)
    with served(data_dir) as (proc, url):
        token = sign_up(data_dir)
        upload_all(url, token, {"warm-up.jsonl.gz": gzipped_lines(MiB)})
        before = rss_mb(proc.pid)
        with PeakRss(proc.pid) as rss:
            answers = upload_all(url, token, {f"b{n}.jsonl.gz": bomb for n in range(6)})
        assert {a.status_code for a in answers.values()} == {413}
        assert {a.json()["error"] for a in answers.values()} == {"too_large"}
        grew = rss.peak - before
        print(f"six gzip bombs: RSS {before:.0f} -> peak {rss.peak:.0f} MB (+{grew:.0f})")
        assert grew < 60, f"RSS grew {grew:.0f} MB"
    kept = sorted(p.name for p in (data_dir / "user_sessions").rglob("*") if p.is_file())
    assert kept == ["warm-up.jsonl"]
