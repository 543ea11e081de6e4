"""``GET /metrics``: the Prometheus metrics, with the gauges read as they are asked for."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from prometheus_client import CONTENT_TYPE_LATEST

from service import metrics
from service.plugins.ingest import IngestPlugin
from service.plugins.live import LivePlugin
from service.plugins.store import StorePlugin
from service.store import duckdb_settings, memory_usage

__all__ = ["metrics_page"]


@get("/metrics", exclude_from_auth=True, include_in_schema=False, media_type=CONTENT_TYPE_LATEST)
async def metrics_page(request: Request[Any, Any, Any]) -> bytes:
    """Prometheus metrics (no auth: bind to loopback or filter at the proxy)."""
    store = StorePlugin.of(request).store
    queue = IngestPlugin.of(request).queue
    payloads = LivePlugin.of(request).hub.payloads
    metrics.QUEUE_DEPTH.set(queue.depth)
    metrics.DUCKDB_MEMORY.set(await store.read(memory_usage))
    memory_limit, threads = await store.read(duckdb_settings)
    metrics.DUCKDB_MEMORY_LIMIT.set(memory_limit)
    metrics.DUCKDB_THREADS.set(threads)
    metrics.ANSWERS_BYTES.set(payloads.size)
    metrics.KNOWN_USERS.set(payloads.known_users)
    return metrics.render()
