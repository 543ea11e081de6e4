"""What one first request of a tab costs on the 1,000-user database, for the lightest,
median and busiest user: every tab's first page (tokens also in other time zones and
windows, and for one project), each against the same read of a baseline commit's code
(default 91abb8d, before the reads were made cheaper) in the same run.

    python bench/reads.py [--runs 7] [--baseline 91abb8d]

The data dir comes from ``bench/large_db.py`` (built once and cached), opened read-only,
with one DuckDB thread per query as the server's readers run. The baseline's
``service/store/{stats,audit,blocks}.py`` are taken from git (``git show``) and run in
this process on the same connection, so both read the same pages of the same file. Each
figure is the median (and the slowest) wall time of ``--runs`` calls of the store
function the server calls, in ms, after one call to warm the cache, and the median CPU
time of the process during a call (with one DuckDB thread, what the read costs whatever
else the machine runs); baseline and current calls alternate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import large_db
from service.store import audit, blocks, stats

KATHMANDU, ST_JOHNS = "Asia/Kathmandu", "America/St_Johns"
MODULES = ("stats", "audit", "blocks")


def code_at(commit: str) -> dict[str, types.ModuleType]:
    """The store modules that make the tabs' answers as they were at ``commit`` (each
    executed from git's copy as a module of its own; what they import comes from this
    tree)."""
    modules = {}
    for name in MODULES:
        source = subprocess.run(
            ["git", "show", f"{commit}:service/store/{name}.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        module = types.ModuleType(f"baseline_{name}")
        exec(compile(source, f"{commit}:service/store/{name}.py", "exec"), module.__dict__)
        modules[name] = module
    return modules


Read = Callable[[Any, str], object]


def cases(project: str, code: dict[str, Any]) -> dict[str, Read]:
    """Each first request the bench times, made by ``code``'s store modules."""
    s, a, b = code["stats"], code["audit"], code["blocks"]

    def tokens(w: Any, tz: str, key: str | None = None) -> Read:
        return lambda cur, user: s.token_stats(cur, user, window=w, tz=tz, project=key)

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return {
        "tokens 30 days UTC": tokens(s.Window(), "UTC"),
        f"tokens 30 days {KATHMANDU}": tokens(s.Window(), KATHMANDU),
        f"tokens 365 days {ST_JOHNS}": tokens(s.Window(days=365), ST_JOHNS),
        "tokens all days UTC": tokens(s.Window(days=None, all=True), "UTC"),
        "tokens 2 months, one project": tokens(
            s.Window(days=None, start="2026-09-01", end="2026-10-31"), "UTC", project
        ),
        "sessions first page": lambda cur, user: s.sessions_page(cur, user, limit=50, offset=0),
        "queries first page": lambda cur, user: a.queries_page(cur, user, limit=50),
        "sync first page": lambda cur, user: a.sync_page(cur, user, limit=50),
        "blocks first page (3 days)": lambda cur, user: b.block_stats(
            cur, user, days=3, tz="UTC", token_limit=None, now=now
        ),
    }


def timed(read: Read, cur: Any, user: str) -> tuple[float, float]:
    started, used = time.perf_counter(), time.process_time()
    read(cur, user)
    cur.abort()  # as the server's readers end every read (an unfinished result)
    return (time.perf_counter() - started) * 1000, (time.process_time() - used) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", default="91abb8d", help="commit whose reads to compare")
    parser.add_argument("--only", default="", help="run only the cases whose name has this")
    args = parser.parse_args()
    root = large_db.build(large_db.parser().parse_args([]))
    meta = json.loads((root / "meta.json").read_text())
    conn = duckdb.connect(str(root / "data" / "activity.duckdb"), read_only=True)
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET threads = 1")
    users = {s["role"]: meta["users"][s["index"]]["id"] for s in meta["samples"]}
    project = "-home-analyst" + str(meta["samples"][1]["index"]) + "-work-churn-model"
    current = cases(project, {"stats": stats, "audit": audit, "blocks": blocks})
    baseline = cases(project, code_at(args.baseline))
    print(f"{root.name}; baseline {args.baseline}; {args.runs} runs")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'':30}" + "".join(f"  {role:>36}" for role in users))
    print(
        f"{'ms: wall median (max), CPU':30}"
        + "  {:>36}".format("now: wall (max) cpu | baseline cpu, x") * 3
    )
    for name, read in current.items():
        if args.only not in name:
            continue
        line = f"{name:30}"
        for user in users.values():
            cur = conn.cursor()
            old = baseline[name]
            timed(read, cur, user)
            timed(old, cur, user)
            took, cpu, old_cpu = [], [], []
            for _ in range(args.runs):
                wall, used = timed(read, cur, user)
                took.append(wall)
                cpu.append(used)
                old_cpu.append(timed(old, cur, user)[1])
            now_cpu, was_cpu = statistics.median(cpu), statistics.median(old_cpu)
            line += (
                f"  {statistics.median(took):5.1f} ({max(took):5.1f}) {now_cpu:5.1f}"
                f" | {was_cpu:5.1f}, {was_cpu / max(now_cpu, 0.01):4.1f}x"
            )
            cur.close()
        print(line, flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
