"""What DuckDB may use: a memory limit and threads from the machine by default, and from
``--duckdb-memory-limit`` / ``--duckdb-threads`` (``AGNES_DUCKDB_MEMORY_LIMIT``,
``AGNES_DUCKDB_THREADS``) when given; the running server says which in ``/metrics``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from service.settings import DUCKDB_MEMORY_SHARE, duckdb_memory_limit, machine_cpus, machine_memory
from service.store import Store, duckdb_settings
from tests.test_cli import start_server


def served_settings(url: str) -> tuple[float, float]:
    """DuckDB's memory limit (MiB) and threads, as the server's /metrics says."""
    text = httpx.get(f"{url}/metrics").text
    limit = re.search(r"^agnes_duckdb_memory_limit_bytes (\S+)$", text, re.M)
    threads = re.search(r"^agnes_duckdb_threads (\S+)$", text, re.M)
    assert limit and threads, "DuckDB's settings are not in /metrics"
    return float(limit.group(1)) / 2**20, float(threads.group(1))


def test_a_store_takes_a_quarter_of_the_machines_memory_and_its_cpus_by_default(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "a.duckdb")
    try:
        limit, threads = store.read_sync(duckdb_settings)
    finally:
        store.close()
    expected_mib = int(machine_memory() * DUCKDB_MEMORY_SHARE) // 2**20
    assert duckdb_memory_limit() == f"{expected_mib}MiB"
    assert abs(limit / 2**20 - expected_mib) <= 0.05 * expected_mib  # DuckDB rounds it
    assert threads == machine_cpus() <= len(os.sched_getaffinity(0))


def test_serve_takes_duckdbs_memory_limit_and_threads_from_the_environment(
    tmp_path: Path,
) -> None:
    env = {"AGNES_DUCKDB_MEMORY_LIMIT": "300MiB", "AGNES_DUCKDB_THREADS": "1"}
    old = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        proc, url = start_server(tmp_path / "data")
    finally:
        for name, value in old.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
    try:
        assert served_settings(url) == (300.0, 1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    proc, url = start_server(tmp_path / "data", "--duckdb-memory-limit", "1GiB")
    try:
        assert served_settings(url) == (1024.0, float(machine_cpus()))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_a_memory_limit_duckdb_cannot_read_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "d"),
            "--duckdb-memory-limit",
            "lots",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "DuckDB memory limit 'lots'" in result.stderr
    assert "Traceback" not in result.stderr
