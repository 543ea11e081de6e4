"""``agnes-activity push --install-hook`` as an analyst uses it: real settings files in a
temporary Claude config folder, the installed command run the way Claude Code runs it (a
shell, an empty environment, the hook's JSON on standard input), and a real server."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from service import operations
from service.hook import CONFIG_NAME, LOG_NAME, MARKER
from service.push import EXIT_AUTH, EXIT_CONFIG, EXIT_USAGE
from tests.conftest import Account, Server
from tests.test_push import exchange, make_tree, push, sent_names, uploads_seen

OTHER_SETTINGS: dict[str, Any] = {
    "model": "opus",
    "permissions": {"allow": ["Bash(git log:*)"], "deny": []},
    "env": {"ÜBER": "ünïcode"},
    "hooks": {
        "Stop": [{"matcher": "", "hooks": [{"type": "command", "command": "say done"}]}],
        "PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "guard", "timeout": 5}]}
        ],
    },
}


def agnes(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``agnes-activity ARGS`` in a fresh process, without the tester's AGNES_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGNES_", "CLAUDE_"))}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
    )


def install(claude: Path, server: Server, account: Account) -> subprocess.CompletedProcess[str]:
    return agnes(
        "push", "--install-hook", "--claude-dir", str(claude),
        "--server", server.url, "--token", account.token,
    )  # fmt: skip


def settings_of(claude: Path) -> dict[str, Any]:
    return json.loads((claude / "settings.json").read_text())  # type: ignore[no-any-return]


def our_commands(settings: dict[str, Any], event: str) -> list[str]:
    return [
        hook["command"]
        for group in settings.get("hooks", {}).get(event, [])
        for hook in group["hooks"]
        if MARKER in hook.get("command", "")
    ]


def run_hook(
    command: str, payload: dict[str, Any] | bytes, cwd: Path
) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Runs the installed command as Claude Code does, in an empty environment; (seconds
    until it returned and its pipes closed, the finished process)."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    started = time.monotonic()
    done = subprocess.run(
        ["env", "-i", "/bin/sh", "-c", command],
        input=data,
        capture_output=True,
        cwd=cwd,
        timeout=30,
    )
    return time.monotonic() - started, done


def stop_payload(transcript: Path, event: str = "Stop") -> dict[str, Any]:
    return {
        "session_id": transcript.stem,
        "transcript_path": str(transcript),
        "cwd": "/home/analyst/repo",
        "permission_mode": "default",
        "hook_event_name": event,
        "stop_hook_active": False,
    }


def wait_for_session(server: Server, account: Account, name: str, tokens: int) -> None:
    """Polls the sessions API until ``name`` shows with ``tokens`` (10 s at most)."""
    deadline = time.monotonic() + 10
    with server.client(account) as http:
        while True:
            rows = http.get("/api/me/stats/sessions").json()["rows"]
            if any(r["session_file"] == name and r["tokens_total"] == tokens for r in rows):
                return
            assert time.monotonic() < deadline, f"{name} never showed {tokens} tokens: {rows}"
            time.sleep(0.05)


def wait_for_log(claude: Path, lines: int) -> list[str]:
    deadline = time.monotonic() + 15
    while True:
        log = claude / LOG_NAME
        text = log.read_text().splitlines() if log.exists() else []
        if len(text) >= lines:
            return text
        assert time.monotonic() < deadline, f"the log has {text}, not {lines} lines"
        time.sleep(0.05)


def a_project_with_its_own_service_package(tmp_path: Path) -> Path:
    """The analyst's working folder, holding a ``service`` package of its own: the hook
    must still run ours."""
    repo = tmp_path / "repo"
    (repo / "service").mkdir(parents=True)
    (repo / "service" / "__init__.py").write_text("raise SystemExit('the wrong service')\n")
    (repo / "service" / "hook.py").write_text("raise SystemExit('the wrong hook')\n")
    return repo


def test_installing_twice_adds_one_hook_for_stop_and_session_end_and_keeps_every_other_setting(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    claude = tmp_path / "home" / ".claude"
    claude.mkdir(parents=True)
    (claude / "settings.json").write_text(json.dumps(OTHER_SETTINGS, indent=4))
    (claude / "settings.json").chmod(0o640)
    for _ in range(2):
        done = install(claude, server, alice)
        assert done.returncode == 0, done.stderr
        assert "alice@example.com" in done.stdout
    settings = settings_of(claude)
    [command] = our_commands(settings, "Stop")
    assert our_commands(settings, "SessionEnd") == [command]
    ours = {"matcher": "", "hooks": [{"type": "command", "command": command}]}
    expected = copy.deepcopy(OTHER_SETTINGS)
    expected["hooks"]["Stop"].append(ours)
    expected["hooks"]["SessionEnd"] = [ours]
    assert settings == expected
    assert command.startswith(f"{os.path.abspath(sys.executable)} ")
    text = (claude / "settings.json").read_text()
    assert alice.token not in text
    assert text.startswith('{\n  "model": "opus",')  # indented by two, in the same order
    assert (claude / "settings.json").stat().st_mode & 0o777 == 0o640
    config = claude / CONFIG_NAME
    assert config.stat().st_mode & 0o777 == 0o600
    assert json.loads(config.read_text()) == {"server": server.url, "token": alice.token}
    assert sorted(p.name for p in claude.iterdir()) == [CONFIG_NAME, "settings.json"]


def test_the_hook_returns_at_once_in_an_empty_environment_and_its_session_reaches_the_server(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    claude = tmp_path / "home" / ".claude"
    projects = make_tree(tmp_path / "home")
    assert install(claude, server, alice).returncode == 0
    [command] = our_commands(settings_of(claude), "Stop")
    transcript = projects / "-home-analyst-repo" / "s0.jsonl"
    repo = a_project_with_its_own_service_package(tmp_path)

    seconds, done = run_hook(command, stop_payload(transcript), repo)
    assert seconds < 1.0
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    # the session and its subagent's file: 100 tokens each; the other session stays unsent
    wait_for_session(server, alice, "s0.jsonl", 200)
    assert sorted(uploads_seen(server, alice)) == ["s0.agent-abc123.jsonl", "s0.jsonl"]
    [line] = wait_for_log(claude, 1)
    assert " Stop s0.jsonl: sent 2 files (" in line and "0 failed" in line
    ledger = json.loads((claude / "agnes-push.json").read_text())["servers"][server.url]
    assert sorted(Path(path).name for path in ledger) == ["agent-abc123.jsonl", "s0.jsonl"]

    # One more response, and two hooks at once (the end of the response and of the
    # session): both return at once, the second push waits for the first's lock, and the
    # grown transcript is sent once.
    with transcript.open("ab") as grown:
        grown.write(exchange("s0", 2))
    for event in ("Stop", "SessionEnd"):
        seconds, done = run_hook(command, stop_payload(transcript, event), repo)
        assert seconds < 1.0
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    wait_for_session(server, alice, "s0.jsonl", 300)
    lines = wait_for_log(claude, 3)
    assert len(lines) == 3
    assert sorted(uploads_seen(server, alice)) == [
        "s0.agent-abc123.jsonl",
        "s0.jsonl",
        "s0.jsonl",
    ]
    # The hook kept the ledger a plain push reads: that sends only the other session.
    code, summary, stderr = push(projects, server.url, alice.token)
    assert code == 0, stderr
    assert (sent_names(summary), summary["unchanged"]) == (["s1.jsonl"], 2)


def test_uninstalling_removes_only_our_hooks_and_leaves_the_settings_as_they_were(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    claude = tmp_path / ".claude"
    claude.mkdir()
    (claude / "settings.json").write_text(json.dumps(OTHER_SETTINGS))
    assert install(claude, server, alice).returncode == 0
    [command] = our_commands(settings_of(claude), "Stop")
    done = agnes("push", "--uninstall-hook", "--claude-dir", str(claude))
    assert done.returncode == 0, done.stderr
    assert "removed the push hook (2 entries)" in done.stdout
    assert settings_of(claude) == OTHER_SETTINGS
    assert not (claude / CONFIG_NAME).exists()
    again = agnes("push", "--uninstall-hook", "--claude-dir", str(claude))
    assert again.returncode == 0
    assert "nothing changed" in again.stdout
    assert settings_of(claude) == OTHER_SETTINGS

    # A hook left behind in another settings file says in one line what to do.
    _, done = run_hook(command, {"transcript_path": str(tmp_path / "s.jsonl")}, tmp_path)
    assert done.returncode == 1
    assert done.stdout == b""
    [warning] = done.stderr.decode().splitlines()
    assert warning.startswith("agnes-activity push: ")
    assert "run `agnes-activity push --install-hook` again" in warning

    # Settings without hooks of their own get back exactly what they had.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "settings.json").write_text('{"model": "sonnet"}')
    assert install(bare, server, alice).returncode == 0
    assert agnes("push", "--uninstall-hook", "--claude-dir", str(bare)).returncode == 0
    assert settings_of(bare) == {"model": "sonnet"}


def test_a_malformed_settings_json_is_left_untouched_with_a_clear_error(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    claude = tmp_path / ".claude"
    claude.mkdir()
    cases = {
        b'{"hooks": {"Stop": [\n': "is not valid JSON",
        b'["model", "opus"]': "is not a JSON object",
        b'{"hooks": ["Stop"]}': '"hooks" is not a JSON object',
        b'{"hooks": {"Stop": {"matcher": ""}}}': '"hooks"."Stop" is not a list of',
        b'{"hooks": {"SessionEnd": [["x"]]}}': '"hooks"."SessionEnd" is not a list of',
    }
    for content, message in cases.items():
        (claude / "settings.json").write_bytes(content)
        for action in (install(claude, server, alice), agnes(
            "push", "--uninstall-hook", "--claude-dir", str(claude)
        )):  # fmt: skip
            assert action.returncode == EXIT_CONFIG == 78, (content, action.stderr)
            assert message in action.stderr
            assert "it was left untouched" in action.stderr
            assert "Traceback" not in action.stderr
            assert (claude / "settings.json").read_bytes() == content
            assert sorted(p.name for p in claude.iterdir()) == ["settings.json"]


def test_install_checks_the_server_and_the_token_before_writing_anything(
    server: Server, tmp_path: Path
) -> None:
    claude = tmp_path / ".claude"
    done = agnes(
        "push", "--install-hook", "--claude-dir", str(claude),
        "--server", server.url, "--token", "agn_not-a-real-token",
    )  # fmt: skip
    assert done.returncode == EXIT_AUTH
    assert "the server refused the token (401)" in done.stderr
    assert "the hook was not installed" in done.stderr
    done = agnes(
        "push", "--install-hook", "--claude-dir", str(claude),
        "--server", server.url.removeprefix("http://"), "--token", "t",
    )  # fmt: skip
    assert done.returncode == EXIT_USAGE
    assert f"did you mean {server.url}?" in done.stderr
    assert not claude.exists()


def test_a_failed_push_is_said_once_in_one_line_at_the_next_response(
    server: Server, alice: Account, tmp_path: Path
) -> None:
    claude = tmp_path / "home" / ".claude"
    projects = make_tree(tmp_path / "home")
    assert install(claude, server, alice).returncode == 0
    [command] = our_commands(settings_of(claude), "Stop")
    transcript = projects / "-home-analyst-repo" / "s1.jsonl"
    server.store.write_sync(operations.revoke_token, alice.token)

    _, done = run_hook(command, stop_payload(transcript), tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    [line] = wait_for_log(claude, 1)
    assert "the server refused the token (401)" in line
    warnings = []
    for _ in range(2):
        _, done = run_hook(command, stop_payload(transcript), tmp_path)
        assert done.stdout == b""
        warnings.append((done.returncode, done.stderr.decode().splitlines()))
    assert warnings[0][0] == 1
    [warning] = warnings[0][1]
    assert warning.startswith("agnes-activity push: the last push failed: the server refused")
    assert str(claude / LOG_NAME) in warning
    assert warnings[1] == (0, [])  # said once, not after every response

    _, done = run_hook(command, b"not json", tmp_path)
    assert done.returncode == 1
    [warning] = done.stderr.decode().splitlines()
    assert "standard input is not a Claude Code hook's JSON" in warning
