"""The Litestar application, composed from plugins and the routers of ``service.api``.

``create_app`` takes an open :class:`~service.store.Store`; whoever opened the store closes
it (the ``serve`` command, or a test). Each plugin registers what it owns in one place, its
dependencies, lifespan tasks and routes: :class:`~service.app.ingest.IngestPlugin` the
ingest queue, the watcher and the reconciling scan; :class:`~service.app.live.LivePlugin`
the hub and the live routes, and it hears every batch the queue commits. The settings, the
store, the time zones ``tz`` may name and the remembered callers are dependencies of every
handler; handlers take what they use as parameters (``store: NamedDependency[Store]``),
never from ``app.state``.
"""

from __future__ import annotations

import logging

from litestar import Litestar
from litestar.config.compression import CompressionConfig
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router

from service import __version__
from service.api import admin, audit_events, health, local_md, me, pages, sync, uploads
from service.api.errors import exception_handlers
from service.api.me import TimeZones
from service.api.metrics import metrics_page
from service.app.ingest import IngestPlugin
from service.app.live import LivePlugin
from service.auth.middleware import TokenAuthMiddleware
from service.auth.principals import Principals
from service.auth.secrets import new_secret
from service.payloads import COMPRESS_FROM
from service.settings import Settings
from service.store import Store, stats

__all__ = ["PUBLIC_PATHS", "IngestPlugin", "LivePlugin", "create_app"]

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
    principals = Principals(store)
    time_zones = TimeZones(store.read_sync(stats.time_zones))
    auth = DefineMiddleware(TokenAuthMiddleware, exclude=PUBLIC_PATHS, principals=principals)
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
        plugins=[live, IngestPlugin(settings, store, listeners=[live.committed])],
        dependencies={
            "settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False),
            "store": Provide(lambda: store, use_cache=True, sync_to_thread=False),
            "time_zones": Provide(lambda: time_zones, use_cache=True, sync_to_thread=False),
            "principals": Provide(lambda: principals, use_cache=True, sync_to_thread=False),
        },
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
