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

INGEST_BATCHES = Counter("agnes_ingest_batches", "Ingest batches committed", registry=REGISTRY)
INGEST_BATCH_FILES = Histogram(
    "agnes_ingest_batch_files",
    "Files per ingest batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
    registry=REGISTRY,
)
INGEST_SECONDS = Histogram(
    "agnes_ingest_batch_seconds",
    "Time to read and store one batch",
    buckets=_FAST,
    registry=REGISTRY,
)
INGEST_LAG = Histogram(
    "agnes_ingest_lag_seconds",
    "From a path being queued to its batch being committed",
    buckets=_FAST,
    registry=REGISTRY,
)
INGEST_LINES = Counter("agnes_ingest_lines", "Lines read", registry=REGISTRY)
INGEST_BAD_LINES = Counter(
    "agnes_ingest_bad_lines", "Lines skipped as unreadable", registry=REGISTRY
)
INGEST_ERRORS = Counter(
    "agnes_ingest_file_errors", "Files recorded with a problem", registry=REGISTRY
)
INGEST_ECHOES = Counter(
    "agnes_ingest_echoes",
    "Change events dropped: the file was as the batch that last read it found it",
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("agnes_ingest_queue_depth", "Paths waiting for ingest", registry=REGISTRY)

DUCKDB_MEMORY = Gauge(
    "agnes_duckdb_memory_bytes",
    "Memory DuckDB's buffer manager holds (duckdb_memory()), when /metrics was asked",
    registry=REGISTRY,
)
DUCKDB_MEMORY_LIMIT = Gauge(
    "agnes_duckdb_memory_limit_bytes", "DuckDB's memory limit, as DuckDB has it", registry=REGISTRY
)
DUCKDB_THREADS = Gauge("agnes_duckdb_threads", "DuckDB's threads", registry=REGISTRY)
ANSWERS_BYTES = Gauge(
    "agnes_answers_bytes", "Encoded answers kept in memory (bounded)", registry=REGISTRY
)
KNOWN_USERS = Gauge(
    "agnes_known_users", "Users whose version the answers' cache holds", registry=REGISTRY
)
CONNECTIONS = Gauge("agnes_live_connections", "Open websocket connections", registry=REGISTRY)
SEND_QUEUE_OVERFLOWS = Counter(
    "agnes_live_queue_overflows",
    "Connections whose queued updates were replaced by a snapshot",
    registry=REGISTRY,
)
PUSH_SECONDS = Histogram(
    "agnes_push_seconds",
    "From a change being committed to its update being handed to a socket",
    buckets=_FAST,
    registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)
