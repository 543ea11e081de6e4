"""Soak: a team's analysts re-uploading their growing transcripts for minutes on end, the
server's memory sampled all along.

Each analyst does what the Claude Code hook does after every response: the transcript
grows by one response (about ``--line-kb`` KB) and the whole file is uploaded again, as
fast as the server takes it (one upload in flight per analyst, the next sent when the
last is answered). Every ``--session-responses`` responses an analyst starts a new session
(a new file); 0 keeps one file growing for the whole run. ``--open`` of the analysts keep
their dashboard's socket open all along (reading every update and answering pings as a
browser tab does); the others have none, the usual case once uploads come from a hook.

    python bench/soak.py [--analysts 10] [--minutes 10] [--open 0.5] [--line-kb 1]
                         [--session-responses 500] [--runs 1] [--baseline COMMIT]
                         [--baseline-minutes M]

The server is ``agnes-activity serve`` in its own process on a fresh data dir. Its RSS
(``/proc/<pid>/status``) is sampled every second. Every 30 s a line shows RSS, uploads so
far and their rate, and what the server's ``/metrics`` says it holds (DuckDB's memory, the
answers kept in memory, users and change logs known to the hub), when it says so. At the
end of a run: peak RSS (VmHWM), RSS at half time and at the end (each the median of the
samples within 5 s of it), the growth between them, uploads, uploads/s, upload p50/p99,
errors, the database's and the archive's size, and the load average.

Targets (issue 12): 10 analysts for 10 minutes, half with the dashboard open: peak RSS
< 400 MB and growth < 10 % over the last half. ``--baseline COMMIT`` runs the same soak
against that commit's code (a git worktree under ``bench/out/``) after each run, for
``--baseline-minutes`` (default: ``--minutes``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from wsfleet import CODE, Server, code_at, loadavg, make_users, percentile

from service.synthetic.lines import response

MEMORY_METRICS = {
    "agnes_duckdb_memory_bytes": "duckdb",
    "agnes_answers_bytes": "answers",
    "agnes_known_users": "users",
}


def response_line(analyst: int, session: int, n: int, size: int) -> bytes:
    """One assistant response of about ``size`` bytes, stamped now."""
    return response(
        f"soak-{analyst}-{session}",
        n,
        tokens=(10 + n, 20, 30, 40 * n),
        model="claude-opus-4-6" if n % 4 else "claude-sonnet-4-5",
        size=size,
        cwd=f"/work/project-{analyst % 3}",
    )


@dataclass
class Tally:
    uploads: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    answered_ms: list[float] = field(default_factory=list)
    updates: int = 0


async def analyst(
    http: aiohttp.ClientSession,
    base: str,
    n: int,
    token: str,
    args: argparse.Namespace,
    stop: float,
    tally: Tally,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    body = bytearray()
    session, responses = 0, 0
    while time.monotonic() < stop:
        if args.session_responses and responses == args.session_responses:
            session, responses, body = session + 1, 0, bytearray()
        body += response_line(n, session, responses, args.line_kb * 1024)
        responses += 1
        form = aiohttp.FormData()
        form.add_field("file", bytes(body), filename=f"soak-{n}-{session}.jsonl")
        sent = time.perf_counter()
        try:
            async with http.post(f"{base}/api/upload/sessions", data=form, headers=headers) as r:
                await r.read()
                status = r.status
        except aiohttp.ClientError as exc:
            tally.errors[type(exc).__name__] = tally.errors.get(type(exc).__name__, 0) + 1
            await asyncio.sleep(0.1)
            continue
        if status != 200:
            tally.errors[str(status)] = tally.errors.get(str(status), 0) + 1
            continue
        tally.answered_ms.append((time.perf_counter() - sent) * 1000)
        tally.uploads += 1


async def dashboard(
    http: aiohttp.ClientSession, ws_url: str, token: str, stop: float, tally: Tally
) -> None:
    """A dashboard tab: reads every message, answers the server's pings."""
    headers = {"Authorization": f"Bearer {token}"}
    async with http.ws_connect(ws_url, headers=headers, max_msg_size=0) as ws:
        while time.monotonic() < stop:
            try:
                message = await ws.receive(timeout=max(0.1, stop - time.monotonic()))
            except TimeoutError:
                break
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            if '"type":"ping"' in message.data:
                await ws.send_str('{"type": "pong"}')
            elif '"type":"update"' in message.data:
                tally.updates += 1


async def server_memory(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """What the server's /metrics says it holds (nothing for code that does not say)."""
    try:
        async with http.get(f"{base}/metrics") as r:
            text = await r.text()
    except aiohttp.ClientError:
        return {}
    found = {}
    for metric, name in MEMORY_METRICS.items():
        match = re.search(rf"^{metric} (\S+)$", text, re.M)
        if match:
            found[name] = float(match.group(1))
    return found


def describe(memory: dict[str, float]) -> str:
    parts = []
    for name, value in memory.items():
        parts.append(f"{name} {value / 2**20:.1f} MB" if name != "users" else f"users {value:.0f}")
    return ", ".join(parts)


@dataclass
class Result:
    label: str
    seconds: float
    peak_mb: float
    mid_mb: float
    end_mb: float
    uploads: int
    p50: float
    p99: float
    errors: dict[str, int]
    updates: int
    samples: list[tuple[float, float]]

    @property
    def growth(self) -> float:
        return (self.end_mb - self.mid_mb) / self.mid_mb * 100


def around(samples: list[tuple[float, float]], t: float, width: float = 5.0) -> float:
    near = [rss for when, rss in samples if abs(when - t) <= width]
    return statistics.median(near or [min(samples, key=lambda s: abs(s[0] - t))[1]])


async def soak(args: argparse.Namespace, code: Path, minutes: float, label: str) -> Result:
    data_dir = Path(tempfile.mkdtemp(prefix="agnes-soak-")) / "data"
    emails = [f"analyst{n}@example.com" for n in range(args.analysts)]
    accounts = make_users(data_dir, emails, code)
    server = Server(data_dir, code)
    tally = Tally()
    samples: list[tuple[float, float]] = []
    seconds = minutes * 60
    try:
        connector = aiohttp.TCPConnector(limit=args.analysts * 2)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            started = time.monotonic()
            stop = started + seconds
            opened = round(args.analysts * args.open)
            tasks = [
                asyncio.create_task(
                    analyst(http, server.base, n, accounts[email][1], args, stop, tally)
                )
                for n, email in enumerate(emails)
            ]
            tasks += [
                asyncio.create_task(dashboard(http, server.ws_url, accounts[e][1], stop, tally))
                for e in emails[:opened]
            ]
            last_report, last_uploads = started, 0
            while time.monotonic() < stop:
                await asyncio.sleep(1)
                now = time.monotonic()
                samples.append((now - started, server.memory().rss_mb))
                if now - last_report >= 30 or now >= stop:
                    memory = await server_memory(http, server.base)
                    rate = (tally.uploads - last_uploads) / (now - last_report)
                    print(
                        f"  {label} {now - started:5.0f} s: RSS {samples[-1][1]:6.1f} MB,"
                        f" {tally.uploads:,} uploads ({rate:.0f}/s)"
                        + (f"; {describe(memory)}" if memory else "")
                        + f"; {loadavg()}",
                        flush=True,
                    )
                    last_report, last_uploads = now, tally.uploads
            await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        peak = server.memory().hwm_mb
        database = (data_dir / "activity.duckdb").stat().st_size / 2**20
        archive = sum(f.stat().st_size for f in (data_dir / "user_sessions").rglob("*"))
    finally:
        server.stop()
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    answered = tally.answered_ms or [0.0]
    result = Result(
        label=label,
        seconds=elapsed,
        peak_mb=peak,
        mid_mb=around(samples, seconds / 2),
        end_mb=around(samples, samples[-1][0]),
        uploads=tally.uploads,
        p50=statistics.median(answered),
        p99=percentile(answered, 99),
        errors=tally.errors,
        updates=tally.updates,
        samples=samples,
    )
    print(
        f"{label}: {args.analysts} analysts ({opened} with the dashboard open), {minutes:g} min:"
        f" peak RSS {result.peak_mb:.1f} MB; RSS {result.mid_mb:.1f} MB at half time,"
        f" {result.end_mb:.1f} MB at the end ({result.growth:+.1f} %);"
        f" {result.uploads:,} uploads ({result.uploads / elapsed:.1f}/s),"
        f" upload → 200 p50 {result.p50:.1f} ms, p99 {result.p99:.1f} ms;"
        f" {result.updates:,} updates on the open sockets; errors {result.errors or 'none'};"
        f" database {database:.1f} MB, archive {archive / 2**20:.1f} MB; {loadavg()}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--analysts", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--open", type=float, default=0.5, help="share with the dashboard open")
    parser.add_argument("--line-kb", type=int, default=1, help="size of one response")
    parser.add_argument(
        "--session-responses", type=int, default=500, help="responses per session file (0: one)"
    )
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--baseline", help="a commit to run the same soak against, after each")
    parser.add_argument("--baseline-minutes", type=float)
    args = parser.parse_args()
    baseline = code_at(args.baseline) if args.baseline else None
    print(f"soak: {loadavg()}", flush=True)
    ours: list[Result] = []
    theirs: list[Result] = []
    for run in range(args.runs):
        ours.append(asyncio.run(soak(args, CODE, args.minutes, f"run {run + 1}")))
        if baseline is not None:
            minutes = args.baseline_minutes or args.minutes
            label = f"baseline {args.baseline} run {run + 1}"
            theirs.append(asyncio.run(soak(args, baseline, minutes, label)))

    def summary(label: str, results: list[Result]) -> None:
        peak = statistics.median(r.peak_mb for r in results)
        growth = statistics.median(r.growth for r in results)
        rate = statistics.median(r.uploads / r.seconds for r in results)
        p99 = statistics.median(r.p99 for r in results)
        met = peak < 400 and growth < 10
        print(
            f"{label}, median of {len(results)}: peak RSS {peak:.1f} MB, growth over the last"
            f" half {growth:+.1f} %, {rate:.1f} uploads/s, upload p99 {p99:.1f} ms"
            f"  (target peak < 400 MB, growth < 10 %: {'met' if met else 'MISSED'})"
        )

    print()
    summary("this checkout", ours)
    if theirs:
        summary(f"baseline {args.baseline}", theirs)
    print(loadavg())


if __name__ == "__main__":
    main()
