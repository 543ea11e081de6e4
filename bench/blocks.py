"""What keeping 5-hour blocks costs per change, on the 1,000-user database.

    python bench/blocks.py [--runs 25] [--batch 20] [--data DATA_DIR]

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
  ``token_limit=max``), computed once per change and minute, then served from memory;
- a batch: ``--batch`` users (the busiest down, every 50th) each with a change at their
  latest entry, as one ingest batch of a team's uploads brings them: one ``refresh`` for
  all of them, against the same-run baseline of one ``refresh`` per user (a batch each:
  what the users would cost without group commit). To compare with other code, run the
  script with ``PYTHONPATH`` pointing at a checkout of it.

``--data`` names another data dir (a copy: the writes are rolled back, but the database is
opened for writing).

Prints the load average first: the machine is shared, so compare figures of one run.
"""

from __future__ import annotations

import argparse
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
    args.add_argument("--batch", type=int, default=20, help="users changed in one batch")
    args.add_argument("--data", type=Path, help="a data dir to use instead of large_db.py's")
    options = args.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    data = options.data or build(large_parser().parse_args([])) / "data"
    conn = duckdb.connect(str(data / "activity.duckdb"))
    conn.execute("SET TimeZone = 'UTC'")
    cur = conn.cursor()
    ranked = cur.execute(
        "SELECT user_id, count(*) AS n, max(ts) FROM usage_entries WHERE winner"
        " GROUP BY user_id ORDER BY n, user_id"
    ).fetchall()
    print(
        f"database: {sum(r[1] for r in ranked):,} winning entries,"
        f" {cur.execute('SELECT count(*) FROM blocks').fetchone()[0]:,} blocks"  # type: ignore[index]
    )
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
    batch = {
        u: Span(*(latest.astimezone(UTC),) * 2) for u, _, latest in ranked[::-50][: options.batch]
    }
    together = timed(cur, runs, lambda: blocks.refresh(cur, batch))
    apart = timed(cur, runs, lambda: [blocks.refresh(cur, {u: s}) for u, s in batch.items()])
    print(f"\na batch of {len(batch)} users, each a change at their latest entry")
    print(f"  one refresh for all                           {ms(together)}")
    print(f"  baseline: one refresh per user                {ms(apart)}  ({apart / together:.1f}x)")
    conn.close()


if __name__ == "__main__":
    main()
