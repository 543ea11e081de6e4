"""CSV export: the memory and time of ``GET /api/me/stats/sessions?format=csv`` for one user
with 10,000 and with 100,000 sessions, against the same rows fetched as JSON pages of 200
(what a script had to do before the export, the same-run baseline).

For each size a data dir is made once (the sessions written straight into the tables),
then every run starts ``agnes-activity serve`` on it in its own process, waits until it is
idle, and downloads the whole export (and then every JSON page) while a thread samples the
server's resident memory (VmRSS) every 10 ms. Reported: the median over runs of the time,
of the peak RSS during the download and of the growth over the idle RSS before it.

    python bench/export.py [--sizes 10000,100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from rest import Server, loadavg

from service import operations
from service.settings import Settings, prepare_data_dir
from service.store import Cursor, Store

T0 = datetime(2026, 2, 1, 12, tzinfo=UTC)


def make_data_dir(root: Path, sessions: int) -> tuple[Path, str]:
    """A data dir with one user holding ``sessions`` processed sessions; (dir, token)."""
    settings = Settings(data_dir=root / f"data-{sessions}")
    prepare_data_dir(settings)
    store = Store(settings.db_path)
    try:
        user = store.write_sync(operations.add_user, "bench@example.com", False)
        token = store.write_sync(operations.create_token, "bench@example.com", "bench", None, False)

        def insert(cur: Cursor) -> None:
            args = {"u": user.id, "n": sessions, "t0": T0}
            cur.execute(
                "INSERT INTO files (path, user_id, name, session_file, is_subagent, size,"
                " status, first_seen_at) SELECT $u || '/s' || i || '.jsonl', $u,"
                " 's' || i || '.jsonl', 's' || i || '.jsonl', false, 1000, 'processed', $t0"
                " FROM range($n) t(i)",
                args,
            )
            cur.execute(
                "INSERT INTO sessions (key, user_id, session_file, session_id, started_at,"
                " ended_at, primary_model, input_tokens, output_tokens, cache_read_tokens,"
                " cache_creation_tokens, user_messages, tool_calls)"
                " SELECT $u || '/s' || i || '.jsonl', $u, 's' || i || '.jsonl', 'id-' || i,"
                " $t0 - i * INTERVAL 1 MINUTE, $t0 - i * INTERVAL 1 MINUTE + INTERVAL 30 SECOND,"
                " 'claude-opus-4-6', i, 2 * i, 3 * i, 4 * i, 3, 5 FROM range($n) t(i)",
                args,
            )

        store.write_sync(insert)
    finally:
        store.close()
    return settings.data_dir, token.token


class PeakRss:
    """The highest VmRSS of the server while the block runs."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss_mb())
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.server.rss_mb())


def download_csv(http: httpx.Client) -> tuple[int, int]:
    lines = size = 0
    with http.stream("GET", "/api/me/stats/sessions", params={"format": "csv"}) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            size += len(chunk)
            lines += chunk.count(b"\n")
    return lines - 1, size


def page_json(http: httpx.Client) -> tuple[int, int]:
    rows = size = offset = 0
    while True:
        response = http.get("/api/me/stats/sessions", params={"limit": 200, "offset": offset})
        response.raise_for_status()
        page = response.json()
        rows += len(page["rows"])
        size += len(response.content)
        offset += len(page["rows"])
        if not page["rows"] or offset >= page["total"]:
            return rows, size


def measure(data_dir: Path, token: str) -> dict[str, tuple[float, float, float, int, int]]:
    server = Server(data_dir)
    try:
        headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=600) as http:
            http.get("/api/me/stats/sessions").raise_for_status()  # warm up
            time.sleep(1)
            figures = {}
            for name, fetch in (("csv export", download_csv), ("JSON pages of 200", page_json)):
                idle = server.rss_mb()
                started = time.perf_counter()
                with PeakRss(server) as rss:
                    rows, size = fetch(http)
                seconds = time.perf_counter() - started
                figures[name] = (seconds, rss.peak, rss.peak - idle, rows, size)
        return figures
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average before: {loadavg()}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="agnes-bench-export-") as tmp:
        for sessions in sizes:
            data_dir, token = make_data_dir(Path(tmp), sessions)
            runs = [measure(data_dir, token) for _ in range(args.runs)]
            for name in runs[0]:
                seconds = statistics.median(r[name][0] for r in runs)
                peak = statistics.median(r[name][1] for r in runs)
                growth = statistics.median(r[name][2] for r in runs)
                rows, size = runs[0][name][3], runs[0][name][4]
                print(
                    f"{sessions:>7,} sessions, {name:<18} {rows:>7,} rows {size / 2**20:6.1f} MiB"
                    f"  {seconds:6.2f} s  peak RSS {peak:6.1f} MB (+{growth:5.1f} over idle)"
                    f"  [median of {args.runs}]"
                )
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
