"""The ingest plugin: the queue every upload, spool file and admin request goes through,
run for the app's lifetime and fed by the watcher and the reconciling scan; beside it, the
periodic rewrite that keeps each user's rows together (:mod:`service.layout`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
from litestar import Litestar
from litestar.config.app import AppConfig

from service.ingest.pipeline import Ingest
from service.ingest.queue import BatchListener, IngestQueue
from service.layout import keep_user_order
from service.plugins import AppPlugin
from service.settings import Settings
from service.store import Store
from watchers.changes import watch_changes
from watchers.scan import reconcile

__all__ = ["IngestPlugin"]


class IngestPlugin(AppPlugin):
    """Holds the ``queue`` (:class:`~service.ingest.queue.IngestQueue`) and, for the app's
    lifetime, runs the queue, the reconciling scan (which starts with whatever
    is unread), the rewrite that keeps user order (every ``scan_interval``, as the scan)
    and, when ``settings.watch``, the watcher. ``listeners`` hear of every batch that
    committed a change."""

    def __init__(
        self, settings: Settings, store: Store, *, listeners: Sequence[BatchListener] = ()
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = IngestQueue(Ingest(settings, store))
        self.queue.listeners.extend(listeners)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.lifespan.append(self._running)
        return app_config

    @asynccontextmanager
    async def _running(self, _: Litestar) -> AsyncIterator[None]:
        stop = anyio.Event()  # ends the watch and the scan within milliseconds
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.queue.run)
            tasks.start_soon(reconcile, self.settings, self.store, self.queue, stop)
            tasks.start_soon(keep_user_order, self.store, stop, self.settings.scan_interval)
            if self.settings.watch:
                tasks.start_soon(watch_changes, self.settings, self.queue, stop)
            yield
            stop.set()
            tasks.cancel_scope.cancel()
