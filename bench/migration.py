"""What opening an older database costs while our migrations upgrade it: wall time and the
process's peak RSS, with the memory limit migrations run under
(``service.store.migrations.MEMORY_LIMIT``) against the same run's baseline, the store's
own limit (a quarter of the machine's memory).

    python bench/migration.py --from bench/out/large-…-v4-…/data [--runs 3]

Each run copies ``activity.duckdb`` from ``--from`` (never written) into ``--work`` and
opens it with a :class:`~service.store.Store` in a fresh process; the two settings
alternate. Prints each run, the medians and the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import resource, sys, time
from pathlib import Path
import service.store.migrations as migrations
from service.store import Store
if sys.argv[2] == "store's own":
    migrations.MEMORY_LIMIT = 2**60
started = time.perf_counter()
store = Store(Path(sys.argv[1]))
took = time.perf_counter() - started
version = store.schema_version
store.close()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{took:.1f} {peak:.0f} {version}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--from", dest="source", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/agnes-migration-bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / "activity.duckdb"
    found: dict[str, list[tuple[float, float]]] = {"migrations' 1 GiB": [], "store's own": []}
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for run in range(args.runs):
        for limit, results in found.items():
            for old in args.work.glob("activity.duckdb*"):
                old.unlink()
            shutil.copy(args.source / "activity.duckdb", path)
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(path), limit],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
                env=os.environ | {"PYTHONPATH": str(ROOT)},
            ).stdout.split()
            took, peak, version = float(out[0]), float(out[1]), out[2]
            results.append((took, peak))
            print(
                f"run {run + 1}, {limit:18} limit: migrated to {version} in {took:.1f} s"
                f" ({time.perf_counter() - started:.1f} s with start-up), peak RSS {peak:,.0f} MB",
                flush=True,
            )
    for limit, results in found.items():
        print(
            f"median, {limit:18} limit: {statistics.median(t for t, _ in results):.1f} s,"
            f" peak RSS {statistics.median(p for _, p in results):,.0f} MB"
        )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
