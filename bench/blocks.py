"""What keeping 5-hour blocks costs per change, on the 1,000-user database.

    python bench/blocks.py [--runs 25] [--users busiest,median]

Opens ``bench/large_db.py``'s data dir (built first if missing: 1,000 users, 8.8M usage
entries over a year, blocks filled as the migration fills them) and, for its busiest and
its median user, times (median of ``--runs``; every write in a transaction rolled back, so
the database is left as it was):

- ``refresh`` after a change at the user's latest entry (an append: the live pattern), the
  path ingest takes in every batch (``service.store.blocks.refresh``);
- ``refresh`` after a change 30 days back (an old session arriving late);
- the same-run baseline: that user's blocks made again from all their winning entries
  (``rebuild``), what a rule that re-read the history per change would cost;
- the answer behind ``/api/me/stats/blocks`` (``block_stats``: 3 days, and with
  ``token_limit=max``), computed once per change and minute, then served from memory.

Prints the load average first: the machine is shared, so compare figures of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from large_db import build
from large_db import parser as large_parser

from service.ingest.plan import Span
from service.store import blocks


def timed(cur: duckdb.DuckDBPyConnection, runs: int, work: Callable[[], Any]) -> float:
    """Median seconds of ``work`` inside a transaction that is rolled back each time."""
    seconds = []
    for _ in range(runs):
        cur.begin()
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
        cur.rollback()
    return statistics.median(seconds)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--runs", type=int, default=25)
    options = args.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    root = build(large_parser().parse_args([]))
    meta = json.loads((root / "meta.json").read_text())
    print(
        f"database: {meta['counts']['usage_entries']:,} usage entries,"
        f" {meta['counts']['blocks']:,} blocks; filling the blocks (as the migration does)"
        f" took {meta['seconds']['blocks']:.1f} s when it was built"
    )
    conn = duckdb.connect(str(root / "data" / "activity.duckdb"))
    conn.execute("SET TimeZone = 'UTC'")
    cur = conn.cursor()
    ranked = cur.execute(
        "SELECT user_id, count(*) AS n, max(ts) FROM usage_entries WHERE winner"
        " GROUP BY user_id ORDER BY n, user_id"
    ).fetchall()
    picks = {"busiest": ranked[-1], "median": ranked[len(ranked) // 2]}
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    runs = options.runs
    for role, (user_id, entries, latest) in picks.items():
        latest = latest.astimezone(UTC)
        old = latest - timedelta(days=30)
        stored = len(blocks.stored_blocks(cur, user_id))
        print(f"\n{role} user: {entries:,} winning entries, {stored:,} blocks")

        def refresh(at: datetime, user_id: str = user_id) -> None:
            blocks.refresh(cur, {user_id: Span(at, at)})

        live = timed(cur, runs, lambda: refresh(latest))  # noqa: B023
        late = timed(cur, runs, lambda: refresh(old))  # noqa: B023
        whole = timed(cur, max(3, runs // 5), lambda: blocks.rebuild(cur, [user_id]))  # noqa: B023
        print(f"  refresh, change at the latest entry (append) {ms(live)}")
        print(f"  refresh, change 30 days back                 {ms(late)}")
        print(f"  baseline: rebuild from every winning entry    {ms(whole)}  ({whole / live:.0f}x)")
        for limit in (None, "max"):

            def answer_of(limit: str | None = limit, user_id: str = user_id) -> None:
                blocks.block_stats(cur, user_id, days=3, tz="UTC", token_limit=limit, now=now)

            answer = timed(cur, runs, answer_of)
            print(f"  block_stats (3 days, token_limit={limit})      {ms(answer)}")
    conn.close()


if __name__ == "__main__":
    main()
