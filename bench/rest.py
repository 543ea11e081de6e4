"""REST under load on a large database: every ``GET /api/me/stats/*`` endpoint with 50
concurrent clients, warm (the answer is current) and cold (the first request after a change).

    python bench/rest.py [--runs 3] [--seconds 6] [--connections 50] [--cold-users 100]
                         [--endpoints sessions,tokens,queries,sync] [--identity]

The data dir comes from ``bench/large_db.py`` (1,000 users, 1,000,000 sessions, 5,000,000
audit events; built once and cached), copied for the run, and served by the real server
(``agnes-activity serve``) in its own process. The load comes from other processes: ``wrk``
(Debian's package) with ``bench/rest.lua`` for the warm runs and the baselines, and
aiohttp (the ``bench`` extra) for the cold requests, which must be timed one by one. Each
request is a different user's, with that user's token, and asks for gzip like a browser or
an HTTP library does (``--identity``: it does not).

Per endpoint and run:
- warm 200: every user's default answer once to fill the cache, then wrk for ``--seconds``
  asking for them again without ``If-None-Match`` (full bodies);
- warm 304: the same with each user's ETag in ``If-None-Match``;
- baseline, computed on every request: the same endpoint with a page size (tokens: days)
  that varies per request, so that every request is a cache miss and reads the database,
  which is the replaced service's shape; with 50 connections, and with one connection
  (one query at a time);
- cold: ``--cold-users`` users (others in each run) each get a change that touches every
  tab (a transcript upload, its ingest, and ``POST /api/audit/events`` with a query and a
  sync event), then each one's first request after it is timed, 50 at a time.

Printed: req/s, p50 and p99 of each, the medians of ``--runs`` runs, ratios to the baseline,
the targets (≥ 2,000 req/s and p99 ≤ 50 ms when current; p99 ≤ 50 ms for a first request
after a change), the server's RSS idle after start and after the runs, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import large_db
from service.synthetic.lines import response

ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).with_name("rest.lua")
ENDPOINTS = {
    "sessions": "/api/me/stats/sessions",
    "tokens": "/api/me/stats/tokens",
    "queries": "/api/me/stats/queries",
    "sync": "/api/me/stats/sync",
}
VARIED = {"sessions": "limit", "tokens": "days", "queries": "limit", "sync": "limit"}
"""The parameter the baseline varies per request, around its default, to miss the cache."""
DEFAULTS = {"limit": 50, "days": 30}
TARGET_RPS, TARGET_P99 = 2000.0, 50.0


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Figure:
    """One measurement: throughput and latency (ms)."""

    rps: float
    p50: float
    p99: float
    n: int
    note: str = ""


class Server:
    """``agnes-activity serve`` on a data dir, in its own process."""

    def __init__(self, data_dir: Path) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - open for the server's life
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("agnes-activity")), "serve", "--port", "0"],
            env={**os.environ, "AGNES_DATA_DIR": str(data_dir)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while True:
            self.log.seek(0)
            found = re.search(rb"serving (http://\S+)/me/activity", self.log.read())
            if found:
                self.url = found.group(1).decode()
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise RuntimeError(f"server did not start: {self.log.read().decode()}")
            time.sleep(0.1)

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(found.group(1)) / 1024 if found else 0.0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def quiet(http: aiohttp.ClientSession, url: str, seconds: float = 2.0) -> None:
    """Wait until ingest has had nothing to do for ``seconds``."""
    last, since = -1.0, time.monotonic()
    while True:
        batches = await metric(http, url, "agnes_ingest_batches_total")
        depth = await metric(http, url, "agnes_ingest_queue_depth")
        if batches != last or depth:
            last, since = batches, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
        await asyncio.sleep(0.2)


def session(connections: int, gzip: bool) -> aiohttp.ClientSession:
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=600),
    )


async def timed_gets(
    url: str, requests: list[tuple[str, str]], connections: int, gzip: bool
) -> tuple[Figure, list[tuple[int, str, Any]]]:
    """GET each (token, path) once, ``connections`` at a time: the figure, and each
    answer's status, ETag and JSON body (in request order)."""
    latencies: list[float] = []
    answers: list[tuple[int, str, Any]] = [(0, "", None)] * len(requests)
    todo = iter(enumerate(requests))
    async with session(connections, gzip) as http:

        async def worker() -> None:
            for n, (token, path) in todo:
                started = time.perf_counter()
                async with http.get(url + path, headers={"Authorization": f"Bearer {token}"}) as r:
                    body = await r.read()
                latencies.append((time.perf_counter() - started) * 1000)
                answers[n] = (r.status, r.headers.get("ETag", ""), body)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    figure = Figure(
        rps=len(requests) / elapsed,
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        n=len(requests),
    )
    return figure, answers


def wrk(url: str, lines: list[str], seconds: float, connections: int, gzip: bool) -> Figure:
    """wrk over the request list for ``seconds``."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(lines) + "\n")
    threads = min(2, connections)
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
    ]
    command += ["--timeout", "60s", "-s", str(LUA)]
    if gzip:
        command += ["-H", "Accept-Encoding: gzip"]
    command += [url, "--", listing.name]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    finally:
        os.unlink(listing.name)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    statuses = result["statuses"]
    note = ", ".join(f"{n} x {status}" for status, n in sorted(statuses.items()))
    if result["errors"] or result["timeouts"]:
        note += f"; {result['errors']} errors, {result['timeouts']} timeouts"
    return Figure(
        rps=result["requests"] / result["seconds"],
        p50=result["p50"],
        p99=result["p99"],
        n=result["requests"],
        note=note,
    )


def varied_requests(users: list[dict[str, Any]], endpoint: str, count: int) -> list[str]:
    """Request lines that each miss the cache: the varied parameter takes every value
    within ±20 of its default before a (user, value) pair comes again."""
    name = VARIED[endpoint]
    middle = DEFAULTS[name]
    pairs = [(u, v) for u in users for v in range(middle - 20, middle + 21) if v != middle]
    random.Random(endpoint).shuffle(pairs)
    return [f"{u['token']} {ENDPOINTS[endpoint]}?{name}={v}" for u, v in pairs[:count]]


def transcript(n: int) -> bytes:
    """A one-response transcript stamped now (the cold runs' change)."""
    return response(f"bench-cold-{n}", n, tokens=(100, 200, 300, 400), model="claude-sonnet-4-5")


async def change_everything(
    url: str, users: list[dict[str, Any]], service_token: str, run: int
) -> float:
    """A change to every tab of each user: an upload (and its ingest) and two audit events.
    Returns the seconds it took until ingest was quiet."""
    started = time.perf_counter()
    async with session(10, False) as http:
        semaphore = asyncio.Semaphore(10)

        async def upload(n: int, user: dict[str, Any]) -> None:
            form = aiohttp.FormData()
            form.add_field("file", transcript(run * 100_000 + n), filename=f"cold-{run}-{n}.jsonl")
            async with semaphore:
                headers = {"Authorization": f"Bearer {user['token']}"}
                async with http.post(f"{url}/api/upload/sessions", data=form, headers=headers) as r:
                    assert r.status == 200, await r.text()

        await asyncio.gather(*(upload(n, u) for n, u in enumerate(users)))
        await quiet(http, url)
        now = datetime.now(UTC).isoformat()
        events = [
            {"timestamp": now, "user_id": u["id"], "action": action, "resource": "bench"}
            for u in users
            for action in ("query.run", "sync.trigger")
        ]
        headers = {"Authorization": f"Bearer {service_token}"}
        async with http.post(f"{url}/api/audit/events", json=events, headers=headers) as r:
            assert r.status == 200, await r.text()
        await quiet(http, url)
    return time.perf_counter() - started


async def drain(url: str, user: dict[str, Any], endpoint: str) -> None:
    """Wait until the server has worked off what a run left queued: a request that misses
    the cache waits behind every read still waiting for a database thread."""
    name = VARIED[endpoint]
    probe = f"{ENDPOINTS[endpoint]}?{name}={DEFAULTS[name] + random.randint(21, 40)}"
    await timed_gets(url, [(user["token"], probe)], 1, False)


async def steady(
    url: str,
    users: list[dict[str, Any]],
    service_token: str,
    endpoints: list[str],
    gzip: bool,
    run: int,
) -> dict[str, list[float]]:
    """One change at a time, each followed at once by the first request of every tab it
    changed, timed, the way a dashboard that long-polls asks: an upload (the request goes
    when ``/api/me/live/poll`` says ingest has committed it) for sessions and tokens, and
    ``POST /api/audit/events`` (answered after the commit) for queries and sync."""
    times: dict[str, list[float]] = {e: [] for e in endpoints}
    async with session(4, gzip) as http:

        async def first_request(user: dict[str, Any], endpoint: str) -> None:
            headers = {"Authorization": f"Bearer {user['token']}"}
            started = time.perf_counter()
            async with http.get(url + ENDPOINTS[endpoint], headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status
            times[endpoint].append((time.perf_counter() - started) * 1000)

        for n, user in enumerate(users):
            headers = {"Authorization": f"Bearer {user['token']}"}
            if {"sessions", "tokens"} & set(endpoints):
                poll = f"{url}/api/me/live/poll?since=0&timeout=0"
                async with http.get(poll, headers=headers) as r:
                    version = (await r.json())["version"]
                form = aiohttp.FormData()
                body = transcript(900_000 + run * 10_000 + n)
                form.add_field("file", body, filename=f"steady-{run}-{n}.jsonl")
                async with http.post(f"{url}/api/upload/sessions", data=form, headers=headers):
                    pass
                # the upload is answered once the batch that read it commits (one new
                # version for both); the poll says so at once, as a dashboard learns it
                poll = f"{url}/api/me/live/poll?since={version}&timeout=30"
                async with http.get(poll, headers=headers) as r:
                    assert r.status == 200, r.status
                for endpoint in ("sessions", "tokens"):
                    if endpoint in endpoints:
                        await first_request(user, endpoint)
            if {"queries", "sync"} & set(endpoints):
                now = datetime.now(UTC).isoformat()
                events = [
                    {"timestamp": now, "user_id": user["id"], "action": a, "resource": "steady"}
                    for a in ("query.run", "sync.trigger")
                ]
                auth = {"Authorization": f"Bearer {service_token}"}
                async with http.post(f"{url}/api/audit/events", json=events, headers=auth) as r:
                    assert r.status == 200, await r.text()
                for endpoint in ("queries", "sync"):
                    if endpoint in endpoints:
                        await first_request(user, endpoint)
    return times


async def check_numbers(url: str, meta: dict[str, Any]) -> list[str]:
    """Each sample user's answers against the numbers large_db.py counted by SQL."""
    problems = []
    async with session(4, True) as http:
        for sample in meta["samples"]:
            user = meta["users"][sample["index"]]
            headers = {"Authorization": f"Bearer {user['token']}"}

            async def get(path: str, headers: dict[str, str] = headers) -> Any:
                async with http.get(url + path, headers=headers) as r:
                    return await r.json()

            sessions = await get("/api/me/stats/sessions")
            tokens = await get("/api/me/stats/tokens")
            queries = await get("/api/me/stats/queries")
            sync = await get("/api/me/stats/sync")
            seen = {
                "sessions_total": sessions["total"],
                "newest_session_file": sessions["rows"][0]["session_file"],
                "tokens_total": tokens["totals"]["total"],
                "newest_query_id": queries["rows"][0]["id"],
                "newest_sync_id": sync["rows"][0]["id"],
            }
            for name, value in seen.items():
                if value != sample[name]:
                    problems.append(f"{sample['role']} user: {name} {value} != {sample[name]}")
    return problems


async def fill(
    url: str, users: list[dict[str, Any]], endpoint: str, connections: int, gzip: bool
) -> list[str]:
    """Every user's default answer once (so the warm runs find them); their ETags."""
    requests = [(u["token"], ENDPOINTS[endpoint]) for u in users]
    _, answers = await timed_gets(url, requests, connections, gzip)
    assert all(status == 200 for status, _, _ in answers), {a[0] for a in answers}
    return [etag for _, etag, _ in answers]


def measure_run(
    args: argparse.Namespace, server: Server, meta: dict[str, Any], run: int
) -> dict[tuple[str, str], Figure]:
    users = meta["users"]
    figures: dict[tuple[str, str], Figure] = {}
    url, conns, gzip = server.url, args.connections, not args.identity
    for endpoint in args.endpoints:
        etags = asyncio.run(fill(url, users, endpoint, conns, gzip))
        plain = [f"{u['token']} {ENDPOINTS[endpoint]}" for u in users]
        figures[endpoint, "warm 200"] = wrk(url, plain, args.seconds, conns, gzip)
        tagged = [f"{line} {etag}" for line, etag in zip(plain, etags, strict=True)]
        figures[endpoint, "warm 304"] = wrk(url, tagged, args.seconds, conns, gzip)
        varied = varied_requests(users, endpoint, 20_000)
        figures[endpoint, "uncached"] = wrk(url, varied, args.seconds, conns, gzip)
        asyncio.run(drain(url, users[-1], endpoint))
        figures[endpoint, "uncached 1"] = wrk(url, varied[10_000:], args.seconds, 1, gzip)
        asyncio.run(drain(url, users[-1], endpoint))
        print(f"  run {run}, {endpoint}: warm and uncached done; {loadavg()}", flush=True)

    # cold, all at once: each request the first after a change, 50 in flight
    per_run = args.cold_users
    burst = users[run * per_run : (run + 1) * per_run]
    took = asyncio.run(change_everything(url, burst, meta["service_token"], run))
    print(f"  run {run}: {len(burst)} users changed in {took:.1f} s; {loadavg()}", flush=True)
    for endpoint in args.endpoints:
        requests = [(u["token"], ENDPOINTS[endpoint]) for u in burst]
        figure, answers = asyncio.run(timed_gets(url, requests, conns, gzip))
        assert all(status == 200 for status, _, _ in answers)
        figures[endpoint, "cold burst"] = figure

    # cold, one change at a time while 50 connections poll with current ETags at the
    # target rate (wrk pauses each connection: about 2,000 requests/s in all)
    probed = users[
        len(users) - (run + 1) * args.steady_users : len(users) - run * args.steady_users
    ]
    others = users[: len(users) - args.runs * args.steady_users]
    endpoint = args.endpoints[0]
    etags = asyncio.run(fill(url, others, endpoint, conns, gzip))
    background = [
        f"{u['token']} {ENDPOINTS[endpoint]} {etag}" for u, etag in zip(others, etags, strict=True)
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(background) + "\n")
    load = subprocess.Popen(
        ["wrk", "-t", "2", "-c", str(conns), "-d", "600s", "--timeout", "60s", "-s", str(LUA)]
        + (["-H", "Accept-Encoding: gzip"] if gzip else [])
        + [url, "--", listing.name, str(round(conns * 1000 / TARGET_RPS))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)
        started = time.perf_counter()
        times = asyncio.run(steady(url, probed, meta["service_token"], args.endpoints, gzip, run))
        elapsed = time.perf_counter() - started
    finally:
        load.send_signal(2)  # wrk prints its summary on SIGINT
        out, _ = load.communicate(timeout=30)
        os.unlink(listing.name)
    summary = json.loads(out.strip().splitlines()[-1])
    background_rps = summary["requests"] / summary["seconds"]
    for endpoint, values in times.items():
        figures[endpoint, "cold steady"] = Figure(
            rps=len(values) / elapsed,
            p50=percentile(values, 50),
            p99=percentile(values, 99),
            n=len(values),
            note=f"amid {background_rps:,.0f} req/s of 304s (p99 {summary['p99']:.1f} ms)",
        )
    return figures


def report(runs: list[dict[tuple[str, str], Figure]], args: argparse.Namespace) -> None:
    def med(endpoint: str, kind: str, field: str) -> float:
        return statistics.median(getattr(r[endpoint, kind], field) for r in runs)

    print(f"\nmedians of {len(runs)} runs, {args.connections} connections; {loadavg()}")
    print(f"{'endpoint':9} {'answer':11} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  vs baseline")
    for endpoint in args.endpoints:
        base_rps = med(endpoint, "uncached", "rps")
        base_p99 = med(endpoint, "uncached", "p99")
        for kind in ("warm 200", "warm 304", "cold burst", "cold steady", "uncached", "uncached 1"):
            rps, p50, p99 = (med(endpoint, kind, f) for f in ("rps", "p50", "p99"))
            ratio = ""
            if kind != "uncached":
                ratio = f"{rps / base_rps:7.1f}x req/s, p99 {p99 / base_p99:.3f}x"
            target = ""
            if kind.startswith("warm"):
                met = rps >= TARGET_RPS and p99 <= TARGET_P99
                target = f"  target ≥ {TARGET_RPS:,.0f} req/s, p99 ≤ {TARGET_P99:g}: " + (
                    "met" if met else "MISSED"
                )
            elif kind.startswith("cold"):
                target = f"  target p99 ≤ {TARGET_P99:g}: " + (
                    "met" if p99 <= TARGET_P99 else "MISSED"
                )
            print(f"{endpoint:9} {kind:11} {rps:8.0f} {p50:8.1f} {p99:8.1f}  {ratio}{target}")
    notes = [r[endpoint, "cold steady"].note for r in runs for endpoint in args.endpoints[:1]]
    print("cold steady: each change's first requests, one change at a time, " + "; ".join(notes))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=6.0, help="length of each wrk run")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--cold-users", type=int, default=100, help="users changed at once per run")
    p.add_argument(
        "--steady-users", type=int, default=50, help="users changed one at a time per run"
    )
    p.add_argument("--endpoints", default=",".join(ENDPOINTS))
    p.add_argument("--identity", action="store_true", help="ask for uncompressed answers")
    p.add_argument("--keep", action="store_true", help="leave the server running at the end")
    return p


def main() -> None:
    args = parser().parse_args()
    args.endpoints = args.endpoints.split(",")
    db_args = large_db.parser().parse_args([])
    root = large_db.build(db_args)
    meta = json.loads((root / "meta.json").read_text())
    changed = (args.cold_users + args.steady_users) * args.runs
    assert changed <= len(meta["users"]) // 2, "not enough users to change"
    data_dir = large_db.OUT / "rest-run" / "data"
    shutil.rmtree(data_dir.parent, ignore_errors=True)
    started = time.perf_counter()
    shutil.copytree(root / "data", data_dir)
    print(f"data dir {root.name} copied in {time.perf_counter() - started:.1f} s; {loadavg()}")
    started = time.perf_counter()
    server = Server(data_dir)
    print(
        f"server at {server.url} (pid {server.process.pid}) up in"
        f" {time.perf_counter() - started:.1f} s"
    )
    try:
        time.sleep(5)
        idle = server.rss_mb()
        print(f"idle RSS after start: {idle:.0f} MB")
        problems = asyncio.run(check_numbers(server.url, meta))
        print("numbers: " + ("; ".join(problems) if problems else "three users' answers equal SQL"))
        runs = []
        for run in range(args.runs):
            runs.append(measure_run(args, server, meta, run))
            for (endpoint, kind), f in runs[-1].items():
                print(
                    f"  run {run} {endpoint:8} {kind:10} {f.rps:7.0f} req/s p50 {f.p50:7.1f}"
                    f" p99 {f.p99:7.1f} ms ({f.n} requests{'; ' + f.note if f.note else ''})"
                )
        report(runs, args)
        time.sleep(5)
        print(
            f"RSS after the runs (5 s idle): {server.rss_mb():.0f} MB (idle after start"
            f" {idle:.0f} MB)"
        )
        if args.keep:
            print(f"server left running: {server.url}, pid {server.process.pid}")
            return
    finally:
        if not args.keep:
            server.stop()


if __name__ == "__main__":
    main()
