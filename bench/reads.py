"""What one first request of a tab costs the database on the 1,000-user database: the
tokens answer (several time zones and windows, a project) and the sessions page, for the
lightest, median and busiest user, against the same run's baseline, the tokens answer as
it was read before ``usage_buckets`` (every winning entry of the user's history).

    python bench/reads.py [--runs 7]

The data dir comes from ``bench/large_db.py`` (built once and cached), opened read-only,
with one DuckDB thread per query as the server's readers run. Each figure is the median
(and the slowest) of ``--runs`` calls of the store function the server calls, in ms,
after one call to warm the cache, and the median CPU time of the process during a call
(with one DuckDB thread, what the read costs whatever else the machine runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import large_db
from service.store import stats

KATHMANDU, ST_JOHNS = "Asia/Kathmandu", "America/St_Johns"


def entries_baseline(cur: duckdb.DuckDBPyConnection, user_id: str, days: int, tz: str) -> None:
    """The tokens answer's reads before usage_buckets (the code of 3285cde): the window's
    days and the whole history's groupings, from every winning entry of the user."""
    sums = (
        "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),"
        " coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_creation_tokens), 0),"
        " round(fsum(cost_usd), 9), count(DISTINCT session_file)"
    )
    row = cur.execute(
        "SELECT timezone($tz, ((now() AT TIME ZONE $tz)::DATE - ($days - 1))::TIMESTAMP)",
        {"tz": tz, "days": days},
    ).fetchone()
    assert row is not None
    cur.execute(
        f"SELECT (ts AT TIME ZONE $tz)::DATE::VARCHAR AS day, {sums} FROM usage_entries"
        " WHERE user_id = $user AND winner AND ts >= $since GROUP BY day",
        {"tz": tz, "user": user_id, "since": row[0]},
    ).fetchall()
    cur.execute(
        f"""
        WITH g AS MATERIALIZED (
            SELECT GROUPING(session_file) = 0 AS by_file, GROUPING(model) = 0 AS by_model,
                   session_file, model, any_value(session_id) AS session_id, {sums},
                   bool_or(cost_usd IS NULL) AS unpriced,
                   sum(input_tokens + output_tokens + cache_read_tokens
                       + cache_creation_tokens) AS total
            FROM usage_entries WHERE user_id = $user AND winner
            GROUP BY GROUPING SETS ((session_file), (model), ())
        )
        SELECT * FROM g WHERE NOT by_file
        UNION ALL
        (SELECT * FROM g WHERE by_file ORDER BY total DESC, session_file LIMIT 10)
        """,
        {"user": user_id},
    ).fetchall()


def cases(project: str) -> dict[str, Callable[[Any, str], object]]:
    window = stats.Window

    def tokens(w: stats.Window, tz: str, key: str | None = None) -> Callable[[Any, str], object]:
        return lambda cur, user: stats.token_stats(cur, user, window=w, tz=tz, project=key)

    return {
        "tokens 30 days UTC": tokens(window(), "UTC"),
        f"tokens 30 days {KATHMANDU}": tokens(window(), KATHMANDU),
        f"tokens 365 days {ST_JOHNS}": tokens(window(days=365), ST_JOHNS),
        "tokens all days UTC": tokens(window(days=None, all=True), "UTC"),
        "tokens 2 months, one project": tokens(
            window(days=None, start="2026-09-01", end="2026-10-31"), "UTC", project
        ),
        "sessions first page": lambda cur, user: stats.sessions_page(cur, user, limit=50, offset=0),
        "baseline: tokens 30 days UTC from entries": lambda cur, user: entries_baseline(
            cur, user, 30, "UTC"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    root = large_db.build(large_db.parser().parse_args([]))
    meta = json.loads((root / "meta.json").read_text())
    conn = duckdb.connect(str(root / "data" / "activity.duckdb"), read_only=True)
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET threads = 1")
    users = {s["role"]: meta["users"][s["index"]]["id"] for s in meta["samples"]}
    project = "-home-analyst" + str(meta["samples"][1]["index"]) + "-work-churn-model"
    print(f"{root.name}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, read in cases(project).items():
        line = f"{name:44}"
        for role, user in users.items():
            cur = conn.cursor()
            read(cur, user)
            took, cpu = [], []
            for _ in range(args.runs):
                started, used = time.perf_counter(), time.process_time()
                read(cur, user)
                took.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - used) * 1000)
            line += (
                f"  {role} {statistics.median(took):6.1f} ({max(took):6.1f})"
                f" cpu {statistics.median(cpu):5.1f}"
            )
        print(line, flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
