"""Files that arrive without any HTTP call (a plain copy, another process appending to the
spool) reach the dashboard through the watcher, or through the reconciling scan when the
watcher is off or misses them; and a busy watcher never holds up shutdown."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb
import pytest

from service.settings import Settings
from service.synthetic.lines import assistant, jsonl
from tests.conftest import Account, Server
from tests.test_cli import cli, start_server

T = TypeVar("T")
USAGE = {"input_tokens": 10, "output_tokens": 20}


def transcript(n: int) -> bytes:
    return jsonl(
        assistant(
            uuid=f"a{n}",
            ts=f"2026-03-01T10:00:{n:02d}Z",
            message_id=f"msg_{n}",
            request_id=f"req_{n}",
            usage=USAGE,
            session=f"session-{n}",
        )
    )


def audit_line(user_id: str, n: int) -> str:
    event = {
        "timestamp": f"2026-03-01T11:00:{n:02d}Z",
        "user_id": user_id,
        "action": "query.run",
        "resource": f"table_{n}",
    }
    return json.dumps(event) + "\n"


def until(check: Callable[[], T], seconds: float = 5.0) -> T:
    """Poll ``check`` until it returns something non-empty, or fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing after {seconds} s")
        time.sleep(0.005)


def processed_sessions(server: Server, account: Account) -> Callable[[], list[str]]:
    def check() -> list[str]:
        with server.client(account) as http:
            rows = http.get("/api/me/stats/sessions").json()["rows"]
        return sorted(r["session_file"] for r in rows if r["pipeline_status"] == "processed")

    return check


def stored_queries(server: Server, account: Account) -> Callable[[], list[str]]:
    def check() -> list[str]:
        with server.client(account) as http:
            rows = http.get("/api/me/stats/queries").json()["rows"]
        return sorted(r["resource"] for r in rows)

    return check


def copy_in(server: Server, account: Account, name: str, data: bytes, tmp: Path) -> Path:
    """A plain file copy into the user's folder, as rsync or a legacy collector does it."""
    source = tmp / name
    source.write_bytes(data)
    target = server.settings.sessions_dir / account.user.id / name
    target.parent.mkdir(exist_ok=True)
    shutil.copy(source, target)
    return target


def test_a_copied_transcript_is_ingested_without_any_http_call(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    copy_in(server, alice, "s1.jsonl", transcript(1), tmp_path)  # a new user folder
    assert until(processed_sessions(server, alice)) == ["s1.jsonl"]
    copy_in(server, alice, "s2.jsonl", transcript(2), tmp_path)
    assert until(lambda: processed_sessions(server, alice)()[1:]) == ["s2.jsonl"]
    with server.client(alice) as http:
        totals = http.get("/api/me/stats/tokens").json()["totals"]
    assert (totals["input"], totals["output"]) == (20, 40)


def test_temporary_names_are_not_ingested(server: Server, alice: Account, tmp_path: Path) -> None:
    copy_in(server, alice, ".upload-x.jsonl", transcript(1), tmp_path)
    copy_in(server, alice, ".backfill-1-s.jsonl.tmp", transcript(2), tmp_path)
    (server.settings.audit_dir / ".writing.jsonl").write_text(audit_line(alice.user.id, 1))
    copy_in(server, alice, "real.jsonl", transcript(3), tmp_path)
    assert until(processed_sessions(server, alice)) == ["real.jsonl"]
    time.sleep(0.2)
    with server.client(alice) as http:
        assert len(http.get("/api/me/stats/sessions").json()["rows"]) == 1
        assert http.get("/api/me/stats/queries").json()["rows"] == []


@pytest.fixture
def killed_uploads(settings: Settings) -> list[Path]:
    """What a server killed in the middle of uploads leaves: temp files beside transcripts."""
    folder = settings.sessions_dir / "some-user"
    folder.mkdir(parents=True)
    for name in (".upload-3f2a9c.tmp", ".upload-77b0e1.tmp", ".keep", "s1.jsonl"):
        (folder / name).write_bytes(transcript(1))
    return sorted(folder.iterdir())


def test_temp_files_of_killed_uploads_are_removed_at_start(
    killed_uploads: list[Path], server: Server
) -> None:
    folder = killed_uploads[0].parent
    until(lambda: sorted(p.name for p in folder.iterdir()) == [".keep", "s1.jsonl"] or None)


def test_an_audit_line_appended_by_another_process_is_stored(
    server: Server, alice: Account
) -> None:
    spool = server.settings.audit_dir / "query-service.jsonl"
    writer = textwrap.dedent(
        """
        import sys
        with open(sys.argv[1], "a") as spool:
            spool.write(sys.argv[2])
        """
    )
    for n in (1, 2):
        line = audit_line(alice.user.id, n)
        subprocess.run([sys.executable, "-c", writer, str(spool), line], check=True)
        wanted = [f"table_{m}" for m in range(1, n + 1)]
        until(lambda wanted=wanted: stored_queries(server, alice)() == wanted)
    assert stored_queries(server, alice)() == ["table_1", "table_2"]


@pytest.mark.settings(watch=False, scan_interval=0.3)
def test_with_watching_off_the_periodic_scan_still_ingests(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    # Each round waits for the one before, so the second can only come from a later scan
    # than the one at start-up.
    for n in (1, 2):
        copy_in(server, alice, f"s{n}.jsonl", transcript(n), tmp_path)
        with (server.settings.audit_dir / "svc.jsonl").open("a") as spool:
            spool.write(audit_line(alice.user.id, n))
        sessions = until(lambda n=n: processed_sessions(server, alice)()[n - 1 :], seconds=3)
        queries = until(lambda n=n: stored_queries(server, alice)()[n - 1 :], seconds=3)
        assert (sessions, queries) == ([f"s{n}.jsonl"], [f"table_{n}"])


@pytest.mark.settings(poll=True)
def test_polling_mode_notices_copies_and_appends(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    copy_in(server, alice, "s1.jsonl", transcript(1), tmp_path)
    assert until(processed_sessions(server, alice)) == ["s1.jsonl"]
    # Polling compares modification times in whole seconds: the second append, within the
    # second of the first one that the poll saw, must arrive all the same.
    spool = server.settings.audit_dir / "svc.jsonl"
    while time.time() % 1 > 0.1:
        time.sleep(0.01)
    spool.write_text(audit_line(alice.user.id, 1))
    time.sleep(0.5)  # two polls (250 ms apart) have seen the first line
    with spool.open("a") as handle:
        handle.write(audit_line(alice.user.id, 2))
    assert until(lambda: stored_queries(server, alice)()[1:], seconds=4) == ["table_2"]


def test_a_torn_spool_line_shows_once_it_is_completed(server: Server, alice: Account) -> None:
    spool = server.settings.audit_dir / "svc.jsonl"
    first, second = audit_line(alice.user.id, 1), audit_line(alice.user.id, 2)
    with spool.open("a") as handle:
        handle.write(first + second[:20])
        handle.flush()
        assert until(stored_queries(server, alice)) == ["table_1"]
        handle.write(second[20:])
        handle.flush()
        assert until(lambda: stored_queries(server, alice)()[1:]) == ["table_2"]
    time.sleep(0.2)
    assert stored_queries(server, alice)() == ["table_1", "table_2"]


def test_serve_stops_quickly_with_a_busy_watcher_and_leaves_a_checkpointed_database(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    user_id = cli("users", "add", "ana@example.com", data_dir=data_dir).stdout.split()[-1]
    proc, _ = start_server(data_dir, "--debounce-ms", "20", "--scan-interval", "1")
    folder = data_dir / "user_sessions" / user_id
    folder.mkdir()
    done = threading.Event()

    def churn() -> None:
        n = 0
        while not done.is_set():
            n += 1
            with (data_dir / "audit" / f"svc-{n % 4}.jsonl").open("a") as spool:
                spool.write(audit_line(user_id, n % 60).replace("table_", f"t{n}_"))
            (folder / f"s{n % 8}.jsonl").write_bytes(transcript(n % 60) * (n % 5 + 1))

    writer = threading.Thread(target=churn)
    writer.start()
    try:
        time.sleep(1.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        stopped_in = time.monotonic() - started
    finally:
        done.set()
        writer.join()
    assert stopped_in < 2.0, f"shutdown took {stopped_in:.2f} s"
    assert not (data_dir / "activity.duckdb.wal").exists()
    with duckdb.connect(str(data_dir / "activity.duckdb"), read_only=True) as db:
        events = db.execute("SELECT count(*) FROM audit_events").fetchall()[0][0]
        files = db.execute("SELECT count(*) FROM files WHERE status = 'processed'").fetchall()
    assert events > 10 and files[0][0] == 8, "the watcher kept up while the writer churned"


def test_serve_help_names_the_watch_options_and_their_environment_variables() -> None:
    result = cli("serve", "--help")
    for name in ("AGNES_WATCH", "AGNES_POLL", "AGNES_DEBOUNCE_MS", "AGNES_SCAN_INTERVAL"):
        assert name in result.stdout
    assert "--no-watch" in result.stdout and "--scan-interval" in result.stdout
