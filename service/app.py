"""The Litestar application, composed from the plugins of ``service.plugins`` and the
routers of ``service.api``.

``create_app`` takes an open :class:`~service.store.Store`; whoever opened the store closes
it (the ``serve`` command, or a test). The plugins own the app's parts (the store and
settings; ingest; the live push) and register their tasks and routes themselves; the
handlers reach them with typed accessors (``StorePlugin.of(request).store``).
"""

from __future__ import annotations

import logging

from litestar import Litestar
from litestar.config.compression import CompressionConfig
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router

from service import __version__
from service.api import admin, audit_events, health, local_md, me, pages, sync, uploads
from service.api.errors import exception_handlers
from service.api.metrics import metrics_page
from service.auth.middleware import TokenAuthMiddleware
from service.auth.secrets import new_secret
from service.payloads import COMPRESS_FROM
from service.plugins.ingest import IngestPlugin
from service.plugins.live import LivePlugin
from service.plugins.store import StorePlugin
from service.settings import Settings
from service.store import Store

__all__ = ["PUBLIC_PATHS", "create_app"]

PUBLIC_PATHS = ["^/static/", "^/schema", "^/metrics$"]


def create_app(
    settings: Settings,
    store: Store,
    *,
    admin_secret: str | None = None,
    admin_listener: tuple[str, int] | None = None,
) -> Litestar:
    """The app on ``store``. The admin API takes ``admin_secret`` (default: a new one that
    nobody knows), and, given ``admin_listener`` (host, port), answers only there."""
    live = LivePlugin(store)
    auth = DefineMiddleware(TokenAuthMiddleware, exclude=PUBLIC_PATHS)
    return Litestar(
        route_handlers=[
            health.health,
            uploads.upload_session,
            local_md.upload_local_md,
            audit_events.post_audit_events,
            sync.sync_manifest,
            me.router,
            metrics_page,
            admin.router(admin_secret or new_secret(), admin_listener),
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
        plugins=[
            StorePlugin(settings, store),
            live,
            IngestPlugin(settings, store, listeners=[live.committed]),
        ],
        middleware=[auth],
        before_request=pages.schema_page,
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
