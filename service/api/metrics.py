"""``GET /metrics``: the Prometheus metrics, with the gauges read as they are asked for."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST

from service import metrics
from service.ingest.queue import IngestQueue
from service.payloads import Payloads
from service.store import Store, duckdb_settings, memory_usage

__all__ = ["metrics_page"]


@get("/metrics", exclude_from_auth=True, include_in_schema=False, media_type=CONTENT_TYPE_LATEST)
async def metrics_page(
    store: NamedDependency[Store],
    queue: NamedDependency[IngestQueue],
    payloads: NamedDependency[Payloads],
) -> bytes:
    """Prometheus metrics (no auth: bind to loopback or filter at the proxy)."""
    metrics.QUEUE_DEPTH.set(queue.depth)
    metrics.DUCKDB_MEMORY.set(await store.read(memory_usage))
    memory_limit, threads = await store.read(duckdb_settings)
    metrics.DUCKDB_MEMORY_LIMIT.set(memory_limit)
    metrics.DUCKDB_THREADS.set(threads)
    metrics.ANSWERS_BYTES.set(payloads.size)
    metrics.KNOWN_USERS.set(payloads.known_users)
    return metrics.render()
