"""Incremental reads: what appending 1 KB to a 100 MB transcript costs, and 1 GB memory.

    /work/venv/bin/python bench/incremental.py [--size-mb 100] [--appends 25] [--rss-size-mb 1000]
                                               [--large DATA_DIR]

1. One transcript of ``--size-mb`` (the generated corpus's session files end to end, made
   once under ``bench/out/`` by ``parse_throughput.single_file``) is copied into a fresh
   data dir and ingested in this process (``Settings``, ``Store``, ``Ingest``).
2. ``--appends`` times: append 1 KB of complete lines (one real assistant response line
   with usage) and time ``Ingest.run([path])``, split into its phases: ``Ingest.jobs``
   (store reads of the file's offset, fingerprint and state), ``read_file`` (fingerprint
   check and parsing the new bytes) and ``store_results`` (``apply_batch``, one
   transaction, its parts timed by ``backfill.timed_parts``). Then as many appends timed
   as one plain ``Ingest.run`` call. Prints medians, and ``bytes`` from each
   ``BatchReport`` (must equal the appended bytes). Then ``--appends`` responses each
   written over two appends, a placeholder line and then the last line, timing the second
   (the stored placeholder copy stops counting, the new copy counts instead).
3. The result equals a full re-read: usage totals, the session row and the file's line
   counts after the appends are compared with those after ``reset_derived`` and a fresh
   ingest of the whole file, and the token totals grew by exactly what was appended.
With ``--large DATA_DIR`` (``bench/large_db.py``'s: 1,000 users, 8.8M usage entries, 1M
sessions) steps 1 to 3 run in a copy of that data dir instead of an empty one (opening it
runs any migration it lacks, timed), the transcript being a new session of its busiest
user: an append of new lines should cost about the same there, since every read and write
on its path goes by a one-column key.

4. Peak RSS of ``agnes-activity ingest`` of one ``--rss-size-mb`` transcript into a fresh
   data dir (target under 300 MB), via ``backfill.measure``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

from backfill import CLI, EMAIL, STORE_PARTS, fresh_data_dir, measure, timed_parts
from parse_throughput import single_file

from service.admin import open_store
from service.ingest.pipeline import BatchReport, Ingest, read_file
from service.settings import Settings
from service.store import Cursor, Store, users
from service.store.ingest import reset_derived
from service.synthetic.lines import assistant, jsonl

APPEND_BYTES = 1024
USAGE = {
    "input_tokens": 3,
    "cache_creation_input_tokens": 1_812,
    "cache_read_input_tokens": 48_230,
    "cache_creation": {"ephemeral_5m_input_tokens": 1_812, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 412,
    "service_tier": "standard",
}


def session_id_of(path: Path) -> str:
    with path.open("rb") as handle:
        for line in handle:
            try:
                found = msgspec.json.decode(line).get("sessionId")
            except (msgspec.DecodeError, AttributeError):
                continue
            if found:
                return str(found)
    raise SystemExit(f"no sessionId in {path}")


def response_line(
    session: str, index: int, moment: datetime, *, part: int = 0, output_tokens: int | None = None
) -> bytes:
    """One assistant line with usage, as Claude Code writes it, padded to exactly 1 KB:
    line ``part`` of response ``index`` (an early line of a response carries a placeholder
    ``output_tokens``)."""
    usage = USAGE if output_tokens is None else dict(USAGE, output_tokens=output_tokens)

    def build(text: str) -> bytes:
        return jsonl(
            assistant(
                uuid=str(uuid.UUID(int=(index + 1) * 10 + part)),
                ts=moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                message_id=f"msg_01Bench{index:016d}",
                request_id=f"req_011Bench{index:016d}",
                model="claude-sonnet-4-5-20250929",
                usage=usage,
                content=[{"type": "text", "text": text}],
                session=session,
            )
        )

    bare = build("")
    line = build("x" * (APPEND_BYTES - len(bare)))
    assert len(line) == APPEND_BYTES, len(line)
    return line


def snapshot(cur: Cursor, path: str) -> dict[str, Any]:
    """What a reader sees of the file: winning tokens per model, its session row, its counts."""
    return {
        "tokens": cur.execute(
            "SELECT model, sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens),"
            " sum(cache_read_tokens), count(*) FROM usage_entries WHERE winner AND file_path = ?"
            " GROUP BY model ORDER BY model",
            [path],
        ).fetchall(),
        "session": cur.execute(
            "SELECT * FROM sessions WHERE user_id || '/' || session_file = ?", [path]
        ).fetchall(),
        "file": cur.execute(
            "SELECT size, read_offset, lines, bad_lines, status FROM files WHERE path = ?", [path]
        ).fetchall(),
    }


def dir_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def touch_user(cur: Cursor, user_id: str) -> None:
    cur.execute("UPDATE users SET last_pull_at = last_pull_at WHERE id = ?", [user_id])


def timed_run(ingest: Ingest, path: Path) -> tuple[float, float, float, BatchReport]:
    """``Ingest.run([path])`` step by step: (store reads, read_file, store_results, report)."""
    started = time.perf_counter()
    jobs = ingest.jobs([path])
    listed = time.perf_counter()
    results = [read_file(job) for job in jobs]
    read = time.perf_counter()
    report = BatchReport()
    ingest.store_results(results, report)
    stored = time.perf_counter()
    return listed - started, read - listed, stored - read, report


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:6.2f} ms"


def busiest_user(cur: Cursor) -> str:
    row = cur.execute(
        "SELECT user_id FROM sessions GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1"
    ).fetchone()
    assert row is not None, "the large database has no sessions"
    return str(row[0])


def incremental(size_mb: int, appends: int, large: Path | None) -> None:
    source = single_file(size_mb)
    data = (OUT / "incremental-data").resolve()  # as ingest names files (bench/out: a link)
    if data.exists():
        shutil.rmtree(data)
    if large is not None:
        started = time.perf_counter()
        shutil.copytree(large, data)
        print(f"copied {large} ({dir_mb(data):,.0f} MB) in {time.perf_counter() - started:.1f} s")
    settings = Settings(data_dir=data)
    started = time.perf_counter()
    store: Store = open_store(settings)
    if large is not None:
        print(f"opened it (migrations included) in {time.perf_counter() - started:.1f} s")
    try:
        if large is None:
            user_id = store.write_sync(users.add_user, EMAIL).id
        else:
            user_id = store.read_sync(busiest_user)
            counts = store.read_sync(
                lambda cur: [
                    cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
                    for table in ("usage_entries", "sessions", "files")
                ]
            )
            print(
                "appending to a new session of the busiest user of a database with "
                f"{counts[0]:,} usage entries, {counts[1]:,} sessions, {counts[2]:,} files"
            )
        folder = settings.sessions_dir / user_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "bench-session.jsonl"
        shutil.copyfile(source, path)
        relative = f"{user_id}/{path.name}"
        ingest = Ingest(settings, store)
        started = time.perf_counter()
        first = ingest.run([path])
        full = time.perf_counter() - started
        before = store.read_sync(snapshot, relative)
        print(
            f"{path.name}: {first.bytes / 1e6:.0f} MB, {first.lines} lines; first full ingest "
            f"in-process {full:.2f} s ({first.bytes / full / 1e6:.0f} MB/s)"
        )

        session = session_id_of(path)
        moment = datetime.now(UTC).replace(microsecond=0)
        phases: dict[str, list[float]] = {"jobs": [], "read": [], "store": [], "total": []}
        plain: list[float] = []
        plain_cpu: list[float] = []  # CPU time of this process (DuckDB's threads included)
        bytes_read: set[int] = set()
        parts: dict[str, float] = defaultdict(float)
        for index in range(2 * appends):
            line = response_line(session, index, moment + timedelta(seconds=index))
            with path.open("ab") as handle:
                handle.write(line)
            if index < appends:
                with timed_parts(parts):
                    jobs, read, stored, report = timed_run(ingest, path)
                phases["jobs"].append(jobs)
                phases["read"].append(read)
                phases["store"].append(stored)
                phases["total"].append(jobs + read + stored)
            else:
                started, started_cpu = time.perf_counter(), time.process_time()
                report = ingest.run([path])
                plain.append(time.perf_counter() - started)
                plain_cpu.append(time.process_time() - started_cpu)
            bytes_read.add(report.bytes)
            assert not report.errors, report.errors
        verdict = "met" if statistics.median(plain) < 0.010 else "NOT met"
        print(
            f"append {APPEND_BYTES} B (one assistant line with usage) and ingest, "
            f"median of {appends}:"
        )
        print(
            f"  Ingest.run([path]) as is:        {ms(plain)}  (target < 10 ms: {verdict}); "
            f"bytes read per append (BatchReport.bytes): {sorted(bytes_read)}"
        )
        print(f"  its CPU time (less sensitive to other load on a shared machine): {ms(plain_cpu)}")
        print(
            f"  same, phase by phase:            {ms(phases['total'])} = jobs (store reads) "
            f"{ms(phases['jobs'])} + read_file {ms(phases['read'])} + store_results "
            f"(apply_batch) {ms(phases['store'])}"
        )
        print("  store_results by part (mean per append):")
        for _, _, label in STORE_PARTS:
            if label in parts:
                print(f"    {label:43} {parts[label] / appends * 1000:6.2f} ms")

        # A response over two appends: its placeholder line, then its last line, whose
        # copy wins over the stored one (which is taken away from the session's sums).
        split: list[float] = []
        for index in range(2 * appends, 3 * appends):
            at = moment + timedelta(seconds=index)
            with path.open("ab") as handle:
                handle.write(response_line(session, index, at, output_tokens=1))
            ingest.run([path])
            with path.open("ab") as handle:
                handle.write(response_line(session, index, at + timedelta(seconds=1), part=1))
            started = time.perf_counter()
            report = ingest.run([path])
            split.append(time.perf_counter() - started)
            assert report.bytes == APPEND_BYTES and not report.errors, report
        print(
            f"  the last line of a response begun in the append before (its placeholder copy "
            f"stops counting): {ms(split)}"
        )

        floor = []
        for _ in range(appends):
            started = time.perf_counter()
            store.write_sync(touch_user, user_id)
            floor.append(time.perf_counter() - started)
        print(f"  floor: one transaction that updates one row (users.last_pull_at): {ms(floor)}")

        after = store.read_sync(snapshot, relative)
        store.write_sync(reset_derived)
        started = time.perf_counter()
        again = ingest.run([path])
        reread = time.perf_counter() - started
        whole = store.read_sync(snapshot, relative)
    finally:
        store.close()

    added = 3 * appends  # whole responses, then responses over two appends
    grown = [
        sum(int(row[i]) for row in after["tokens"]) - sum(int(row[i]) for row in before["tokens"])
        for i in range(1, 6)
    ]
    cache_creation = USAGE["cache_creation"]
    want = [
        added * USAGE["input_tokens"],
        added * USAGE["output_tokens"],
        added
        * (
            cache_creation["ephemeral_5m_input_tokens"]
            + cache_creation["ephemeral_1h_input_tokens"]
        ),
        added * USAGE["cache_read_input_tokens"],
        added,
    ]
    same = {key: after[key] == whole[key] for key in after}
    print(
        f"full re-read (reset_derived + ingest, {again.bytes / 1e6:.0f} MB in {reread:.2f} s): "
        + ", ".join(f"{key} {'equal' if ok else 'DIFFERENT'}" for key, ok in same.items())
        + f"; {added} appends added exactly their tokens and entries: "
        + ("yes" if grown == want else f"NO ({grown} vs {want})")
    )
    for key, ok in same.items():
        if not ok:
            print(f"  {key}: incremental {after[key]}\n  {key}: re-read     {whole[key]}")


def big_file_rss(size_mb: int) -> None:
    source = single_file(size_mb)
    data = OUT / "rss-data"
    fresh_data_dir(data)
    run = measure([str(CLI), "ingest", str(source), "--user", EMAIL, "--data-dir", str(data)])
    verdict = "met" if run.max_rss_mb < 300 else "NOT met"
    print(
        f"agnes-activity ingest of {source.name} ({source.stat().st_size / 1e6:.0f} MB): "
        f"{run.seconds:.1f} s; peak RSS largest process {run.max_rss_mb:.0f} MB "
        f"(target < 300 MB: {verdict}), whole process tree {run.tree_rss_mb:.0f} MB; "
        f"{run.out.strip().splitlines()[-1]}"
    )
    shutil.rmtree(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--appends", type=int, default=25)
    parser.add_argument("--rss-size-mb", type=int, default=1000, help="0 to skip")
    parser.add_argument(
        "--large",
        type=Path,
        metavar="DATA_DIR",
        help="append in a copy of this data dir (e.g. bench/large_db.py's) instead of an empty one",
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    incremental(args.size_mb, args.appends, args.large)
    if args.rss_size_mb:
        big_file_rss(args.rss_size_mb)


if __name__ == "__main__":
    main()
