"""Websocket capacity: how many sockets one server process holds, and what each costs.

Each run starts `agnes-activity serve` on a fresh data dir holding SOCKETS / PER_USER users
(one token each, made in bulk with the CLI's own functions), reads the idle server's memory,
then opens SOCKETS sockets from HELPERS helper processes and holds them for HOLD seconds.
It reports the server's VmRSS and VmHWM (/proc/<pid>/status) idle, with every socket held
and after they close, the memory per connection, how many sockets got their snapshot and
are still open at the end, and, while all are held, the time from an upload to the update
on one more socket of a user whose PER_USER other sockets are among the held ones (and
whether those got the updates too).

    python bench/ws_capacity.py [--sockets 5000] [--per-user 2] [--helpers 4] [--hold 30]
                                [--probes 20] [--runs 3] [--no-deflate]

Held sockets offer permessage-deflate as browsers do; --no-deflate shows what the
compression context (kept per socket for the connection's life) costs.

Target (issue 7): 5,000 sockets on one process under 1 GB RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import websockets
from wsfleet import (
    Fleet,
    Server,
    loadavg,
    make_users,
    percentile,
    raise_open_file_limit,
    timed_upload,
)

TARGET_MB = 1024.0


def settle(server: Server, seconds: float = 3.0) -> None:
    """Let start-up or a burst finish (reconciling scan, freed buffers) before reading."""
    time.sleep(seconds)


async def probe(server: Server, token: str, uploads: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        websockets.connect(server.ws_url, additional_headers=headers, max_size=None) as ws,
        httpx.AsyncClient(base_url=server.base, headers=headers, timeout=60) as http,
    ):
        await asyncio.wait_for(ws.recv(), 60)  # snapshot
        return [
            (await timed_upload(http, ws, f"probe-{n}.jsonl", n)).processed for n in range(uploads)
        ]


def one_run(
    args: argparse.Namespace, run: int, template: Path, accounts: dict[str, tuple[str, str]]
) -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(prefix="agnes-wscap-")) / "data"
    shutil.copytree(template, data_dir)
    tokens = [(accounts["probe@example.com"][1], "probe")] * args.per_user
    tokens += [
        (token, "other")
        for email, (_, token) in accounts.items()
        if email != "probe@example.com"
        for _ in range(args.per_user)
    ]
    tokens = tokens[: args.sockets]
    server = Server(data_dir)
    fleet = None
    try:
        settle(server)
        idle = server.memory()
        print(f"run {run}: idle server {idle}; {loadavg()}")
        fleet = Fleet(server.ws_url, args.helpers, deflate=not args.no_deflate)
        cpu = server.cpu_seconds()
        opened = fleet.open(tokens)
        cpu_per_connect = (server.cpu_seconds() - cpu) * 1000 / max(1, opened["opened"])
        assert opened["opened"], f"no socket opened: {dict(opened['failed'])}"
        connected = server.memory()
        failed = dict(opened["failed"]) or "none"
        print(
            f"  {opened['opened']:,} of {len(tokens):,} sockets open in {opened['seconds']:.1f} s"
            f" ({opened['opened'] / opened['seconds']:.0f}/s, server CPU"
            f" {cpu_per_connect:.1f} ms each),"
            f" {opened['snapshots']:,} snapshots, failed: {failed};"
            f" server {connected}, {server.open_files()}; {loadavg()}"
        )
        cpu = server.cpu_seconds()
        time.sleep(args.hold)
        idle_cpu = (server.cpu_seconds() - cpu) / args.hold * 100
        held = server.memory()
        latencies = asyncio.run(probe(server, accounts["probe@example.com"][1], args.probes))
        report = fleet.report()
        after = server.memory()
        per_conn_kb = (held.rss_mb - idle.rss_mb) * 1024 / max(1, opened["opened"])
        everyone = {k: sum(r.get(k, 0) for r in report.values()) for k in ("sockets", "open")}
        mine = report.get("probe", {})
        print(
            f"  held {args.hold:g} s: server {held}, {per_conn_kb:.1f} KB per socket over idle;"
            f" {everyone['open']:,} of {everyone['sockets']:,} still open;"
            f" {sum(r.get('ping', 0) for r in report.values()):,} pings answered;"
            f" the server used {idle_cpu:.1f}% of a core meanwhile"
        )
        print(
            f"  while held: upload → processed update on the probe socket"
            f" p50 {statistics.median(latencies):.1f} ms, p99 {percentile(latencies, 99):.1f} ms"
            f" ({len(latencies)} uploads); the user's {mine.get('sockets', 0)} held sockets"
            f" got {mine.get('update', 0)} updates, {mine.get('with_update', 0)} of them at least"
            f" one; server after: {after}; {loadavg()}"
        )
        fleet.close()
        fleet = None
        settle(server)
        print(f"  all closed: server {server.memory()}")
        return {
            "idle": idle.rss_mb,
            "held": held.rss_mb,
            "hwm": after.hwm_mb,
            "per_conn_kb": per_conn_kb,
            "opened": opened["opened"],
            "snapshots": opened["snapshots"],
            "open_at_end": everyone["open"],
            "connect_rate": opened["opened"] / opened["seconds"],
            "connect_cpu_ms": cpu_per_connect,
            "idle_cpu": idle_cpu,
            "p50": statistics.median(latencies),
            "p99": percentile(latencies, 99),
        }
    finally:
        if fleet is not None:
            fleet.close()
        server.stop()
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--per-user", type=int, default=2, help="sockets per user")
    parser.add_argument("--helpers", type=int, default=4, help="client processes")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds to hold them")
    parser.add_argument("--probes", type=int, default=20, help="uploads timed while held")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--no-deflate",
        action="store_true",
        help="held sockets do not offer permessage-deflate (browsers always do)",
    )
    args = parser.parse_args()
    print(f"open-file limit of this process and its helpers: {raise_open_file_limit():,}")
    others = -(-(args.sockets - args.per_user) // args.per_user)
    emails = ["probe@example.com"] + [f"idle{n}@example.com" for n in range(others)]
    template = Path(tempfile.mkdtemp(prefix="agnes-wscap-users-")) / "data"
    made = time.perf_counter()
    accounts = make_users(template, emails)
    print(f"{len(emails):,} users made in {time.perf_counter() - made:.1f} s (copied for each run)")
    try:
        runs = [one_run(args, n + 1, template, accounts) for n in range(args.runs)]
    finally:
        shutil.rmtree(template.parent, ignore_errors=True)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    verdict = "met" if med("held") < TARGET_MB else "MISSED"
    deflate = "without" if args.no_deflate else "with"
    print(
        f"\nmedian of {args.runs} runs, {args.sockets:,} sockets ({args.per_user} per user,"
        f" {deflate} permessage-deflate):"
    )
    print(f"  idle server RSS {med('idle'):.1f} MB")
    print(
        f"  with the sockets held: RSS {med('held'):.1f} MB"
        f" (target < {TARGET_MB:.0f} MB: {verdict}),"
        f" peak {med('hwm'):.1f} MB; {med('per_conn_kb'):.1f} KB per socket over idle"
    )
    print(
        f"  opened {med('opened'):,.0f}, snapshots {med('snapshots'):,.0f},"
        f" open at the end {med('open_at_end'):,.0f}; {med('connect_rate'):.0f} connects/s,"
        f" {med('connect_cpu_ms'):.1f} ms of server CPU each"
    )
    print(f"  server CPU while they idle: {med('idle_cpu'):.1f}% of a core (pings and pongs)")
    print(
        f"  upload → processed update while held: p50 {med('p50'):.1f} ms,"
        f" p99 {med('p99'):.1f} ms (latency targets with 2,000 sockets: p50 ≤ 50, p99 ≤ 150)"
    )
    print(f"  {loadavg()}")


if __name__ == "__main__":
    main()
