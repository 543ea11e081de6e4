"""The app's parts as Litestar plugins, composed by :func:`service.app.create_app`.

Each plugin owns its part and registers what it brings (lifespan tasks, routes) in
``on_app_init``, in one place, as Litestar's own channels plugin does:
:class:`~service.plugins.store.StorePlugin` the settings, the open database and what is read
from it once; :class:`~service.plugins.ingest.IngestPlugin` the ingest queue, the watcher,
the reconciling scan and the rewrite that keeps user order;
:class:`~service.plugins.live.LivePlugin` the hub and the live routes.

Handlers and middleware reach a plugin with its typed accessor, ``LivePlugin.of(request).hub``:
a dictionary lookup (Litestar's dependency injection would resolve every dependency again
on every request, a task each when there are several). Nothing is kept in ``app.state``.
"""

from __future__ import annotations

from typing import Any, Self

from litestar.connection import ASGIConnection
from litestar.plugins import InitPluginProtocol

__all__ = ["AppPlugin"]


class AppPlugin(InitPluginProtocol):
    """A plugin that handlers reach with :meth:`of`."""

    @classmethod
    def of(cls, connection: ASGIConnection[Any, Any, Any, Any]) -> Self:
        """This app's instance of the plugin (the app of a request or a websocket)."""
        return connection.app.plugins.get(cls)
