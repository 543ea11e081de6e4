"""How a per-user read decays as rows are added after the tables were put in user order,
and what keeping ``audit_events`` in that order costs (``service.store.layout``).

    python bench/layout.py [--runs 5] [--tails 1,5,20] [--work /tmp/agnes-layout-bench]
                           [--step-rows 8192] [--only-due]

On a copy of the 1,000-user database of ``bench/large_db.py`` (in ``--work``; the cached
one is never written), for the lightest, median and busiest user, each figure the median
(and the slowest) of ``--runs`` calls in ms with one DuckDB thread, as the server's
readers run, and the process's CPU time per call:

1. the reads with the tables as built (every per-user table in user order): a ``count(*)``
   of the user's rows in each table, and the first page of the sessions, tokens (30 days,
   UTC), queries and sync tabs, by the store functions the server calls;
2. the same after appending each of ``--tails`` row groups' worth of rows (122,880 each,
   cumulative) to each of the four tables, in time order, of random users (a sample of
   the table's own rows, so each user keeps its share), as months of uploads leave them;
3. ``audit_events`` written again in user order by the maintenance, step by step, with a
   thread meanwhile storing one audit event every 20 ms as ingest would (each write's wait
   against the same thread's waits before the rewrite), then the reads again; then as
   many events appended as make the table due (``service.store.layout.due``) and the
   rewrite again, as the server makes it (``--only-due``: only this, on a fresh copy);
4. the alternatives measured and not built: an index on ``user_id`` over events in time
   order (with DuckDB's index scan allowed, and not), and a tail of one row group
   re-sorted in place in each table (deleted and inserted again in one transaction).

Prints the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import large_db
from service.models import AuditEvent
from service.store import Store, audit, layout, stats

TABLES = {  # table: its key column (made unique again) and its time column
    "files": ("path", "first_seen_at"),
    "sessions": ("key", "started_at"),
    "usage_buckets": (None, "bucket"),
    "audit_events": ("id", "ts"),
}

Read = Callable[[duckdb.DuckDBPyConnection, str], object]


def reads() -> dict[str, Read]:
    def count(table: str) -> Read:
        return lambda cur, user: cur.execute(
            f"SELECT count(*) FROM {table} WHERE user_id = ?", [user]
        ).fetchall()

    return {
        **{f"count(*) {table}": count(table) for table in TABLES},
        "sessions first page": lambda cur, user: stats.sessions_page(cur, user, limit=50, offset=0),
        "tokens 30 days UTC": lambda cur, user: stats.token_stats(
            cur, user, window=stats.Window(), tz="UTC"
        ),
        "queries first page": lambda cur, user: audit.queries_page(cur, user, limit=50),
        "sync first page": lambda cur, user: audit.sync_page(cur, user, limit=50),
    }


def measure(
    conn: duckdb.DuckDBPyConnection, users: dict[str, str], runs: int
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """read → role → (median ms, slowest ms, median CPU ms)."""
    conn.execute("SET threads = 1")
    found: dict[str, dict[str, tuple[float, float, float]]] = {}
    for name, read in reads().items():
        found[name] = {}
        for role, user in users.items():
            cur = conn.cursor()
            read(cur, user)
            took, cpu = [], []
            for _ in range(runs):
                started, used = time.perf_counter(), time.process_time()
                read(cur, user)
                took.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - used) * 1000)
            cur.close()
            found[name][role] = (statistics.median(took), max(took), statistics.median(cpu))
    conn.execute("RESET threads")
    return found


def show(label: str, figures: dict[str, dict[str, tuple[float, float, float]]]) -> None:
    print(f"\n{label} (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    for name, by_role in figures.items():
        line = f"  {name:24}"
        for role, (median, slowest, cpu) in by_role.items():
            line += f"  {role} {median:6.1f} ({slowest:6.1f}) cpu {cpu:5.1f}"
        print(line, flush=True)


def append_tail(
    conn: duckdb.DuckDBPyConnection,
    rows: int,
    round_: int,
    base: datetime,
    tables: tuple[str, ...] = tuple(TABLES),
) -> None:
    """``rows`` more rows in each table, at its end, in time order: a random sample of its
    own rows (each user keeps its share) with new keys and times after ``base``."""
    for table in tables:
        key, when = TABLES[table]
        if table == "usage_buckets":
            replaced = [
                f"time_bucket(INTERVAL 15 MINUTE, $base + INTERVAL {round_} HOUR"
                f" + to_microseconds((hash(rowid, {round_}) % 3600000000)::BIGINT)) AS {when}"
            ]
        else:
            replaced = [
                f"$base + INTERVAL {round_} HOUR"
                f" + to_microseconds((hash(rowid, {round_}) % 3600000000)::BIGINT) AS {when}"
            ]
        if key is not None:
            replaced.append(f"{key} || '~' || rowid::VARCHAR || '~{round_}' AS {key}")
        conn.execute(
            f"INSERT INTO {table} SELECT * FROM (SELECT * REPLACE ({', '.join(replaced)})"
            f" FROM {table} USING SAMPLE reservoir({rows} ROWS) REPEATABLE ({round_}))"
            f" ORDER BY {when}",
            {"base": base},
        )
    conn.execute("CHECKPOINT")


def rewrite(store: Store, table: str, step_rows: int) -> dict[str, Any]:
    """``service.layout.rewrite``'s steps, synchronously, with a writer storing one audit
    event every 20 ms meanwhile; returns the holds and the writer's waits."""
    waits: list[float] = []
    stop = threading.Event()
    user = store.read_sync(lambda cur: cur.execute("SELECT min(id) FROM users").fetchone()[0])

    def ingest() -> None:
        while not stop.is_set():
            event = AuditEvent(
                id=str(uuid.uuid4()),
                timestamp=datetime.now(UTC),
                user_id=user,
                action="sync.trigger",
            )
            started = time.perf_counter()
            store.write_sync(audit.insert_fresh_events, [event])
            waits.append(time.perf_counter() - started)
            time.sleep(0.02)

    writer = threading.Thread(target=ingest)
    writer.start()
    time.sleep(5)
    before = len(waits)
    started, used = time.perf_counter(), time.process_time()
    plan = store.read_sync(layout.plan, table, step_rows)
    store.write_sync(layout.begin, plan)
    held = []
    for step in range(plan.steps):
        took = time.perf_counter()
        store.write_sync(layout.step, plan, step)
        held.append(time.perf_counter() - took)
        time.sleep(held[-1])
    took = time.perf_counter()
    store.write_sync(layout.finish, plan)
    finish = time.perf_counter() - took
    seconds = time.perf_counter() - started
    cpu = time.process_time() - used
    stop.set()
    writer.join()
    return {
        "steps": len(held),
        "held": held,
        "finish": finish,
        "seconds": seconds,
        "cpu": cpu,
        "waits before": waits[:before],
        "waits during": waits[before:],
    }


ORDERS = {
    "files": "user_id, first_seen_at",
    "sessions": "user_id, started_at",
    "usage_buckets": "user_id, bucket, session_file, model",
    "audit_events": "user_id, ts, id",
}


def in_place(conn: duckdb.DuckDBPyConnection) -> None:
    """The alternative measured and not built: the last row group's worth of each table
    deleted and written again in user order in one transaction (DuckDB then drops the
    emptied row groups at its next checkpoint). Returns nothing; prints the times."""
    print("\nalternative: the last 122,880 rows of a table re-sorted in place, one transaction")
    for table, order in ORDERS.items():
        row = conn.execute(f"SELECT max(rowid) + 1 - {layout.ROW_GROUP} FROM {table}").fetchone()
        assert row is not None
        started = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute(f"CREATE TEMP TABLE moving AS SELECT * FROM {table} WHERE rowid >= ?", row)
        conn.execute(f"DELETE FROM {table} WHERE rowid >= ?", row)
        conn.execute(f"INSERT INTO {table} SELECT * FROM moving ORDER BY {order}")
        conn.execute("DROP TABLE moving")
        statements = time.perf_counter() - started
        conn.execute("COMMIT")
        total = time.perf_counter() - started
        print(
            f"  {table:14} statements {statements:5.2f} s, commit {total - statements:5.2f} s:"
            f" the writer held {total:5.2f} s",
            flush=True,
        )


def index_scan(conn: duckdb.DuckDBPyConnection, users: dict[str, str], runs: int) -> None:
    """The other alternative: an ART index on ``user_id`` with DuckDB's index scan allowed
    for as many rows as the busiest user has, on the table left in time order."""
    conn.execute("CREATE TABLE audit_by_time AS SELECT * FROM audit_events ORDER BY ts, id")
    started = time.perf_counter()
    conn.execute("CREATE INDEX audit_by_time_user ON audit_by_time (user_id)")
    print(
        f"\nalternative: audit events in time order with an index on user_id"
        f" (made in {time.perf_counter() - started:.1f} s)"
    )
    conn.execute("SET threads = 1")
    for label, settings in (
        ("without index scans", ("SET index_scan_max_count = 0",)),
        (
            "with index scans",
            ("SET index_scan_max_count = 1000000", "SET index_scan_percentage = 1.0"),
        ),
    ):
        for setting in settings:
            conn.execute(setting)
        line = f"  count(*) {label:20}"
        for role, user in users.items():
            took = []
            for _ in range(runs + 1):
                started = time.perf_counter()
                conn.execute(
                    "SELECT count(*) FROM audit_by_time WHERE user_id = ?", [user]
                ).fetchall()
                took.append((time.perf_counter() - started) * 1000)
            line += f"  {role} {statistics.median(took[1:]):6.1f}"
        print(line, flush=True)
    conn.execute("RESET threads")
    conn.execute("DROP TABLE audit_by_time")


def timed_rewrite(path: Path, label: str, step_rows: int) -> None:
    store = Store(path)
    try:
        tail = store.read_sync(layout.tail_rows, "audit_events")
        print(f"\n{label}: audit_events tail before the rewrite: {tail:,} rows")
        report = rewrite(store, "audit_events", step_rows)
        tail = store.read_sync(layout.tail_rows, "audit_events")
        print(f"audit_events tail after: {tail:,} rows")
    finally:
        store.close()
    held = sorted(report["held"])
    print(
        f"rewrite of audit_events, {step_rows:,} rows a step: {report['steps']} steps in"
        f" {report['seconds']:.1f} s;"
        f" writer held per step: median {statistics.median(held) * 1000:.0f} ms,"
        f" p99 {held[int(0.99 * (len(held) - 1))] * 1000:.0f} ms, longest {held[-1] * 1000:.0f} ms;"
        f" swap {report['finish'] * 1000:.0f} ms; process CPU {report['cpu']:.0f} s"
    )
    for label in ("waits before", "waits during"):
        waits = sorted(report[label])
        print(
            f"  one-event write {label} the rewrite: {len(waits)} writes, median"
            f" {statistics.median(waits) * 1000:.1f} ms, p99"
            f" {waits[int(0.99 * (len(waits) - 1))] * 1000:.1f} ms,"
            f" longest {waits[-1] * 1000:.1f} ms",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tails", default="1,5,20", help="row groups appended, cumulative")
    parser.add_argument("--work", type=Path, default=Path("/tmp/agnes-layout-bench"))
    parser.add_argument("--step-rows", type=int, default=layout.STEP_ROWS)
    parser.add_argument(
        "--only-due",
        action="store_true",
        help="only the rewrite when due (no decay, no alternatives)",
    )
    args = parser.parse_args()
    tails = [] if args.only_due else [int(t) for t in args.tails.split(",")]
    root = large_db.build(large_db.parser().parse_args([]))
    meta = json.loads((root / "meta.json").read_text())
    users = {s["role"]: meta["users"][s["index"]]["id"] for s in meta["samples"]}
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / "activity.duckdb"
    for old in args.work.glob("activity.duckdb*"):
        old.unlink()
    started = time.perf_counter()
    shutil.copy(root / "data" / "activity.duckdb", path)
    print(f"{root.name} copied to {path} in {time.perf_counter() - started:.0f} s")
    conn = duckdb.connect(str(path))
    conn.execute("SET TimeZone = 'UTC'")
    if not args.only_due:
        show("as built, every per-user table in user order", measure(conn, users, args.runs))
    base = datetime.now(UTC) - timedelta(hours=30)
    done = 0
    for round_, tail in enumerate(tails):
        started = time.perf_counter()
        append_tail(conn, (tail - done) * layout.ROW_GROUP, round_ + 1, base)
        done = tail
        took = time.perf_counter() - started
        print(f"\nappended up to {tail} row groups a table in {took:.0f} s")
        show(f"{tail} row groups after the ordered part", measure(conn, users, args.runs))
    conn.close()

    if tails:
        timed_rewrite(path, "the tail above", args.step_rows)
        conn = duckdb.connect(str(path))
        conn.execute("SET TimeZone = 'UTC'")
        show(
            f"after the rewrite of audit_events (the other tables still {done} row groups behind)",
            measure(conn, users, args.runs),
        )
    else:
        conn = duckdb.connect(str(path))
    total = conn.execute("SELECT count(*) FROM audit_events").fetchone()
    assert total is not None
    due = max(layout.TAIL_ROWS, total[0] // layout.TAIL_SHARE)
    append_tail(conn, due, len(tails) + 1, base, ("audit_events",))
    conn.close()
    timed_rewrite(
        path,
        f"{due:,} events appended: the rewrite as the server makes it when due",
        args.step_rows,
    )
    if args.only_due:
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return
    conn = duckdb.connect(str(path))
    conn.execute("SET TimeZone = 'UTC'")
    index_scan(conn, users, args.runs)
    in_place(conn)
    conn.close()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
