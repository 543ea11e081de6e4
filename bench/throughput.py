"""Upload throughput: a team's analysts sending small new transcripts at once, as many as
the server takes, and the upload's latency at half that rate.

Each of ``--analysts`` analysts sends new one-response transcripts (about 1 KB, a new file
each time, as the hook does for a new session) one after another, the next as soon as the
last is answered, for ``--seconds``. Counted: uploads answered 200 per second
("accepted"), and uploads processed per second: from the first upload sent until the
server's ``/metrics`` has counted the lines of every one (its ingest committed them), and
each analyst's sessions tab then lists every file it sent as processed. Then the same
analysts send at half the accepted rate, open-loop (an upload every 2/rate seconds,
whatever the answers do, each from the next analyst in turn), and the upload's 200 is timed.

    python bench/throughput.py [--analysts 20] [--seconds 10] [--runs 3] [--half-rate R]
                               [--baseline COMMIT] [--with-sockets]

``--with-sockets`` opens each analyst's dashboard socket for the whole run (reading every
update). ``--baseline COMMIT`` runs the same against that commit's code (a git worktree
under ``bench/out/``) after each run; its half-rate phase runs at half its own rate.
``--half-rate R`` fixes that rate instead (the same for both).

Targets (issue 12): at least 200 uploads/s accepted and processed with 20 analysts; upload
200 p99 at most 100 ms at half that rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from soak import response_line
from wsfleet import CODE, Server, code_at, loadavg, make_users, percentile


@dataclass
class Run:
    label: str
    accepted: float  # uploads/s answered 200
    processed: float  # uploads/s stored by ingest
    p50: float
    p99: float
    half_rate: float
    half_p50: float
    half_p99: float
    half_processed_p50: float
    cpu_ms: float  # server CPU per upload, flat out


async def lines_counted(http: aiohttp.ClientSession, base: str) -> float:
    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    match = re.search(r"^agnes_ingest_lines_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def upload(
    http: aiohttp.ClientSession, base: str, token: str, name: str, body: bytes
) -> float:
    """Milliseconds from sending the upload to its 200. A kept-alive connection the server
    closed just as it was reused (its idle timeout) is sent again, from the start."""
    for attempt in range(3):
        form = aiohttp.FormData()
        form.add_field("file", body, filename=name)
        sent = time.perf_counter()
        try:
            async with http.post(
                f"{base}/api/upload/sessions",
                data=form,
                headers={"Authorization": f"Bearer {token}"},
            ) as r:
                await r.read()
                assert r.status == 200, f"upload answered {r.status}"
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
            if attempt == 2:
                raise
            continue
        return (time.perf_counter() - sent) * 1000
    raise AssertionError("unreachable")


async def dashboard(http: aiohttp.ClientSession, ws_url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.ws_connect(ws_url, headers=headers, max_msg_size=0) as ws:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            if '"type":"ping"' in message.data:
                await ws.send_str('{"type": "pong"}')


async def wait_processed(
    http: aiohttp.ClientSession, base: str, target: float, timeout: float = 120
) -> float:
    """perf_counter() when the server has counted ``target`` lines."""
    deadline = time.perf_counter() + timeout
    while (await lines_counted(http, base)) < target:
        assert time.perf_counter() < deadline, "uploads never all processed"
        await asyncio.sleep(0.01)
    return time.perf_counter()


async def check_listed(
    http: aiohttp.ClientSession, base: str, accounts: list[tuple[str, str]], sent: list[int]
) -> None:
    """Every analyst's sessions tab lists every file it sent, processed."""
    for (_, token), count in zip(accounts, sent, strict=True):
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{base}/api/me/stats/sessions?limit=1", headers=headers) as r:
            page = json.loads(await r.read())
        assert page["total"] == count, f"{page['total']} sessions listed, {count} sent"
        assert all(row["pipeline_status"] == "processed" for row in page["rows"]), page


async def measure(args: argparse.Namespace, code: Path, label: str, half_rate: float | None) -> Run:
    data_dir = Path(tempfile.mkdtemp(prefix="agnes-throughput-")) / "data"
    emails = [f"analyst{n}@example.com" for n in range(args.analysts)]
    made = make_users(data_dir, emails, code)
    accounts = [made[e] for e in emails]
    server = Server(data_dir, code, env={"AGNES_SCAN_INTERVAL": "3600"})
    sockets: list[asyncio.Task[None]] = []
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=120)
        ) as http:
            if args.with_sockets:
                sockets = [
                    asyncio.create_task(dashboard(http, server.ws_url, token))
                    for _, token in accounts
                ]
            sent = [0] * args.analysts
            # warm up: one upload each, untimed
            await asyncio.gather(
                *(
                    upload(http, server.base, t, "warm.jsonl", response_line(n, 0, 0, 1024))
                    for n, (_, t) in enumerate(accounts)
                )
            )
            sent = [1] * args.analysts
            base_lines = await lines_counted(http, server.base)
            while base_lines < args.analysts:
                await asyncio.sleep(0.01)
                base_lines = await lines_counted(http, server.base)
            answered: list[float] = []
            cpu = server.cpu_seconds()
            started = time.perf_counter()
            stop = started + args.seconds

            async def flat_out(n: int, token: str) -> None:
                k = 0
                while time.perf_counter() < stop:
                    k += 1
                    body = response_line(n, k, 0, 1024)
                    answered.append(await upload(http, server.base, token, f"t-{k}.jsonl", body))
                    sent[n] += 1

            await asyncio.gather(*(flat_out(n, t) for n, (_, t) in enumerate(accounts)))
            accepted_at = time.perf_counter()
            total = sum(sent)
            done = await wait_processed(http, server.base, total)
            cpu_ms = (server.cpu_seconds() - cpu) * 1000 / (total - args.analysts)
            accepted = len(answered) / (accepted_at - started)
            processed = len(answered) / (done - started)
            await check_listed(http, server.base, accounts, sent)

            rate = half_rate or accepted / 2
            half: list[float] = []
            half_processed: list[float] = []
            interval = 1 / rate
            count = max(1, round(rate * args.seconds))
            lines_before = await lines_counted(http, server.base)

            async def paced(i: int) -> None:
                n = i % args.analysts
                await asyncio.sleep(max(0.0, first + i * interval - time.perf_counter()))
                body = response_line(n, 100_000 + i, 0, 1024)
                half.append(await upload(http, server.base, accounts[n][1], f"h-{i}.jsonl", body))
                sent[n] += 1

            first = time.perf_counter() + 0.05
            await asyncio.gather(*(paced(i) for i in range(count)))
            end = await wait_processed(http, server.base, lines_before + count)
            half_processed.append((end - (first + (count - 1) * interval)) * 1000)
            await check_listed(http, server.base, accounts, sent)
    finally:
        for task in sockets:
            task.cancel()
        server.stop()
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    result = Run(
        label=label,
        accepted=accepted,
        processed=processed,
        p50=statistics.median(answered),
        p99=percentile(answered, 99),
        half_rate=rate,
        half_p50=statistics.median(half),
        half_p99=percentile(half, 99),
        half_processed_p50=half_processed[0],
        cpu_ms=cpu_ms,
    )
    print(
        f"{label}: {args.analysts} analysts flat out: {accepted:.1f} uploads/s accepted,"
        f" {processed:.1f}/s processed, upload → 200 p50 {result.p50:.1f} ms,"
        f" p99 {result.p99:.1f} ms, server CPU {cpu_ms:.1f} ms per upload;"
        f" at {rate:.1f}/s: p50 {result.half_p50:.1f} ms, p99 {result.half_p99:.1f} ms"
        f" (the last one processed {result.half_processed_p50:.0f} ms after it was sent);"
        f" {loadavg()}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--analysts", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--half-rate", type=float, help="uploads/s of the latency phase")
    parser.add_argument("--with-sockets", action="store_true", help="every dashboard open")
    parser.add_argument("--baseline", help="a commit to run the same against, after each run")
    args = parser.parse_args()
    baseline = code_at(args.baseline) if args.baseline else None
    print(f"throughput: {loadavg()}", flush=True)
    ours: list[Run] = []
    theirs: list[Run] = []
    for run in range(args.runs):
        ours.append(asyncio.run(measure(args, CODE, f"run {run + 1}", args.half_rate)))
        if baseline is not None:
            label = f"baseline {args.baseline} run {run + 1}"
            theirs.append(asyncio.run(measure(args, baseline, label, args.half_rate)))

    def summary(label: str, runs: list[Run]) -> None:
        def med(name: str) -> float:
            return statistics.median(getattr(r, name) for r in runs)

        met = min(med("accepted"), med("processed")) >= 200 and med("half_p99") <= 100
        print(
            f"{label}, median of {len(runs)}: {med('accepted'):.1f} uploads/s accepted,"
            f" {med('processed'):.1f}/s processed, p50 {med('p50'):.1f} ms, p99 {med('p99'):.1f}"
            f" ms, server CPU {med('cpu_ms'):.1f} ms per upload; at {med('half_rate'):.1f}/s:"
            f" p50 {med('half_p50'):.1f} ms, p99 {med('half_p99'):.1f} ms"
            f"  (target ≥ 200/s accepted and processed, p99 ≤ 100 ms at half:"
            f" {'met' if met else 'MISSED'})"
        )

    print()
    summary("this checkout", ours)
    if theirs:
        summary(f"baseline {args.baseline}", theirs)
    print(loadavg())


if __name__ == "__main__":
    main()
