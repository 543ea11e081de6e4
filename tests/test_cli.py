"""The command line as an operator uses it: a real ``agnes-activity serve`` process, and the
admin commands run beside it on the same data dir."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.ingest.backfill import find_transcripts
from service.synthetic import corpus

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def cli(
    *args: str, data_dir: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if data_dir is not None:
        env["AGNES_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def start_server(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"serving (http://\S+)/me/activity", line)
    assert match, f"no URL announced: {line!r}"
    return proc, match.group(1)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    data_dir = tmp_path / "data"
    proc, url = start_server(data_dir)
    yield data_dir, url
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def test_users_and_tokens_work_while_the_server_runs(running: tuple[Path, str]) -> None:
    data_dir, url = running
    added = cli("users", "add", "ana@example.com", data_dir=data_dir)
    assert added.returncode == 0, added.stderr
    user_id = added.stdout.strip().splitlines()[-1]
    assert UUID.match(user_id)

    made = cli("tokens", "create", "ana@example.com", "--name", "laptop", data_dir=data_dir)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    me = httpx.get(f"{url}/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json() == {"id": user_id, "email": "ana@example.com", "is_admin": False}

    listed = cli("tokens", "list", "ana@example.com", data_dir=data_dir)
    assert listed.returncode == 0
    assert token[:12] in listed.stdout
    assert token not in listed.stdout, "a token is shown once, at creation"

    revoked = cli("tokens", "revoke", token[:12], data_dir=data_dir)
    assert revoked.returncode == 0, revoked.stderr
    after = httpx.get(f"{url}/api/me", headers={"Authorization": f"Bearer {token}"})
    assert after.status_code == 401
    assert after.json()["detail"] == "token revoked"


def test_users_list_json_shows_admin_flag(running: tuple[Path, str]) -> None:
    data_dir, _ = running
    assert cli("users", "add", "root@example.com", "--admin", data_dir=data_dir).returncode == 0
    listed = cli("users", "list", "--json", data_dir=data_dir)
    assert listed.returncode == 0
    assert '"email":"root@example.com","is_admin":true' in listed.stdout
    table = cli("users", "list", data_dir=data_dir).stdout.splitlines()
    assert table[0].split() == ["ID", "EMAIL", "ADMIN", "ACTIVE", "LAST", "PULL"]
    root = next(line for line in table if "root@example.com" in line)
    assert root.split()[2:] == ["yes", "yes", "never"]
    assert root.index("root@example.com") == table[0].index("EMAIL")  # columns line up


def test_a_second_server_on_the_same_data_dir_gets_a_clear_error(running: tuple[Path, str]) -> None:
    data_dir, _ = running
    second = cli("serve", "--port", "0", data_dir=data_dir)
    assert second.returncode == 1
    assert "locked by process" in second.stderr
    assert str(data_dir.resolve()) in second.stderr
    assert "Traceback" not in second.stderr


def test_a_busy_port_is_a_clear_error(running: tuple[Path, str], tmp_path: Path) -> None:
    _, url = running
    port = url.rsplit(":", 1)[1]
    other = cli("serve", "--port", port, data_dir=tmp_path / "other")
    assert other.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in other.stderr
    assert "Traceback" not in other.stderr


def test_a_data_dir_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli("serve", "--port", "0", data_dir=blocker / "data")
    assert result.returncode == 1
    assert "cannot create data directory" in result.stderr
    assert str(blocker / "data") in result.stderr


def test_admin_commands_work_without_a_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    added = cli("users", "add", "solo@example.com", data_dir=data_dir)
    assert added.returncode == 0, added.stderr
    duplicate = cli("users", "add", "solo@example.com", data_dir=data_dir)
    assert duplicate.returncode == 1
    assert "exists already" in duplicate.stderr
    unknown = cli("tokens", "create", "nobody@example.com", data_dir=data_dir)
    assert unknown.returncode == 1
    assert "no user nobody@example.com" in unknown.stderr


def test_stopping_the_server_checkpoints_and_removes_its_admin_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc, _ = start_server(data_dir)
    assert (data_dir / ".admin.json").stat().st_mode & 0o777 == 0o600
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert not (data_dir / ".admin.json").exists()
    assert not (data_dir / "activity.duckdb.wal").exists()


def test_demo_prints_the_url_and_a_token_that_signs_in(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("token:" in line for line in lines):
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        url = re.search(r"(http://\S+)/login", text)
        token = re.search(r"token: (\S+)", text)
        assert url and token, text
        with httpx.Client(base_url=url.group(1)) as http:
            signed_in = http.post("/login", data={"token": token.group(1)})
            assert signed_in.status_code == 303
            assert signed_in.headers["location"] == "/me/activity"
            page = http.get("/me/activity")
            assert page.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_ingest_backfills_a_tree_with_or_without_a_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert cli("users", "add", "ana@example.com", data_dir=data_dir).returncode == 0
    token = cli("tokens", "create", "ana@example.com", data_dir=data_dir).stdout.split()[-1]
    first, second = tmp_path / "first", tmp_path / "second"
    corpus.generate(first, size_bytes=300_000, seed=3, big_lines=False)
    expected = corpus.generate(second, size_bytes=300_000, seed=4, big_lines=False)

    direct = cli("ingest", str(first / "projects"), data_dir=data_dir)
    assert direct.returncode == 0, direct.stderr
    summary = direct.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"\d+ files, \d+ lines, \d+ bad lines, [\d.]+ MB in [\d.]+ s \(\d+ MB/s\)", summary
    )
    again = cli("ingest", str(first / "projects"), data_dir=data_dir)
    assert again.returncode == 0, again.stderr
    assert " 0 lines, 0 bad lines, 0.0 MB " in again.stdout, "a second run reads nothing again"

    proc, url = start_server(data_dir)
    try:
        through_server = cli(
            "ingest", str(second / "projects"), "--user", "ana@example.com", data_dir=data_dir
        )
        assert through_server.returncode == 0, through_server.stderr
        assert through_server.stdout.startswith(f"{expected.files} files, ")
        sessions = httpx.get(
            f"{url}/api/me/stats/sessions?limit=1", headers={"Authorization": f"Bearer {token}"}
        ).json()
        files = len(find_transcripts([first / "projects"])) + expected.files
        assert sessions["total"] == files - subagent_files(first, second)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    nobody = cli("ingest", str(first / "projects"), "--user", "bob@example.com", data_dir=data_dir)
    assert (nobody.returncode, nobody.stderr) == (1, "error: no user bob@example.com\n")


def test_reprocess_through_a_server_forgets_the_numbers_of_deleted_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    user_id = cli("users", "add", "ana@example.com", data_dir=data_dir).stdout.split()[-1]
    token = cli("tokens", "create", "ana@example.com", data_dir=data_dir).stdout.split()[-1]
    projects = tmp_path / "projects"
    corpus.generate(projects, size_bytes=100_000, seed=5, big_lines=False)
    proc, url = start_server(data_dir)
    try:
        assert cli("ingest", str(projects / "projects"), data_dir=data_dir).returncode == 0
        headers = {"Authorization": f"Bearer {token}"}
        # read once, and so kept by the server's answer cache
        before = httpx.get(f"{url}/api/me/stats/sessions", headers=headers).json()
        assert before["total"] > 0 and all(r["processed"] for r in before["rows"])
        tokens = httpx.get(f"{url}/api/me/stats/tokens", headers=headers).json()
        assert tokens["totals"]["total"] > 0
        for path in (data_dir / "user_sessions" / user_id).iterdir():
            path.unlink()  # the archive lost its files (an operator's mistake, a restore)
        assert cli("reprocess", data_dir=data_dir).returncode == 0
        tokens = httpx.get(f"{url}/api/me/stats/tokens", headers=headers).json()
        assert tokens["totals"]["total"] == 0, "no stale answer: nothing is left to count"
        after = httpx.get(f"{url}/api/me/stats/sessions", headers=headers).json()
        assert after["total"] == before["total"]  # files seen are kept, with nothing read
        assert [(r["processed"], r["tokens_total"]) for r in after["rows"]] == [(False, 0)] * after[
            "total"
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def subagent_files(*roots: Path) -> int:
    """Subagent transcripts are part of their parent's session row, not rows of their own."""
    return sum(len(list(root.rglob("subagents/*.jsonl"))) for root in roots)


def test_a_deactivated_user_is_locked_out_until_activated(running: tuple[Path, str]) -> None:
    data_dir, url = running
    assert cli("users", "add", "leaver@example.com", data_dir=data_dir).returncode == 0
    token = cli("tokens", "create", "leaver@example.com", data_dir=data_dir).stdout.split()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    assert cli("users", "deactivate", "leaver@example.com", data_dir=data_dir).returncode == 0
    locked = httpx.get(f"{url}/api/me", headers=headers)
    assert locked.status_code == 401
    assert locked.json()["detail"] == "user deactivated"
    assert cli("users", "activate", "leaver@example.com", data_dir=data_dir).returncode == 0
    assert httpx.get(f"{url}/api/me", headers=headers).status_code == 200


def test_every_option_of_every_command_reads_an_environment_variable() -> None:
    """DESIGN.md: every option also reads an AGNES_* environment variable."""
    import click

    from service.cli import main

    missing = []

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                envvar = param.envvar if isinstance(param.envvar, str) else ""
                if not envvar.startswith("AGNES_"):
                    missing.append((" ".join(path), param.opts))

    walk(main, [])
    assert missing == []
