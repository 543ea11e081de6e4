"""The live plugin: the hub, the payloads every answer comes from, the socket tickets, and
the live routes (:mod:`service.api.live`), registered in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from litestar import Litestar
from litestar.config.app import AppConfig

from service.hub import Hub
from service.ingest.pipeline import BatchReport
from service.plugins import AppPlugin
from service.store import Store

__all__ = ["LivePlugin"]


class LivePlugin(AppPlugin):
    """Holds the ``hub`` (:class:`~service.hub.Hub`, which also keeps the socket tickets, and
    whose :class:`~service.payloads.Payloads` the REST answers share), registers the live
    routes and runs the hub for the app's lifetime. :meth:`committed` is the ingest queue's
    listener."""

    def __init__(self, store: Store) -> None:
        self.hub = Hub(store)

    async def committed(self, report: BatchReport) -> None:
        """Tell the hub what an ingest batch changed, once it is committed."""
        self.hub.notify(report.versions, report.changed)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        from service.api import live  # here: the live routes import this module (.of)

        app_config.route_handlers.extend(live.routes)
        app_config.lifespan.append(self._running)
        return app_config

    @asynccontextmanager
    async def _running(self, _: Litestar) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.hub.run)
            yield
            tasks.cancel_scope.cancel()
