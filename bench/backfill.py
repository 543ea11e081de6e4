"""Backfill: ``agnes-activity ingest`` over a generated tree, against ccusage on the same tree.

    /work/venv/bin/python bench/backfill.py [--size-mb 500] [--runs 3] [--profile]

Generates a ``projects/`` tree of at least ``--size-mb`` once (cached under
``bench/out/backfill-<size>mb-s<seed>/`` with the corpus's expected totals), then runs,
alternating, ``--runs`` times each:

- what an operator runs: a fresh data dir, ``agnes-activity users add``, then
  ``agnes-activity ingest <tree>/projects --user EMAIL`` as a subprocess (wall time of
  the ingest command, interpreter start-up and the copy into the archive included);
- ``ccusage claude session --json --offline`` with ``CLAUDE_CONFIG_DIR=<tree>`` and
  ``TZ=UTC`` (helpers from ``ccusage_crosscheck.py``).

It prints both medians, MB/s, the ratio ours/ccusage (target at most 1.5), the peak RSS
of our ingest (the largest single process per ``/usr/bin/time -v``, and the sum over the
process tree, sampled), and whether our totals per month and model (SQL over the data
dir's ``activity.duckdb``, winning copies) equal the corpus's expected totals.

``--profile`` then runs the same backfill in this process with timers around each stage
(copy into the archive, store reads for the jobs, parsing in the pool, sending results
back from the pool, ``apply_batch`` and its parts, timed by wrapping the functions it
calls) and prints where the time goes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
sys.path.insert(0, str(ROOT))

from ccusage_crosscheck import ccusage_binary, run_ccusage

from service.synthetic.corpus import generate

CLI = Path(sys.executable).with_name("agnes-activity")
TIME = Path("/usr/bin/time")
EMAIL = "bench@example.com"
KINDS = ("input", "output", "cache_creation", "cache_read", "entries")


# -- the tree ------------------------------------------------------------------------------


def cached_tree(size_mb: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """The generated tree and its expected totals per (month, model), made once."""
    root = OUT / f"backfill-{size_mb}mb-s{seed}"
    done = root / "expected.json"
    if not done.exists():
        if root.exists():
            shutil.rmtree(root)
        started = time.perf_counter()
        expected = generate(root, size_bytes=size_mb * 1_000_000, seed=seed)
        months: dict[tuple[str, str | None], list[int]] = defaultdict(lambda: [0] * 5)
        for (day, model), t in expected.by_day_model.items():
            row = months[(day[:7], model)]
            for i, value in enumerate(
                (t.input, t.output, t.cache_creation, t.cache_read, t.entries)
            ):
                row[i] += value
        summary = {
            "bytes": expected.bytes_written,
            "files": expected.files,
            "by_month_model": [
                [m, model, *row] for (m, model), row in sorted(months.items(), key=str)
            ],
        }
        done.write_text(json.dumps(summary))
        print(
            f"generated {root.name}: {expected.bytes_written / 1e6:.0f} MB, "
            f"{expected.files} files in {time.perf_counter() - started:.0f} s"
        )
    return root, json.loads(done.read_text())


def tree_bytes(projects: Path) -> int:
    return sum(p.stat().st_size for p in projects.rglob("*.jsonl"))


# -- running a command and watching its memory ---------------------------------------------


def tree_rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, in KiB."""
    total = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    stack.extend(int(c) for c in children.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


class Measured:
    """Outcome of one command: wall seconds, peak RSS of its largest process and of
    its whole process tree (MB), and its output."""

    def __init__(self, seconds: float, max_rss_mb: float, tree_rss_mb: float, out: str) -> None:
        self.seconds = seconds
        self.max_rss_mb = max_rss_mb
        self.tree_rss_mb = tree_rss_mb
        self.out = out


def measure(command: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run ``command`` to completion (it must succeed); sample its tree's RSS every 20 ms."""
    use_time = TIME.exists()
    argv = [str(TIME), "-v", *command] if use_time else command
    with tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env, text=True)
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.02):
                peak = max(peak, tree_rss_kb(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, _ = process.communicate()
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
        err.seek(0)
        errors = err.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{out}\n{errors}")
    if use_time:
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", errors)
        max_rss = int(found.group(1)) if found else 0
    else:
        import resource

        max_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return Measured(seconds, max_rss / 1024, peak / 1024, out)


def fresh_data_dir(data: Path) -> None:
    if data.exists():
        shutil.rmtree(data)
    subprocess.run(
        [str(CLI), "users", "add", EMAIL, "--data-dir", str(data)],
        check=True,
        capture_output=True,
    )


def our_ingest(projects: Path, data: Path) -> Measured:
    """What an operator runs: users add (not timed) and ingest (timed) on a fresh data dir."""
    fresh_data_dir(data)
    return measure(
        [str(CLI), "ingest", str(projects), "--user", EMAIL, "--data-dir", str(data)],
        env=dict(os.environ, COLUMNS="100"),
    )


# -- exactness -----------------------------------------------------------------------------


def our_totals(data: Path) -> dict[tuple[str, str | None], list[int]]:
    conn = duckdb.connect(str(data / "activity.duckdb"), read_only=True)
    try:
        conn.execute("SET TimeZone = 'UTC'")
        rows = conn.execute(
            "SELECT strftime(ts, '%Y-%m'), model, sum(input_tokens), sum(output_tokens),"
            " sum(cache_creation_tokens), sum(cache_read_tokens), count(*)"
            " FROM usage_entries WHERE winner GROUP BY ALL"
        ).fetchall()
    finally:
        conn.close()
    totals: dict[tuple[str, str | None], list[int]] = defaultdict(lambda: [0] * 5)
    for month, model, *values in rows:
        row = totals[(month, None if model == "<synthetic>" else model)]
        for i, value in enumerate(values):
            row[i] += int(value)
    return dict(totals)


def exactness(data: Path, expected: dict[str, Any]) -> str:
    want = {(r[0], r[1]): list(r[2:]) for r in expected["by_month_model"]}
    have = our_totals(data)
    keys = sorted(set(want) | set(have), key=str)
    differing = [k for k in keys if want.get(k) != have.get(k)]
    tokens_differ = [
        k for k in keys if (want.get(k) or [0] * 5)[:4] != (have.get(k) or [0] * 5)[:4]
    ]
    total = [sum(row[i] for row in have.values()) for i in range(5)]
    verdict = "EQUAL" if not differing else f"DIFFERENT in {len(differing)} rows"
    lines = [
        f"exactness: {len(keys)} (month, model) rows, tokens and entry counts vs corpus "
        f"expected: {verdict}; {total[4]} winning entries, {sum(total[:4]):,} tokens"
    ]
    for key in differing[:8]:
        kinds = dict(zip(KINDS, want.get(key) or [0] * 5, strict=True))
        ours = dict(zip(KINDS, have.get(key) or [0] * 5, strict=True))
        lines.append(f"  {key}: expected {kinds}\n  {' ' * len(str(key))}  ours     {ours}")
    if differing and not tokens_differ:
        lines.append("  (token totals equal; only entry counts differ)")
    return "\n".join(lines)


# -- profile -------------------------------------------------------------------------------

STORE_PARTS = (
    ("service.store.ingest", "_save_files", "files rows (_save_files)"),
    ("service.store.copies", "stored", "stored copies of touched responses"),
    ("service.ingest.plan", "dedup", "dedup of touched responses"),
    ("service.store.copies", "insert", "usage_entries insert (copies.insert)"),
    ("service.store.copies", "cost_usd", "  of which cost_usd per copy"),
    ("service.store.sessions", "update", "session rows (sessions.update)"),
    ("service.store.sessions", "_sum_again", "  of which sums again (_sum_again)"),
    ("service.ingest.sessions", "summarize", "  of which summarize"),
    ("service.store.users", "bump_versions", "user versions (bump_versions)"),
)


@contextmanager
def timed_parts(totals: dict[str, float]) -> Iterator[None]:
    """Time the parts of ``apply_batch`` by wrapping the module functions it calls
    (looked up at call time, so no service code changes); parts that no longer exist
    are skipped."""
    patched = []
    for module_name, name, label in STORE_PARTS:
        module = importlib.import_module(module_name)
        original = getattr(module, name, None)
        if original is None:
            continue

        def wrapper(*args: Any, _fn: Any = original, _label: str = label, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return _fn(*args, **kw)
            finally:
                totals[_label] += time.perf_counter() - started

        setattr(module, name, wrapper)
        patched.append((module, name, original))
    try:
        yield
    finally:
        for module, name, original in patched:
            setattr(module, name, original)


def _timed_read(item: tuple[str, Any]) -> tuple[Any, float, float, float, int]:
    """What a backfill worker does (copy into the archive, then ``read_file``), with the
    time of each step and the time to pickle the result."""
    from service.ingest.backfill import archive
    from service.ingest.pipeline import read_file

    source, job = item
    started = time.perf_counter()
    archive(Path(source), Path(job.absolute))
    copied = time.perf_counter()
    result = read_file(job)
    parsed = time.perf_counter()
    size = len(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    return result, copied - started, parsed - copied, time.perf_counter() - parsed, size


def profile(projects: Path, data: Path, workers: int) -> None:
    """The CLI's backfill (find; batches through a pool that copies each file into the
    archive and reads it; apply_batch), in this process, with a timer on every stage.
    Unlike the CLI, stages do not overlap here (the pool idles while a batch is stored),
    so the wall time is a little longer than the CLI's."""
    from service.admin import open_store
    from service.ingest import backfill
    from service.ingest.pipeline import BatchReport, Ingest
    from service.settings import Settings
    from service.store import users

    if data.exists():
        shutil.rmtree(data)
    settings = Settings(data_dir=data)
    store = open_store(settings)
    user = store.write_sync(users.add_user, EMAIL)
    stages: dict[str, float] = defaultdict(float)
    parts: dict[str, float] = defaultdict(float)
    pickled = 0
    overhead = 0.0
    started = time.perf_counter()
    mark = started
    sources = backfill.find_transcripts([projects])
    folder = settings.sessions_dir / user.id
    folder.mkdir(parents=True)
    targets = [folder / name for _, name in sources]
    copy_from = {str(folder / name): str(source) for source, name in sources}
    sizes = [source.stat().st_size for source, _ in sources]
    stages["find_transcripts"] = time.perf_counter() - mark
    ingest = Ingest(settings, store)
    with ProcessPoolExecutor(workers) as pool:
        for batch, _ in backfill.batches(targets, sizes):
            mark = time.perf_counter()
            jobs = ingest.jobs(batch)
            stages["Ingest.jobs (store reads)"] += time.perf_counter() - mark
            mark = time.perf_counter()
            results = []
            items = [(copy_from[job.absolute], job) for job in jobs]
            for result, copy, parse, dump, size in pool.map(_timed_read, items, chunksize=4):
                results.append(result)
                stages["  worker CPU: copy into the archive"] += copy
                stages["  worker CPU: read_file"] += parse
                stages["  worker CPU: pickle result"] += dump
                pickled += size
            stages["pool.map wall (copy + parse + pickle + transfer)"] += time.perf_counter() - mark
            mark = time.perf_counter()
            blob = pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL)
            unpickle_started = time.perf_counter()
            pickle.loads(blob)
            stages["  parent: unpickle results"] += time.perf_counter() - unpickle_started
            overhead += time.perf_counter() - mark  # measuring only: not in the wall time
            del blob
            mark = time.perf_counter()
            with timed_parts(parts):
                ingest.store_results(results, BatchReport())
            stages["apply_batch (one transaction)"] += time.perf_counter() - mark
            del results
    mark = time.perf_counter()
    store.close()
    stages["store.close (checkpoint)"] = time.perf_counter() - mark
    wall = time.perf_counter() - started - overhead
    size = tree_bytes(projects)
    print(
        f"profile, in-process backfill with {workers} workers: {wall:.1f} s wall "
        f"({size / wall / 1e6:.0f} MB/s), {pickled / 1e6:.0f} MB of pickled results"
    )
    for name, seconds in stages.items():
        print(f"  {name:45} {seconds:7.2f} s  {100 * seconds / wall:5.1f}% of wall")
        if name.startswith("apply_batch"):
            for _, _, label in STORE_PARTS:
                if label in parts:
                    share = 100 * parts[label] / wall
                    print(f"      {label:41} {parts[label]:7.2f} s  {share:5.1f}% of wall")


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also break the time down")
    parser.add_argument("--skip-ccusage", action="store_true", help="only our ingest")
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    root, expected = cached_tree(args.size_mb, args.seed)
    projects = root / "projects"
    size = tree_bytes(projects)
    data = OUT / "backfill-data"
    binary = None if args.skip_ccusage else ccusage_binary()
    version = (
        subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
        if binary
        else "-"
    )
    print(
        f"tree {root.name}: {size / 1e6:.0f} MB, {expected['files']} files; "
        f"ccusage {version}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        f"median of {args.runs} runs each, alternating"
    )

    ours: list[Measured] = []
    theirs: list[float] = []
    for run in range(args.runs):
        ours.append(our_ingest(projects, data))
        summary = ours[-1].out.strip().splitlines()[-1]
        line = f"  run {run + 1}: ours {ours[-1].seconds:6.2f} s ({summary})"
        if binary is not None:
            theirs.append(run_ccusage(binary, root, "session")[1])  # CLAUDE_CONFIG_DIR, TZ=UTC
            line += f"; ccusage {theirs[-1]:6.2f} s"
        print(line)

    our_time = statistics.median(m.seconds for m in ours)
    print(
        f"ours:    agnes-activity ingest  {our_time:6.2f} s  {size / our_time / 1e6:5.0f} MB/s"
        f"  (runs: {', '.join(f'{m.seconds:.2f}' for m in ours)})"
    )
    if theirs:
        their_time = statistics.median(theirs)
        print(
            f"ccusage: claude session --json  {their_time:6.2f} s  "
            f"{size / their_time / 1e6:5.0f} MB/s  (runs: {', '.join(f'{t:.2f}' for t in theirs)})"
        )
        ratio = our_time / their_time
        verdict = "met" if ratio <= 1.5 else "NOT met"
        print(f"ratio ours/ccusage: {ratio:.2f}x (target <= 1.5: {verdict})")
    tool = "/usr/bin/time -v" if TIME.exists() else "getrusage(RUSAGE_CHILDREN)"
    largest = statistics.median(m.max_rss_mb for m in ours)
    whole = statistics.median(m.tree_rss_mb for m in ours)
    print(
        f"peak RSS of our ingest (median): largest process {largest:.0f} MB ({tool}), "
        f"whole process tree {whole:.0f} MB (sampled every 20 ms)"
    )
    startup = statistics.median(
        measure([str(CLI), "users", "list", "--data-dir", str(data)]).seconds for _ in range(3)
    )
    print(f"of which CLI start-up (median wall of `agnes-activity users list`): {startup:.2f} s")
    print(exactness(data, expected))
    if args.profile:
        profile(projects, data, os.cpu_count() or 1)


if __name__ == "__main__":
    main()
