"""Hook latency: from Claude Code starting the push hook to the update on the open page's
live socket, p50 and p99 over RESPONSES responses. Same-run baseline: a plain
`agnes-activity push` (the walk of the whole projects folder) of the same kind of change.

Each run starts `agnes-activity serve` on a fresh data dir with one user, and makes a Claude
config folder whose projects/ holds OTHERS sessions of about 5 KB (already pushed, so a
plain push walks them and sends nothing of theirs) and the session that grows, a transcript
of HISTORY_KB. It installs the hook with `agnes-activity push --install-hook` and opens the
live socket the dashboard uses (`/api/me/live`). Then, response after response, it appends
one assistant line (100 tokens) to the transcript and either

- runs the installed command as Claude Code does (`/bin/sh -c COMMAND` in an empty
  environment, the hook's JSON on standard input), timing the hook's return (it exited and
  its pipes closed) and the update on the socket that shows the session with its new
  token total; before the next response the hook's detached push must have logged its line
  (it looks at the session once more a second later), so every response starts from an
  idle client; or
- runs `agnes-activity push` with the server and token in its environment, as an analyst
  would by hand, timed the same way to the socket update.

The two alternate (hook, push, hook, ...), RESPONSES of each, so both see the same load.

    python bench/hook_latency.py [--responses 100] [--others 300] [--history-kb 1000]
                                 [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets
from wsfleet import ROOT, Server, loadavg, make_users, percentile

from service.synthetic.lines import response

EMAIL = "hook@example.com"
SESSION = "0b1c2d3e-hook-bench"
WARMUP = 3


def response_line(session: str, n: int, padding: int = 0) -> bytes:
    """One assistant response of 100 tokens, stamped now (about ``padding`` bytes more)."""
    return response(session, n, size=padding + 450 if padding else 0)


def make_claude_dir(root: Path, others: int, history_kb: int) -> tuple[Path, Path, int]:
    """The config folder, the growing transcript, and how many responses it holds."""
    claude = root / "claude"
    folder = claude / "projects" / "-home-analyst-repo"
    folder.mkdir(parents=True)
    for n in range(others):
        (folder / f"other-{n:04d}.jsonl").write_bytes(
            b"".join(response_line(f"other-{n:04d}", k, 1500) for k in range(3))
        )
    transcript = folder / f"{SESSION}.jsonl"
    responses = max(1, history_kb // 4)
    transcript.write_bytes(b"".join(response_line(SESSION, k, 3800) for k in range(responses)))
    return claude, transcript, responses


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGNES_", "CLAUDE_"))}
    return {**env, **extra}


def agnes(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        env=cli_env(**env),
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


async def socket_shows(ws: websockets.ClientConnection, name: str, tokens: int) -> float:
    """perf_counter() when an update shows session ``name`` with ``tokens``."""
    while True:
        message = json.loads(await ws.recv())
        if message["type"] == "ping":
            await ws.send('{"type": "pong"}')
            continue
        rows = message.get("tabs", {}).get("sessions", {}).get("rows", [])
        if any(r["session_file"] == name and r["tokens_total"] == tokens for r in rows):
            return time.perf_counter()


async def log_lines(log: Path, count: int) -> None:
    deadline = time.monotonic() + 60
    while not log.exists() or len(log.read_text().splitlines()) < count:
        assert time.monotonic() < deadline, f"the hook's log never reached {count} lines"
        await asyncio.sleep(0.02)


async def one_run(args: argparse.Namespace, run: int) -> dict[str, list[float]]:
    root = Path(tempfile.mkdtemp(prefix="agnes-hook-latency-"))
    data_dir = root / "data"
    _, token = make_users(data_dir, [EMAIL])[EMAIL]
    server = Server(data_dir)
    results: dict[str, list[float]] = {
        "returned": [],
        "hook": [],
        "began": [],
        "upload": [],
        "push": [],
    }
    try:
        claude, transcript, responses = make_claude_dir(root, args.others, args.history_kb)
        env = {"AGNES_SERVER": server.base, "AGNES_TOKEN": token, "AGNES_CLAUDE_DIR": str(claude)}
        agnes("push", **env)  # the history, untimed
        agnes("push", "--install-hook", **env)
        settings = json.loads((claude / "settings.json").read_text())
        command = settings["hooks"]["Stop"][-1]["hooks"][0]["command"]
        payload = json.dumps(
            {
                "session_id": SESSION,
                "transcript_path": str(transcript),
                "cwd": "/home/analyst/repo",
                "hook_event_name": "Stop",
                "stop_hook_active": False,
            }
        ).encode()
        log = claude / "agnes-push.log"
        hooks_run = 0
        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
            await asyncio.wait_for(ws.recv(), 60)  # the snapshot
            for n in range(2 * (args.responses + WARMUP)):
                responses += 1
                with transcript.open("ab") as out:
                    out.write(response_line(SESSION, responses))
                shown = asyncio.ensure_future(socket_shows(ws, transcript.name, 100 * responses))
                by_hook = n % 2 == 0
                started = time.perf_counter()
                if by_hook:
                    hook = await asyncio.create_subprocess_exec(
                        "env", "-i", "/bin/sh", "-c", command,
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    )  # fmt: skip
                    out, err = await hook.communicate(payload)
                    returned = time.perf_counter()
                    assert (hook.returncode, out, err) == (0, b"", b""), (out, err)
                else:
                    push = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "service", "push",
                        env=cli_env(**env), cwd=ROOT,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    )  # fmt: skip
                    _, err = await push.communicate()
                    assert push.returncode == 0, err
                done = await asyncio.wait_for(shown, 60)
                if by_hook:
                    hooks_run += 1
                    await log_lines(log, hooks_run)
                if n < 2 * WARMUP:
                    continue
                if by_hook:
                    results["returned"].append((returned - started) * 1000)
                    results["hook"].append((done - started) * 1000)
                    last = log.read_text().splitlines()[hooks_run - 1]
                    timed = re.search(r"in ([\d.]+) s, ([\d.]+) s after the hook began", last)
                    assert timed, last
                    results["upload"].append(float(timed.group(1)) * 1000)
                    results["began"].append(float(timed.group(2)) * 1000)
                else:
                    results["push"].append((done - started) * 1000)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    row = {k: (statistics.median(v), percentile(v, 99)) for k, v in results.items()}
    print(
        f"run {run} (p50/p99): "
        + ", ".join(f"{k} {p50:.0f}/{p99:.0f} ms" for k, (p50, p99) in row.items())
        + f"; {loadavg()}",
        flush=True,
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--responses", type=int, default=100, help="timed, of each kind")
    parser.add_argument("--others", type=int, default=300, help="other sessions in projects/")
    parser.add_argument("--history-kb", type=int, default=1000, help="the growing transcript")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    print(f"{loadavg()}", flush=True)
    runs = [asyncio.run(one_run(args, n + 1)) for n in range(args.runs)]

    def med(kind: str, p: float) -> float:
        return statistics.median(
            statistics.median(r[kind]) if p == 50 else percentile(r[kind], p) for r in runs
        )

    labels: dict[str, str] = {
        "returned": "hook started → hook returned to Claude Code",
        "hook": "hook started → update on the socket",
        "began": "  of which: the hook's code began → its push's last answer (from its log)",
        "upload": "  of which: that push alone (ledger, lock, health check, gzip, upload)",
        "push": "`agnes-activity push` started → update on the socket (baseline)",
    }
    print(
        f"\nmedian of {args.runs} runs, {args.responses} responses of each kind per run, "
        f"{args.others} other sessions, a {args.history_kb} KB transcript; {loadavg()}"
    )
    for kind, label in labels.items():
        print(f"  {label}: p50 {med(kind, 50):.0f} ms, p99 {med(kind, 99):.0f} ms")
    print(
        f"  the hook's update comes {med('push', 50) / med('hook', 50):.1f}x sooner than a "
        f"plain push's (p50), and Claude Code waits {med('returned', 50):.0f} ms for it"
    )


if __name__ == "__main__":
    main()
