"""Parser throughput and memory.

    /work/venv/bin/python bench/parse_throughput.py [--size-mb 500] [--runs 3]

Generates trees under ``bench/out/`` (once; reused afterwards) and prints:

- MB/s of parsing a tree of realistic transcripts on one core, and with a process pool
  of one worker per core (entries and states travel back to the parent, as ingest
  needs them), median of ``--runs`` runs, for a tree with megabyte tool results and
  for one with small lines only (the per-line worst case);
- the time to dedup all the tree's entries;
- peak RSS of parsing one 1 GB transcript in a fresh process, streaming (entries
  dropped per chunk, as a caller that writes them to the store does) and whole
  (``parse_file`` holding every entry).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.ingest.accounting import dedup
from service.ingest.transcript import FileParse, parse_file
from service.synthetic.corpus import generate, transcript_files

OUT = ROOT / "bench" / "out"


def tree(size_mb: int, big_lines: bool) -> Path:
    root = OUT / f"tree-{size_mb}mb-{'big' if big_lines else 'small'}"
    done = root / "done"
    if not done.exists():
        started = time.perf_counter()
        expected = generate(root, size_bytes=size_mb * 1_000_000, seed=42, big_lines=big_lines)
        done.write_text(str(expected.bytes_written))
        print(
            f"  generated {root.name}: {expected.bytes_written / 1e6:.0f} MB, "
            f"{expected.files} files in {time.perf_counter() - started:.1f}s"
        )
    return root


def _parse(job: tuple[str, str]) -> FileParse:
    return parse_file(job[0], file_name=job[1])


def _parse_packed(jobs: list[tuple[str, str]]) -> bytes:
    """A worker's share, sent back as msgpack: several times cheaper than pickling
    each entry, which would otherwise dominate on small-line trees."""
    return _ENCODER.encode([_parse(job) for job in jobs])


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[FileParse])


def measure_tree(root: Path, runs: int, workers: int) -> None:
    jobs = [(str(path), name) for path, name in transcript_files(root)]
    size = sum(os.path.getsize(path) for path, _ in jobs)
    lines = 0
    single: list[float] = []
    pooled: list[float] = []
    entries = []
    for _ in range(runs):
        started = time.perf_counter()
        results = [_parse(job) for job in jobs]
        single.append(time.perf_counter() - started)
        lines = sum(result.state.lines for result in results)
        entries = [entry for result in results for entry in result.entries]
        del results
    batches = [jobs[start : start + 16] for start in range(0, len(jobs), 16)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_parse_packed, [[job] for job in jobs[:workers]]))  # warm the workers
        for _ in range(runs):
            started = time.perf_counter()
            results = [
                r for packed in pool.map(_parse_packed, batches) for r in _DECODER.decode(packed)
            ]
            pooled.append(time.perf_counter() - started)
            assert sum(len(r.entries) for r in results) == len(entries)
            del results
    dedup_runs = []
    for _ in range(runs):
        started = time.perf_counter()
        winners = dedup(entries)
        dedup_runs.append(time.perf_counter() - started)
    one = statistics.median(single)
    many = statistics.median(pooled)
    print(
        f"  {root.name}: {size / 1e6:.0f} MB, {len(jobs)} files, {lines} lines "
        f"({size / max(lines, 1) / 1024:.1f} KiB/line), {len(entries)} entries"
    )
    print(f"    parse, 1 core:      {size / one / 1e6:7.0f} MB/s  ({one:.2f}s)")
    print(f"    parse, {workers} workers:   {size / many / 1e6:7.0f} MB/s  ({many:.2f}s)")
    print(
        f"    dedup:              {statistics.median(dedup_runs) * 1000:7.0f} ms "
        f"({len(entries)} entries -> {len(winners)} winners)"
    )


def single_file(size_mb: int) -> Path:
    """One transcript of ``size_mb``: the parent files of a generated tree, end to end."""
    path = OUT / f"single-{size_mb}mb.jsonl"
    if path.exists():
        return path
    source = tree(max(size_mb // 2, 1), big_lines=True)
    parents = [p for p, name in transcript_files(source) if "/subagents/" not in name]
    written = 0
    with path.open("wb") as out:
        while written < size_mb * 1_000_000:
            for parent in parents:
                data = parent.read_bytes()
                if not data.endswith(b"\n"):
                    data = data[: data.rfind(b"\n") + 1]
                out.write(data)
                written += len(data)
                if written >= size_mb * 1_000_000:
                    break
    return path


CHILD = """
import resource, sys, time
sys.path.insert(0, {root!r})
from service.ingest.transcript import iter_file, parse_file
started = time.perf_counter()
if sys.argv[1] == "stream":
    entries = sum(len(result.entries) for result in iter_file(sys.argv[2]))
else:
    entries = len(parse_file(sys.argv[2]).entries)
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{{entries}} {{elapsed:.2f}} {{peak:.0f}}")
"""


def measure_rss(size_mb: int) -> None:
    path = single_file(size_mb)
    size = path.stat().st_size
    code = CHILD.format(root=str(ROOT))
    for mode in ("stream", "whole"):
        output = subprocess.run(
            [sys.executable, "-c", code, mode, str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        entries, elapsed, peak = int(output[0]), float(output[1]), float(output[2])
        print(
            f"  {path.name} ({size / 1e6:.0f} MB, {entries} entries), {mode:6}: "
            f"peak RSS {peak:.0f} MB, {size / elapsed / 1e6:.0f} MB/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=500, help="size of the generated trees")
    parser.add_argument("--rss-size-mb", type=int, default=1000, help="size of the single file")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print("throughput (median of", args.runs, "runs):")
    measure_tree(tree(args.size_mb, big_lines=True), args.runs, args.workers)
    measure_tree(tree(max(args.size_mb // 5, 1), big_lines=False), args.runs, args.workers)
    print("memory:")
    measure_rss(args.rss_size_mb)


if __name__ == "__main__":
    main()
