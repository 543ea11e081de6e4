"""``agnes-activity push`` as an analyst runs it: a real process pushing a temporary
``~/.claude/projects`` tree to a real server, watched over a real websocket."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket as sockets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.push import EXIT_AUTH, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, retry_delay
from service.synthetic.lines import assistant, jsonl, tool_result, tool_use, user
from tests.conftest import Account, Server
from tests.test_cli import cli, start_server
from tests.test_live import processed, receive, socket, until

USAGE = {
    "input_tokens": 10,
    "output_tokens": 20,
    "cache_creation_input_tokens": 30,
    "cache_read_input_tokens": 40,
}  # 100 tokens per response


def exchange(session: str, n: int, *, sidechain: bool = False) -> bytes:
    """A prompt, a response with a tool call, and the tool's result: 100 tokens."""
    ts = f"2026-03-01T10:{n:02d}:00Z"
    return jsonl(
        user(f"question {n}", uuid=f"{session}-u{n}", ts=ts, session=session, sidechain=sidechain),
        assistant(
            uuid=f"{session}-a{n}",
            ts=ts,
            message_id=f"msg_{session}_{n}",
            request_id=f"req_{session}_{n}",
            usage=USAGE,
            session=session,
            sidechain=sidechain,
            content=[tool_use(f"{session}-t{n}", "Bash", command="ls")],
        ),
        user([tool_result(f"{session}-t{n}")], uuid=f"{session}-r{n}", ts=ts, session=session),
    )


def make_tree(home: Path, sessions: int = 2) -> Path:
    """``home/.claude/projects`` with ``sessions`` sessions, the first with a subagent."""
    projects = home / ".claude" / "projects"
    folder = projects / "-home-analyst-repo"
    folder.mkdir(parents=True)
    for n in range(sessions):
        (folder / f"s{n}.jsonl").write_bytes(exchange(f"s{n}", 1))
    agent = folder / "s0" / "subagents" / "agent-abc123.jsonl"
    agent.parent.mkdir(parents=True)
    agent.write_bytes(exchange("s0", 50, sidechain=True))
    return projects


def push(
    projects: Path, server: str, token: str | None, *extra: str
) -> tuple[int, dict[str, Any], str]:
    """Run ``agnes-activity push --json``: (exit code, summary, standard error)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGNES_")}
    env.update(AGNES_SERVER=server, AGNES_PROJECTS=str(projects), AGNES_PUSH_RETRIES="1")
    if token is not None:
        env["AGNES_TOKEN"] = token
    done = subprocess.run(
        [sys.executable, "-m", "service", "push", "--json", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    summary = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, summary, done.stderr


def sent_names(summary: dict[str, Any]) -> list[str]:
    return sorted(item["name"] for item in summary["sent"])


def uploads_seen(server: Server, account: Account) -> list[str]:
    """The ``session.upload`` events the server recorded for ``account``, oldest first."""
    with server.client(account) as http:
        rows = http.get("/api/me/stats/sync", params={"limit": 200}).json()["rows"]
    return [r["resource"] for r in reversed(rows) if r["action"] == "session.upload"]


def session_tokens(server: Server, account: Account, name: str) -> int:
    with server.client(account) as http:
        rows = http.get("/api/me/stats/sessions").json()["rows"]
    return next(r["tokens_total"] for r in rows if r["session_file"] == name)


def has_tokens(name: str, total: int) -> Any:
    def check(message: dict[str, Any]) -> bool:
        rows = message["tabs"].get("sessions", {}).get("rows", [])
        return any(r["session_file"] == name and r["tokens_total"] == total for r in rows)

    return check


def test_pushed_sessions_appear_on_an_open_socket_and_a_second_push_sends_nothing(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    projects = make_tree(tmp_path / "home")
    with socket(server, alice) as ws:
        assert receive(ws)["type"] == "snapshot"
        code, summary, stderr = push(projects, server.url, alice.token)
        assert code == 0, stderr
        assert summary["gzip"] is True
        assert summary["failed"] == [] and summary["error"] is None
        assert sent_names(summary) == ["s0.agent-abc123.jsonl", "s0.jsonl", "s1.jsonl"]
        # the subagent file is no row of its own: its response adds to its parent session
        until(ws, lambda m: processed("s1.jsonl")(m) and has_tokens("s0.jsonl", 200)(m))
    ledger = json.loads((tmp_path / "home" / ".claude" / "agnes-push.json").read_text())
    assert ledger["servers"][server.url] == {
        str(path): path.stat().st_size for path in projects.rglob("*.jsonl")
    }

    code, summary, stderr = push(projects, server.url, alice.token)
    assert code == 0, stderr
    assert summary["sent"] == [] and summary["unchanged"] == 3
    assert sorted(uploads_seen(server, alice)) == [
        "s0.agent-abc123.jsonl",
        "s0.jsonl",
        "s1.jsonl",
    ]


def test_a_grown_transcript_is_sent_again_and_its_numbers_grow(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    projects = make_tree(tmp_path / "home")
    code, _, stderr = push(projects, server.url, alice.token)
    assert code == 0, stderr
    with socket(server, alice) as ws:
        until(ws, processed("s1.jsonl"))
        assert session_tokens(server, alice, "s1.jsonl") == 100
        with (projects / "-home-analyst-repo" / "s1.jsonl").open("ab") as grown:
            grown.write(exchange("s1", 2) + exchange("s1", 3))
        code, summary, stderr = push(projects, server.url, alice.token)
        assert code == 0, stderr
        assert sent_names(summary) == ["s1.jsonl"]
        assert summary["unchanged"] == 2
        until(ws, has_tokens("s1.jsonl", 300))
    assert uploads_seen(server, alice).count("s1.jsonl") == 2


def test_a_bad_token_says_so_exits_2_and_records_nothing(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    projects = make_tree(tmp_path / "home")
    code, summary, stderr = push(projects, server.url, "agn_not-a-real-token")
    assert code == EXIT_AUTH == 2
    assert "the server refused the token (401): unknown token" in stderr
    assert summary["sent"] == []
    assert summary["exit_code"] == 2
    assert not (tmp_path / "home" / ".claude" / "agnes-push.json").exists()
    assert "Traceback" not in stderr


def free_port() -> int:
    with sockets.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_with_the_server_down_push_fails_clearly_and_a_later_push_sends_everything(
    tmp_path: Path,
) -> None:
    projects = make_tree(tmp_path / "home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    code, summary, stderr = push(projects, url, "agn_whatever")
    assert code == EXIT_UNREACHABLE == 3
    assert f"cannot reach {url}" in stderr
    assert "3 files not sent; the next push sends them" in stderr
    assert "retrying health check" in stderr
    assert time.monotonic() - started < 20
    assert summary["sent"] == []

    data_dir = tmp_path / "data"
    proc, served = start_server(data_dir, "--host", "127.0.0.1", "--port", str(port))
    try:
        assert served == url
        assert cli("users", "add", "ana@example.com", data_dir=data_dir).returncode == 0
        token = cli("tokens", "create", "ana@example.com", data_dir=data_dir).stdout.split()[-1]
        code, summary, stderr = push(projects, url, token)
        assert code == 0, stderr
        assert len(summary["sent"]) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_two_pushes_at_once_send_each_file_once(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    projects = make_tree(tmp_path / "home", sessions=60)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGNES_")}
    env.update(AGNES_SERVER=server.url, AGNES_PROJECTS=str(projects), AGNES_TOKEN=alice.token)
    command = [sys.executable, "-m", "service", "push", "--json"]
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in results]
    summaries = [json.loads(out) for out, _ in results]
    names = [item["name"] for summary in summaries for item in summary["sent"]]
    assert len(names) == 61
    assert len(set(names)) == 61
    assert sorted(uploads_seen(server, alice)) == sorted(names)


def test_refused_files_are_listed_with_the_servers_reason_and_the_rest_are_sent(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    projects = make_tree(tmp_path / "home")
    (projects / "-home-analyst-repo" / "bad name!.jsonl").write_bytes(exchange("bad", 1))
    code, summary, stderr = push(projects, server.url, alice.token)
    assert code == EXIT_FAILED == 1
    assert len(summary["sent"]) == 3
    [failure] = summary["failed"]
    assert failure["name"] == "bad name!.jsonl"
    assert failure["status"] == 400
    assert failure["reason"].startswith("filename must be 1 to 200 characters")
    assert "failed: bad name!.jsonl: 400 filename must be" in stderr
    # a refused file stays out of the ledger: it is tried again next time
    code, summary, _ = push(projects, server.url, alice.token)
    assert code == 1
    assert [f["name"] for f in summary["failed"]] == ["bad name!.jsonl"]
    assert summary["sent"] == []


def test_dry_run_lists_what_would_be_sent_and_sends_nothing(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    projects = make_tree(tmp_path / "home")
    code, summary, stderr = push(projects, server.url, None, "--dry-run")
    assert code == 0, stderr
    assert summary["dry_run"] is True
    assert sent_names(summary) == ["s0.agent-abc123.jsonl", "s0.jsonl", "s1.jsonl"]
    assert uploads_seen(server, alice) == []
    assert not (tmp_path / "home" / ".claude" / "agnes-push.json").exists()


def test_command_line_mistakes_exit_64_not_the_bad_token_code(tmp_path: Path) -> None:
    projects = make_tree(tmp_path / "home")
    code, _, stderr = push(projects, "http://127.0.0.1:9", None)
    assert code == EXIT_USAGE == 64
    assert "Missing option '--token'" in stderr
    code, _, stderr = push(tmp_path / "nowhere", "http://127.0.0.1:9", "t")
    assert code == 64
    assert "does not exist" in stderr
    code, _, stderr = push(projects, "127.0.0.1:8000", "t")
    assert code == 64
    assert "--server needs a scheme: did you mean http://127.0.0.1:8000?" in stderr
    code, _, stderr = push(projects, "agnes.example.com", "t")
    assert code == 64
    assert "did you mean https://agnes.example.com?" in stderr
    code, _, stderr = push(projects, "ftp://agnes.example.com", "t")
    assert code == 64
    assert "--server must be an http:// or https:// URL" in stderr


# -- retries, against a small HTTP server that misbehaves on purpose ----------------------


class Flaky(BaseHTTPRequestHandler):
    """Health as the real server answers it; each upload is first answered by the next
    status of ``script`` (429 with Retry-After, 503), and 200 once the script runs out."""

    script: list[int] = []
    received: list[tuple[str, bytes]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("X-Agnes-Accepts", "session-gzip")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status":"ok","version":"test"}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.script.pop(0) if self.script else 200
        if status == 200:
            name = body.split(b'filename="', 1)[1].split(b'"', 1)[0].decode()
            payload = body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
            self.received.append((name, gzip.decompress(payload)))
        detail = {200: "ok", 429: "slow down", 503: "busy", 413: "too large"}[status]
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"detail": detail}).encode())


@pytest.fixture
def flaky() -> Iterator[str]:
    Flaky.script, Flaky.received = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_429_and_5xx_are_retried_honouring_retry_after(flaky: str, tmp_path: Path) -> None:
    projects = make_tree(tmp_path / "home", sessions=1)
    Flaky.script = [429, 503]
    started = time.monotonic()
    code, summary, stderr = push(projects, flaky, "t", "--retries", "3")
    assert code == 0, stderr
    assert len(summary["sent"]) == 2
    assert time.monotonic() - started >= 1.0, "Retry-After: 1 was honoured"
    assert "retrying s0.agent-abc123.jsonl.gz in 1.0 s: 429 slow down" in stderr
    assert "503 busy" in stderr
    tree = {path.name: path.read_bytes() for path in projects.rglob("*.jsonl")}
    assert dict(Flaky.received) == {
        "s0.agent-abc123.jsonl.gz": tree["agent-abc123.jsonl"],
        "s0.jsonl.gz": tree["s0.jsonl"],
    }


def test_a_status_that_keeps_failing_ends_in_the_failed_list(flaky: str, tmp_path: Path) -> None:
    projects = make_tree(tmp_path / "home", sessions=1)
    Flaky.script = [503, 503, 413]
    code, summary, _ = push(projects, flaky, "t", "--retries", "1")
    assert code == EXIT_FAILED
    assert [(f["status"], f["reason"]) for f in summary["failed"]] == [
        (503, "busy"),
        (413, "too large"),
    ]


def test_retry_delays_double_and_honour_retry_after_within_bounds() -> None:
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (10, 30.0)):
        assert ceiling / 2 <= retry_delay(attempt, None) <= ceiling
    later = httpx.Response(429, headers={"Retry-After": "7"})
    assert retry_delay(1, later) == 7
    assert retry_delay(1, httpx.Response(503, headers={"Retry-After": "86400"})) == 120
    assert 0.25 <= retry_delay(1, httpx.Response(503, headers={"Retry-After": "soon"})) <= 0.5
