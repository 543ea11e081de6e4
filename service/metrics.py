"""Prometheus metrics, served at ``/metrics``.

One registry for the process, so every part (ingest, hub, sockets) reports into the same
page without passing objects around.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _counter(name: str, doc: str) -> Counter:
    return Counter(name, doc, registry=REGISTRY)


def _gauge(name: str, doc: str) -> Gauge:
    return Gauge(name, doc, registry=REGISTRY)


def _seconds(name: str, doc: str) -> Histogram:
    return Histogram(name, doc, buckets=_FAST, registry=REGISTRY)


INGEST_BATCHES = _counter("agnes_ingest_batches", "Ingest batches committed")
INGEST_BATCH_FILES = Histogram(
    "agnes_ingest_batch_files",
    "Files per ingest batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
    registry=REGISTRY,
)
INGEST_SECONDS = _seconds("agnes_ingest_batch_seconds", "Time to read and store one batch")
INGEST_LAG = _seconds(
    "agnes_ingest_lag_seconds", "From a path being queued to its batch being committed"
)
INGEST_LINES = _counter("agnes_ingest_lines", "Lines read")
INGEST_BAD_LINES = _counter("agnes_ingest_bad_lines", "Lines skipped as unreadable")
INGEST_ERRORS = _counter("agnes_ingest_file_errors", "Files recorded with a problem")
INGEST_ECHOES = _counter(
    "agnes_ingest_echoes",
    "Change events dropped: the file was as the batch that last read it found it",
)
QUEUE_DEPTH = _gauge("agnes_ingest_queue_depth", "Paths waiting for ingest")

DUCKDB_MEMORY = _gauge(
    "agnes_duckdb_memory_bytes",
    "Memory DuckDB's buffer manager holds (duckdb_memory()), when /metrics was asked",
)
DUCKDB_MEMORY_LIMIT = _gauge(
    "agnes_duckdb_memory_limit_bytes", "DuckDB's memory limit, as DuckDB has it"
)
DUCKDB_THREADS = _gauge("agnes_duckdb_threads", "DuckDB's threads")
ANSWERS_BYTES = _gauge("agnes_answers_bytes", "Encoded answers kept in memory (bounded)")
KNOWN_USERS = _gauge("agnes_known_users", "Users whose version the answers' cache holds")
CONNECTIONS = _gauge("agnes_live_connections", "Open websocket connections")
SEND_QUEUE_OVERFLOWS = _counter(
    "agnes_live_queue_overflows", "Connections whose queued updates were replaced by a snapshot"
)
PUSH_SECONDS = _seconds(
    "agnes_push_seconds", "From a change being committed to its update being handed to a socket"
)


def render() -> bytes:
    return generate_latest(REGISTRY)
