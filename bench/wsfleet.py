"""What the websocket benchmarks share: a server in its own process, users made in bulk,
fleets of idle sockets held by helper processes, and an upload timed until the socket shows it.

Idle sockets live in helper processes (this file run as a script, driven over stdin/stdout
with one JSON object a line), so that thousands of them neither slow the measuring client's
event loop nor run into one process's limit on open files. Like a browser tab, a held
socket offers permessage-deflate (unless told not to), sends no protocol pings of its own,
reads every message and answers the server's ``{"type": "ping"}`` with a pong.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
CODE = Path(os.environ.get("AGNES_BENCH_CODE", ROOT))
"""Whose ``service`` package runs: this checkout's, or a baseline's (:func:`code_at`)."""
sys.path.insert(0, str(CODE))


def loadavg() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def raise_open_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def code_at(commit: str) -> Path:
    """A checkout of ``commit`` (a git worktree under ``bench/out/``, made once) to run as a
    same-run baseline: :class:`Server` and :func:`make_users` take it as ``code``."""
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{commit}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = ROOT / "bench" / "out" / f"code-{sha[:12]}"
    if not (tree / "service").is_dir():
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--force", str(tree), sha],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
    return tree


def _code_env(code: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code), "AGNES_BENCH_CODE": str(code)}


def make_users(data_dir: Path, emails: list[str], code: Path = CODE) -> dict[str, tuple[str, str]]:
    """Users with one token each, made before a server takes the data dir, through the
    functions behind ``agnes-activity users add`` / ``tokens create``: email → (user id,
    token). 50 to a transaction (one each is 15 ms a user; all in one grows quadratically).
    With another checkout's ``code``, that code makes them (its schema, in a subprocess)."""
    if code != CODE:
        made = subprocess.run(
            [sys.executable, __file__, "make-users", str(data_dir)],
            input=json.dumps(emails),
            capture_output=True,
            text=True,
            check=True,
            cwd=code,
            env=_code_env(code),
        ).stdout
        return {email: (ids[0], ids[1]) for email, ids in json.loads(made).items()}
    try:
        from service import operations
    except ImportError:  # a baseline's code from before the operations module
        from service import admin as operations
    from service.settings import Settings, prepare_data_dir
    from service.store import Cursor, Store

    def add(cur: Cursor, batch: list[str]) -> dict[str, tuple[str, str]]:
        return {
            email: (operations.add_user(cur, email).id, operations.create_token(cur, email).token)
            for email in batch
        }

    settings = Settings(data_dir=data_dir)
    prepare_data_dir(settings)
    store = Store(settings.db_path)
    made: dict[str, tuple[str, str]] = {}
    try:
        for start in range(0, len(emails), 50):
            made |= store.write_sync(add, emails[start : start + 50])
    finally:
        store.close()
    return made


@dataclass
class Memory:
    rss_mb: float
    hwm_mb: float

    def __str__(self) -> str:
        return f"RSS {self.rss_mb:.1f} MB (peak {self.hwm_mb:.1f} MB)"


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class Server:
    """``agnes-activity serve`` on a free port, as an operator runs it (with ``code``: the
    ``service`` package of that checkout, e.g. a baseline's from :func:`code_at`)."""

    def __init__(
        self, data_dir: Path, code: Path = CODE, env: dict[str, str] | None = None
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", "0", "--data-dir", str(data_dir)],
            stderr=subprocess.PIPE,
            text=True,
            cwd=code,
            env={**_code_env(code), **(env or {})},
        )
        assert self.process.stderr is not None
        url = re.search(r"(http://\S+)/me/activity", self.process.stderr.readline())
        assert url, "server did not announce its URL"
        self.base = url.group(1)
        self.ws_url = "ws" + self.base.removeprefix("http") + "/api/me/live"
        self.log: list[str] = []  # read all along: a full pipe would stall the server
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + 30
        while httpx.get(self.base + "/api/health").status_code != 200:
            assert time.monotonic() < deadline, "server never became healthy"
            time.sleep(0.1)

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line.rstrip())

    def memory(self) -> Memory:
        """The server's resident memory now and at its peak (VmRSS, VmHWM), with any child
        processes' added (it has none today)."""
        pids = [self.process.pid, *_children(self.process.pid)]
        return Memory(
            sum(_status_kb(p, "VmRSS") for p in pids) / 1024,
            sum(_status_kb(p, "VmHWM") for p in pids) / 1024,
        )

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_files(self) -> str:
        """Open files now, and the process's own limit (raised by ``serve`` at start-up)."""
        limit = "?"
        for line in Path(f"/proc/{self.process.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                limit = f"{int(line.split()[3]):,}"
        return f"{len(os.listdir(f'/proc/{self.process.pid}/fd')):,} open files (limit {limit})"

    def timers(self) -> dict[str, tuple[float, float]]:
        """The server's own timers from /metrics: name → (sum of seconds, count)."""
        found: dict[str, tuple[float, float]] = {}
        text = httpx.get(self.base + "/metrics").text
        for name, metric in (
            ("lag", "agnes_ingest_lag_seconds"),
            ("batch", "agnes_ingest_batch_seconds"),
            ("push", "agnes_push_seconds"),
        ):
            total = re.search(rf"^{metric}_sum (\S+)$", text, re.M)
            count = re.search(rf"^{metric}_count (\S+)$", text, re.M)
            assert total and count, f"no {metric} in /metrics"
            found[name] = (float(total.group(1)), float(count.group(1)))
        return found

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def transcript(n: int) -> bytes:
    """One response, stamped now: the sessions tab lists newest first, 50 to a page."""
    from service.synthetic.lines import response  # this checkout's, whatever CODE runs

    return response(f"bench-{n}", n, cwd="/w")


def shows_processed(message: dict[str, Any], name: str) -> bool:
    rows = message.get("tabs", {}).get("sessions", {}).get("rows", [])
    return any(r["session_file"] == name and r["processed"] for r in rows)


async def wait_for(ws: websockets.ClientConnection, name: str, first: list[float]) -> float:
    """perf_counter() when an update shows ``name`` processed; appends the first update's."""
    while True:
        message = json.loads(await ws.recv())
        if message["type"] == "ping":
            await ws.send('{"type": "pong"}')
        if message["type"] not in ("update", "snapshot"):
            continue
        now = time.perf_counter()
        if not first:
            first.append(now)
        if shows_processed(message, name):
            return now


@dataclass
class Timing:
    """Milliseconds from sending an upload to its 200, to the socket's first update after
    it, and to the update that shows it processed with its tokens."""

    answered: float
    first: float
    processed: float


async def timed_upload(
    http: httpx.AsyncClient, ws: websockets.ClientConnection, name: str, n: int
) -> Timing:
    first: list[float] = []
    waiter = asyncio.ensure_future(wait_for(ws, name, first))
    body = transcript(n)
    sent = time.perf_counter()
    response = await http.post("/api/upload/sessions", files={"file": (name, body)})
    answered = time.perf_counter()
    assert response.status_code == 200, response.text
    done = await asyncio.wait_for(waiter, 30)
    return Timing((answered - sent) * 1000, (first[0] - sent) * 1000, (done - sent) * 1000)


# -- the fleet: the controller's side ------------------------------------------------------


class Fleet:
    """Idle sockets held by ``processes`` helper processes; ``open`` adds sockets."""

    def __init__(
        self, ws_url: str, processes: int, concurrency: int = 25, deflate: bool = True
    ) -> None:
        self.ws_url = ws_url
        self.concurrency = concurrency
        self.deflate = deflate
        self.helpers = [
            subprocess.Popen(
                [sys.executable, __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for _ in range(processes)
        ]
        self._next = 0

    def _ask_all(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for helper, command in zip(self.helpers, commands, strict=True):
            assert helper.stdin is not None
            helper.stdin.write(json.dumps(command) + "\n")
            helper.stdin.flush()
        answers = []
        for helper in self.helpers:
            assert helper.stdout is not None
            line = helper.stdout.readline()
            assert line, f"socket helper {helper.pid} died"
            answers.append(json.loads(line))
        return answers

    def open(self, tokens: list[tuple[str, str]]) -> dict[str, Any]:
        """Open one socket per (token, tag), dealt out round-robin; returns the totals:
        opened, failed (by error), snapshots received, seconds taken."""
        shares: list[list[tuple[str, str]]] = [[] for _ in self.helpers]
        for entry in tokens:
            shares[self._next % len(self.helpers)].append(entry)
            self._next += 1
        started = time.perf_counter()
        answers = self._ask_all(
            [
                {
                    "cmd": "open",
                    "url": self.ws_url,
                    "tokens": share,
                    "concurrency": self.concurrency,
                    "deflate": self.deflate,
                }
                for share in shares
            ]
        )
        total: dict[str, Any] = {"opened": 0, "snapshots": 0, "failed": Counter()}
        for answer in answers:
            total["opened"] += answer["opened"]
            total["snapshots"] += answer["snapshots"]
            total["failed"].update(answer["failed"])
        total["seconds"] = time.perf_counter() - started
        return total

    def report(self) -> dict[str, dict[str, int]]:
        """Per tag: sockets, still open, with a snapshot, with an update, messages by type."""
        merged: dict[str, Counter[str]] = {}
        for answer in self._ask_all([{"cmd": "report"}] * len(self.helpers)):
            for tag, counts in answer.items():
                merged.setdefault(tag, Counter()).update(counts)
        return {tag: dict(counts) for tag, counts in merged.items()}

    def close(self) -> None:
        for helper in self.helpers:
            if helper.poll() is None:
                assert helper.stdin is not None
                helper.stdin.write(json.dumps({"cmd": "close"}) + "\n")
                helper.stdin.flush()
        for helper in self.helpers:
            try:
                helper.wait(timeout=60)
            except subprocess.TimeoutExpired:
                helper.kill()


# -- the fleet: a helper process's side ----------------------------------------------------


@dataclass(eq=False)
class Held:
    tag: str
    counts: Counter[str] = field(default_factory=Counter)
    closed: bool = False


async def _keep(ws: websockets.ClientConnection, held: Held) -> None:
    try:
        async for raw in ws:
            kind = json.loads(raw).get("type", "?")
            held.counts[kind] += 1
            if kind == "ping":
                await ws.send('{"type": "pong"}')
    except websockets.ConnectionClosed:
        pass
    held.closed = True


async def _helper() -> None:
    raise_open_file_limit()
    held: list[Held] = []
    sockets: list[websockets.ClientConnection] = []
    tasks: set[asyncio.Task[None]] = set()
    reader = asyncio.StreamReader(limit=1 << 26)  # a command lists thousands of tokens
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def open_one(
        command: dict[str, Any],
        token: str,
        tag: str,
        gate: asyncio.Semaphore,
        tally: dict[str, Any],
    ) -> None:
        async with gate:
            try:
                ws = await websockets.connect(
                    command["url"],
                    additional_headers={"Authorization": f"Bearer {token}"},
                    compression="deflate" if command["deflate"] else None,
                    ping_interval=None,
                    open_timeout=300,
                    max_size=None,
                )
                first = json.loads(await asyncio.wait_for(ws.recv(), 300))
            except Exception as exc:
                tally["failed"][type(exc).__name__] += 1
                return
        one = Held(tag)
        one.counts[first["type"]] += 1
        tally["opened"] += 1
        tally["snapshots"] += first["type"] == "snapshot"
        held.append(one)
        sockets.append(ws)
        task = asyncio.create_task(_keep(ws, one))
        tasks.add(task)

    while line := await reader.readline():
        command = json.loads(line)
        if command["cmd"] == "open":
            tally: dict[str, Any] = {"opened": 0, "snapshots": 0, "failed": Counter()}
            gate = asyncio.Semaphore(command["concurrency"])
            await asyncio.gather(
                *(open_one(command, t, tag, gate, tally) for t, tag in command["tokens"])
            )
            answer: Any = tally
        elif command["cmd"] == "report":
            answer = {}
            for one in held:
                counts = answer.setdefault(one.tag, Counter())
                counts["sockets"] += 1
                counts["open"] += not one.closed
                counts["with_snapshot"] += one.counts["snapshot"] > 0
                counts["with_update"] += one.counts["update"] > 0
                for kind, n in one.counts.items():
                    counts[kind] += n
        else:
            break
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["make-users"]:
        print(json.dumps(make_users(Path(sys.argv[2]), json.loads(sys.stdin.read()))))
    else:
        asyncio.run(_helper())
