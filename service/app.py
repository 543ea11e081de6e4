"""The Litestar application, composed from the routers of ``service.api``.

``create_app`` takes an open :class:`~service.store.Store`; whoever opened the store closes
it (the ``serve`` command, or a test).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from litestar import Litestar, Request, get
from litestar.config.compression import CompressionConfig
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from prometheus_client import CONTENT_TYPE_LATEST

from service import __version__, metrics
from service.api import admin, audit_events, health, live, local_md, me, pages, sync, uploads
from service.api.errors import exception_handlers
from service.auth.middleware import TokenAuthMiddleware
from service.auth.secrets import new_secret
from service.hub import Hub
from service.ingest.pipeline import BatchReport, Ingest
from service.ingest.queue import IngestQueue
from service.layout import keep_user_order
from service.payloads import COMPRESS_FROM
from service.settings import Settings
from service.store import Store, duckdb_settings, memory_usage, stats
from watchers.changes import watch_changes
from watchers.scan import reconcile

PUBLIC_PATHS = ["^/static/", "^/schema", "^/metrics$"]


@get("/metrics", exclude_from_auth=True, include_in_schema=False, media_type=CONTENT_TYPE_LATEST)
async def metrics_page(request: Request[Any, Any, Any]) -> bytes:
    """Prometheus metrics (no auth: bind to loopback or filter at the proxy)."""
    metrics.QUEUE_DEPTH.set(request.app.state.ingest_queue.depth)
    store: Store = request.app.state.store
    metrics.DUCKDB_MEMORY.set(await store.read(memory_usage))
    memory_limit, threads = await store.read(duckdb_settings)
    metrics.DUCKDB_MEMORY_LIMIT.set(memory_limit)
    metrics.DUCKDB_THREADS.set(threads)
    payloads = request.app.state.hub.payloads
    metrics.ANSWERS_BYTES.set(payloads.size)
    metrics.KNOWN_USERS.set(payloads.known_users)
    return metrics.render()


@asynccontextmanager
async def ingesting(app: Litestar) -> AsyncIterator[None]:
    """Run the ingest queue for the app's lifetime, fed by the watcher and the reconciling
    scan (which starts with whatever is unread)."""
    queue: IngestQueue = app.state.ingest_queue
    hub: Hub = app.state.hub

    async def push(report: BatchReport) -> None:
        hub.notify(report.versions, report.changed)

    queue.listeners.append(push)
    settings: Settings = app.state.settings
    stop = anyio.Event()  # ends the watch and the scan within milliseconds
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(hub.run)
        tasks.start_soon(queue.run)
        tasks.start_soon(reconcile, settings, app.state.store, queue, stop)
        tasks.start_soon(keep_user_order, app.state.store, stop, settings.scan_interval)
        if settings.watch:
            tasks.start_soon(watch_changes, settings, queue, stop)
        yield
        stop.set()
        tasks.cancel_scope.cancel()


def create_app(settings: Settings, store: Store, *, admin_secret: str | None = None) -> Litestar:
    state: dict[str, Any] = {
        "settings": settings,
        "store": store,
        "admin_secret": admin_secret or new_secret(),
        "time_zones": store.read_sync(stats.time_zones),
        "ingest_queue": IngestQueue(Ingest(settings, store)),
        "hub": Hub(store),
    }
    auth = DefineMiddleware(TokenAuthMiddleware, exclude=PUBLIC_PATHS)
    return Litestar(
        route_handlers=[
            health.health,
            uploads.upload_session,
            local_md.upload_local_md,
            audit_events.post_audit_events,
            sync.sync_manifest,
            me.router,
            live.live,
            metrics_page,
            admin.router,
            pages.login_page,
            pages.login,
            pages.logout,
            pages.dashboard,
            pages.old_dashboard,
            pages.root,
            create_static_files_router(
                "/static", directories=[pages.STATIC_DIR], include_in_schema=False
            ),
        ],
        middleware=[auth],
        before_request=pages.schema_page,
        lifespan=[ingesting],
        state=State(state),
        exception_handlers=exception_handlers,
        compression_config=CompressionConfig(
            backend="gzip", minimum_size=COMPRESS_FROM, exclude_opt_key=me.PRECOMPRESSED
        ),
        openapi_config=OpenAPIConfig(
            title="agnes-activity",
            version=__version__,
            path="/schema",
            render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"])],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer"),
                }
            ),
            security=[{"bearer": []}],
        ),
        logging_config=None,
        debug=False,
    )


logging.getLogger("agnes").setLevel(logging.INFO)
