"""A large data dir for the REST benchmark: 1,000 users, 1,000,000 sessions, 5,000,000 audit
events, built in a few minutes and cached under ``bench/out/``.

    python bench/large_db.py [--users 1000] [--sessions 1000000] [--events 5000000]
                             [--entries 8] [--seed 1] [--force] [--prune]

The schema comes from our own migrations (a :class:`~service.store.Store` opens the file),
users and their tokens from our own admin functions (so the token hashes are what the
server computes); the bulk rows are made by DuckDB from ``range()`` straight into our
tables, in time order, so every user's rows are spread over the whole file as they are
after months of live uploads (not clustered by user, which would flatter every query),
except ``files``, ``sessions`` and ``usage_buckets``, which are ordered by user as migration
0004 leaves them when it upgrades a database, and ``audit_events``, ordered by user as
migration 0005 leaves it (rows added after a migration go at the end; see ``layout.py``).

- sessions: one ``files`` row and one ``sessions`` row each (in one of six projects of
  its user), plus a subagent file for one session in five; ``--entries`` winning usage
  entries per session (and a losing copy of one entry in ten, as a replayed line leaves),
  over the last 365 days, on four models (one of them unpriced); the ``sessions`` row is
  the sum of its winning entries, as ingest writes it, and ``usage_buckets`` holds their
  sums as migration 0004 fills it.
- audit events: ``query.run``/``query.explain``/``query.export`` (60%), ``sync.trigger``,
  ``manifest.fetch``, ``session.upload`` (37%) and ``data.download`` (shown on no tab).
- users get a mildly skewed share (the busiest has about 3 times the median), and
  ``last_pull_at`` from their latest ``manifest.fetch``; every user's version is 1.
- blocks: made from the winning entries as migration 0003 makes them (the longest step).

The data dir is ``bench/out/large-<parameters>-v<schema>-<date>/data`` (timestamps end at
the build time, so the 30-day window is full; a dir from another day is rebuilt). When
only a dir of an older schema version of the same parameters and day is there, it is
copied and opened, so our migrations bring the copy up to date (about a minute on the
1,000-user database, against 14 for a build); ``--force`` builds anew. Dirs of other days
or versions are left alone (another run may be using one): ``--prune`` removes those that
no process has open.
``meta.json`` beside it holds each user's token, a service token, and the expected numbers
of three users (lightest, median, busiest) computed by SQL, which ``bench/rest.py`` checks
against the API. Transcript files are not written to ``user_sessions/``: only the database
matters to the stats endpoints.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from service import operations
from service.settings import Settings, prepare_data_dir
from service.store import Cursor, Store, blocks, usage
from service.store.migrations import available

OUT = Path(__file__).resolve().parent / "out"
SPAN_DAYS = 365
SKEW = 1.2
"""A user's share of rows: user k (0 = busiest) gets rows for x in [k/U, (k+1)/U) of x**SKEW."""

MODELS = [  # model, share of sessions (%), USD per million input/output/cache read/cache write
    ("claude-sonnet-4-5", 45, 3.0, 15.0, 0.3, 3.75),
    ("claude-opus-4-6", 35, 5.0, 25.0, 0.5, 6.25),
    ("claude-haiku-4-5", 19, 1.0, 5.0, 0.1, 1.25),
    ("claude-internal-preview", 1, None, None, None, None),  # unpriced
]


def parameters(args: argparse.Namespace) -> str:
    return f"large-u{args.users}-s{args.sessions}-e{args.events}-k{args.entries}-seed{args.seed}"


def key(args: argparse.Namespace, day: str) -> str:
    schema = available()[-1][0]  # a new migration changes the tables: build again
    return f"{parameters(args)}-v{schema}-{day}"


def uniform(expr: str, salt: str, seed: int) -> str:
    """SQL for a deterministic number in [0, 1) from ``expr``."""
    return f"((hash({expr}, '{salt}', {seed}) % 1000000007)::DOUBLE / 1000000007)"


def user_index(expr: str, salt: str, seed: int, users: int) -> str:
    return f"least({users - 1}, floor({users} * pow({uniform(expr, salt, seed)}, {SKEW})))::INT"


def make_accounts(cur: Cursor, users: int) -> dict[str, Any]:
    accounts = []
    for n in range(users):
        email = f"analyst{n:04d}@example.com"
        user = operations.add_user(cur, email)
        token = operations.create_token(cur, email, "bench").token
        accounts.append({"index": n, "id": user.id, "email": email, "token": token})
    operations.add_user(cur, "bench-service@example.com")
    service = operations.create_token(cur, "bench-service@example.com", "bench", None, True).token
    return {"users": accounts, "service_token": service}


def bulk_rows(cur: Cursor, args: argparse.Namespace, end: datetime) -> dict[str, float]:
    """Every bulk row, by SQL; returns seconds per table."""
    seed, users = args.seed, args.users
    begin = end - timedelta(days=SPAN_DAYS)
    span_us = SPAN_DAYS * 86_400 * 1_000_000
    timings: dict[str, float] = {}
    cur.execute(
        "CREATE TEMP TABLE bench_users AS SELECT (row_number() OVER (ORDER BY email) - 1)::INT"
        " AS idx, id FROM users WHERE email LIKE 'analyst%'"
    )
    cur.execute(
        "CREATE TEMP TABLE bench_models (idx INT, model VARCHAR, upto INT, p_in DOUBLE,"
        " p_out DOUBLE, p_read DOUBLE, p_write DOUBLE)"
    )
    upto = 0
    for n, (model, share, *prices) in enumerate(MODELS):
        upto += share
        cur.execute(
            "INSERT INTO bench_models VALUES (?, ?, ?, ?, ?, ?, ?)", [n, model, upto, *prices]
        )

    started = time.perf_counter()
    cur.execute(
        f"""
        CREATE TEMP TABLE bench_sessions AS
        WITH g AS (
            SELECT i,
                   {user_index("i", "user", seed, users)} AS uidx,
                   $begin::TIMESTAMPTZ + to_microseconds((i * ($span // $n))::BIGINT)
                       + to_microseconds((hash(i, 'jitter', {seed}) % 60000000)::BIGINT) AS started,
                   300 + (hash(i, 'duration', {seed}) % 7000)::INT AS seconds,
                   (hash(i, 'model', {seed}) % 100)::INT AS pick,
                   md5(i::VARCHAR || '-{seed}') AS h
            FROM range($n) r(i)
        )
        SELECT g.i, u.id AS user_id, g.started, g.seconds,
               g.started + to_seconds(g.seconds) AS ended,
               (SELECT model FROM bench_models m WHERE g.pick < m.upto ORDER BY m.upto LIMIT 1)
                   AS model,
               format('{{}}-{{}}-{{}}-{{}}-{{}}', h[1:8], h[9:12], h[13:16], h[17:20], h[21:32])
                   AS session_id,
               -- one of six projects per user, with the '_' and '.' real paths hold
               '/home/analyst' || g.uidx::VARCHAR || '/work/'
                   || ['churn_model', 'sales.v2', 'infra', 'q3_report.final', 'notebooks',
                       'ml-pipeline'][1 + (hash(g.i, 'project', {seed}) % 6)::INT] AS project
        FROM g JOIN bench_users u ON u.idx = g.uidx
        """,
        {"begin": begin, "span": span_us, "n": args.sessions},
    )
    timings["sessions (generated)"] = time.perf_counter() - started

    started = time.perf_counter()
    cur.execute(
        f"""
        INSERT INTO usage_entries
        WITH e AS (
            SELECT s.*, j,
                   -- one response in five from a helper model, as subagents do
                   CASE WHEN hash(s.i, j, 'helper', {seed}) % 5 = 0 THEN 'claude-haiku-4-5'
                        ELSE s.model END AS entry_model,
                   s.started + to_microseconds(s.seconds::BIGINT * 1000000 * j // $k) AS ts,
                   1 + (hash(s.i, j, 'in', {seed}) % 5000)::BIGINT AS inp,
                   10 + (hash(s.i, j, 'out', {seed}) % 4000)::BIGINT AS out,
                   (hash(s.i, j, 'read', {seed}) % 200000)::BIGINT AS rd,
                   (hash(s.i, j, 'write', {seed}) % 20000)::BIGINT AS wr,
                   unnest(CASE WHEN hash(s.i, j, 'dup', {seed}) % 10 = 0
                               THEN [true, false] ELSE [true] END) AS winner
            FROM bench_sessions s, range($k) r(j)
        )
        SELECT e.user_id, e.user_id || '/' || e.session_id || '.jsonl',
               e.j::VARCHAR || CASE WHEN e.winner THEN '' ELSE '-replayed' END,
               e.session_id || '.jsonl', e.session_id || '.jsonl',
               'msg_' || e.i::VARCHAR || '_' || e.j::VARCHAR,
               'req_' || e.i::VARCHAR || '_' || e.j::VARCHAR,
               e.session_id, e.ts, e.entry_model, e.inp, e.out, e.rd, e.wr, e.wr, 0, false, NULL,
               round((e.inp * m.p_in + e.out * m.p_out + e.rd * m.p_read + e.wr * m.p_write)
                     / 1e6, 9),
               e.winner,
               -- service.store.ingest.message_key, as migration 0002 computes it
               (md5_number_upper(e.user_id || '/msg_' || e.i::VARCHAR || '_' || e.j::VARCHAR)
                   >> 1)::BIGINT
        FROM e JOIN bench_models m ON m.model = e.entry_model
        ORDER BY e.ts, e.i, e.j
        """,
        {"k": args.entries},
    )
    timings["usage_entries"] = time.perf_counter() - started

    started = time.perf_counter()
    cur.execute(
        """
        INSERT INTO sessions
        SELECT s.user_id || '/' || s.session_id || '.jsonl',
               s.user_id, s.session_id || '.jsonl', s.session_id, s.started, s.ended,
               s.seconds * 6 // 10, s.seconds, 2 + $k // 2, $k, 3 * $k, s.i % 4,
               s.i % 3, (s.i % 5 = 0)::INT, 0, s.i % 2, ['Read', 'Edit', 'Bash'], []::VARCHAR[],
               s.model,
               t.inp, t.out, t.rd, t.wr, t.cost,
               NULL,  -- kept: the next update of the session finds it by a scan
               s.project, regexp_replace(s.project, '[^A-Za-z0-9]', '-', 'g')
        FROM bench_sessions s
        JOIN (SELECT session_file, sum(input_tokens) AS inp, sum(output_tokens) AS out,
                     sum(cache_read_tokens) AS rd, sum(cache_creation_tokens) AS wr,
                     round(fsum(cost_usd), 9) AS cost
              FROM usage_entries WHERE winner GROUP BY session_file) t
          ON t.session_file = s.session_id || '.jsonl'
        ORDER BY s.user_id, s.started  -- as migration 0004 leaves them
        """,
        {"k": args.entries},
    )
    cur.execute(
        """
        INSERT INTO files (path, user_id, name, session_file, is_subagent, size, read_offset,
                           fingerprint, state, status, error, lines, bad_lines, first_seen_at,
                           processed_at)
        SELECT user_id || '/' || name, user_id, name, session_id || '.jsonl', is_subagent,
               size, size, 'bench', NULL, 'processed', NULL, lines, 0, started,
               ended + INTERVAL 1 MINUTE
        FROM (
            SELECT *, session_id || '.jsonl' AS name, false AS is_subagent,
                   $k * 2600 AS size, $k * 3 AS lines
            FROM bench_sessions
            UNION ALL
            SELECT *, session_id || '.agent-' || substr(md5(session_id), 1, 8) || '.jsonl',
                   true, 9000, 12
            FROM bench_sessions WHERE i % 5 = 0
        )
        ORDER BY user_id, started, is_subagent  -- as migration 0004 leaves them
        """,
        {"k": args.entries},
    )
    timings["sessions + files"] = time.perf_counter() - started

    started = time.perf_counter()
    usage.rebuild(cur)  # as migration 0004 fills it, ordered by user
    timings["usage_buckets"] = time.perf_counter() - started

    started = time.perf_counter()
    cur.execute(
        f"""
        INSERT INTO audit_events
        WITH g AS (
            SELECT i,
                   {user_index("i", "euser", seed, users)} AS uidx,
                   $begin::TIMESTAMPTZ + to_microseconds((i * ($span // $n))::BIGINT)
                       + to_microseconds((hash(i, 'ejitter', {seed}) % 5000000)::BIGINT) AS ts,
                   (hash(i, 'action', {seed}) % 100)::INT AS a,
                   (hash(i, 'table', {seed}) % 40)::INT AS tbl,
                   md5(i::VARCHAR || '-e{seed}') AS h
            FROM range($n) r(i)
        )
        SELECT 'evt-{seed}-' || i::VARCHAR, ts, u.id,
               CASE WHEN a < 50 THEN 'query.run' WHEN a < 57 THEN 'query.explain'
                    WHEN a < 60 THEN 'query.export' WHEN a < 72 THEN 'sync.trigger'
                    WHEN a < 84 THEN 'manifest.fetch' WHEN a < 97 THEN 'session.upload'
                    ELSE 'data.download' END,
               CASE WHEN a < 60 OR a >= 97 THEN 'warehouse.sales.table_' || tbl::VARCHAR
                    WHEN a < 72 THEN 'workspace' WHEN a < 84 THEN 'manifest'
                    ELSE h[1:8] || '.jsonl' END,
               CASE WHEN a < 60
                    THEN '{{"rows":' || (hash(i, 'rows', {seed}) % 100000)::VARCHAR
                         || ',"sql":"select * from sales.table_' || tbl::VARCHAR
                         || ' where id > ' || (i % 1000)::VARCHAR || ' limit 100"}}'
                    WHEN a >= 84 AND a < 97
                    THEN '{{"size":' || (hash(i, 'size', {seed}) % 900000)::VARCHAR || '}}'
                    ELSE '{{}}' END,
               CASE WHEN hash(i, 'result', {seed}) % 33 = 0 THEN 'error' ELSE 'ok' END,
               round((hash(i, 'ms', {seed}) % 5000000)::DOUBLE / 1000, 3),
               CASE (i % 3) WHEN 0 THEN 'cli' WHEN 1 THEN 'api' ELSE 'notebook' END,
               '10.' || (hash(i, 'ip', {seed}) % 250)::VARCHAR || '.'
                   || (uidx % 250)::VARCHAR || '.' || (uidx // 250 + 1)::VARCHAR,
               format('{{}}-{{}}-{{}}-{{}}-{{}}', h[1:8], h[9:12], h[13:16], h[17:20], h[21:32]),
               ts + INTERVAL 1 SECOND
        FROM g JOIN bench_users u ON u.idx = g.uidx
        ORDER BY u.id, ts, i  -- as migration 0005 leaves them
        """,
        {"begin": begin, "span": span_us, "n": args.events},
    )
    # all of them in user order (service.store.layout)
    cur.execute(
        "UPDATE table_layout SET sorted_below = (SELECT count(*) FROM audit_events)"
        " WHERE table_name = 'audit_events'"
    )
    cur.execute(
        "UPDATE users SET last_pull_at = p.ts FROM (SELECT user_id, max(ts) AS ts"
        " FROM audit_events WHERE action = 'manifest.fetch' GROUP BY user_id) p"
        " WHERE users.id = p.user_id"
    )
    cur.execute("INSERT INTO user_versions SELECT id, 1 FROM users")
    timings["audit_events"] = time.perf_counter() - started

    started = time.perf_counter()
    blocks.rebuild(cur)  # as the migration that adds the table fills it
    timings["blocks"] = time.perf_counter() - started
    for table in ("bench_sessions", "bench_users", "bench_models"):
        cur.execute(f"DROP TABLE {table}")
    return timings


def expected_numbers(cur: Cursor, user_id: str) -> dict[str, Any]:
    """What the API must answer for ``user_id``, by plain SQL on the tables."""

    def one(sql: str, *params: object) -> Any:
        row = cur.execute(sql, [user_id, *params]).fetchone()
        return row[0] if row else None

    return {
        "sessions_total": one("SELECT count(*) FROM files WHERE user_id = ? AND NOT is_subagent"),
        "newest_session_file": one(
            "SELECT session_file FROM sessions WHERE user_id = ?"
            " ORDER BY started_at DESC, session_file DESC LIMIT 1"
        ),
        "tokens_total": int(
            one(
                "SELECT sum(input_tokens + output_tokens + cache_read_tokens"
                " + cache_creation_tokens) FROM usage_entries WHERE user_id = ? AND winner"
            )
        ),
        "query_events": one(
            "SELECT count(*) FROM audit_events WHERE user_id = ? AND starts_with(action, 'query.')"
        ),
        "newest_query_id": one(
            "SELECT id FROM audit_events WHERE user_id = ? AND starts_with(action, 'query.')"
            " ORDER BY ts DESC, id DESC LIMIT 1"
        ),
        "sync_events": one(
            "SELECT count(*) FROM audit_events WHERE user_id = ?"
            " AND action IN ('sync.trigger', 'manifest.fetch', 'session.upload')"
        ),
        "newest_sync_id": one(
            "SELECT id FROM audit_events WHERE user_id = ?"
            " AND action IN ('sync.trigger', 'manifest.fetch', 'session.upload')"
            " ORDER BY ts DESC, id DESC LIMIT 1"
        ),
    }


def sample_users(cur: Cursor, accounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lightest, the median and the busiest user by session count, with their numbers."""
    counts = dict(
        cur.execute("SELECT user_id, count(*) FROM sessions GROUP BY user_id ORDER BY 2").fetchall()
    )
    ranked = sorted(accounts, key=lambda a: counts.get(a["id"], 0))
    picks = {"lightest": ranked[0], "median": ranked[len(ranked) // 2], "busiest": ranked[-1]}
    return [
        {"role": role, "index": a["index"], **expected_numbers(cur, a["id"])}
        for role, a in picks.items()
    ]


def table_counts(cur: Cursor) -> dict[str, int]:
    tables = [
        "users",
        "tokens",
        "files",
        "sessions",
        "usage_entries",
        "usage_buckets",
        "audit_events",
        "blocks",
    ]
    return {t: int(cur.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}  # type: ignore[index]


def build(args: argparse.Namespace) -> Path:
    """The cached bench dir for these parameters (built now if missing); holds data/, meta.json."""
    day = datetime.now(UTC).date().isoformat()
    root = OUT / key(args, day)
    if (root / "meta.json").exists() and not args.force:
        return root
    others = [o for o in OUT.glob(f"{parameters(args)}-*") if o != root and "partial" not in o.name]
    older = [o for o in others if o.name.endswith(f"-{day}") and (o / "meta.json").exists()]
    if older and not args.force:
        upgrade(max(older, key=lambda o: o.name), root)
        if args.prune:
            prune(others)
        return root
    if args.prune:
        prune(others)
    data_dir = root / "data"
    settings = Settings(data_dir=data_dir)
    prepare_data_dir(settings)
    print(f"building {root} ...", file=sys.stderr)
    started = time.perf_counter()
    store = Store(settings.db_path)
    try:
        accounts = store.write_sync(make_accounts, args.users)
        made = time.perf_counter()
        end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        timings = store.write_sync(bulk_rows, args, end)
        samples = store.read_sync(sample_users, accounts["users"])
        counts = store.read_sync(table_counts)
    finally:
        store.close()
    total = time.perf_counter() - started
    meta = {
        "parameters": vars(args) | {"force": False},
        "built_at": datetime.now(UTC).isoformat(),
        "seconds": {"users and tokens": made - started, **timings, "total": total},
        "counts": counts,
        "database_bytes": settings.db_path.stat().st_size,
        "samples": samples,
        **accounts,
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=1))
    return root


def in_use(database: Path) -> bool:
    """Whether a process holds ``database`` open (DuckDB locks the file it opens)."""
    try:
        fd = os.open(database, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def prune(others: list[Path]) -> None:
    """Remove other days' and versions' dirs of these parameters that nobody has open."""
    for old in others:
        if in_use(old / "data" / "activity.duckdb"):
            print(f"kept {old}: a process has its database open", file=sys.stderr)
        else:
            print(f"removing {old}", file=sys.stderr)
            shutil.rmtree(old)


def upgrade(older: Path, root: Path) -> Path:
    """``root`` as a copy of ``older`` (same parameters and day, an older schema), brought
    up to date by our migrations, as a database in use is upgraded."""
    print(f"copying {older} and migrating it to {root} ...", file=sys.stderr)
    started = time.perf_counter()
    scratch = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.copytree(older / "data", scratch / "data")
    store = Store(Settings(data_dir=scratch / "data").db_path)
    try:
        if not store.read_sync(table_counts)["blocks"]:
            # a copy built before this script filled the blocks (the schema had the table)
            store.write_sync(blocks.rebuild)
        counts = store.read_sync(table_counts)
    finally:
        store.close()
    meta = json.loads((older / "meta.json").read_text())
    meta["counts"] = counts
    meta["database_bytes"] = (scratch / "data" / "activity.duckdb").stat().st_size
    meta["migrated_from"] = older.name
    meta["seconds"]["migration"] = time.perf_counter() - started
    (scratch / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        scratch.rename(root)
    except OSError:  # another run made it meanwhile
        shutil.rmtree(scratch)
    return root


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--sessions", type=int, default=1_000_000)
    p.add_argument("--events", type=int, default=5_000_000)
    p.add_argument("--entries", type=int, default=8, help="winning usage entries per session")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument(
        "--prune", action="store_true", help="remove other days' and versions' dirs not in use"
    )
    return p


def main() -> None:
    args = parser().parse_args()
    root = build(args)
    meta = json.loads((root / "meta.json").read_text())
    print(f"data dir: {root / 'data'}")
    print("rows:", ", ".join(f"{t} {n:,}" for t, n in meta["counts"].items()))
    print(f"database: {meta['database_bytes'] / 2**20:,.0f} MiB")
    print("build seconds:", ", ".join(f"{k} {v:.1f}" for k, v in meta["seconds"].items()))
    for s in meta["samples"]:
        print(
            f"  {s['role']:8} user {s['index']:4}: {s['sessions_total']:,} sessions,"
            f" {s['query_events']:,} query events, {s['sync_events']:,} sync events"
        )


if __name__ == "__main__":
    main()
