"""The store plugin: the settings, the open database, and what is read from it once."""

from __future__ import annotations

from service.auth.principals import Principals
from service.plugins import AppPlugin
from service.settings import Settings
from service.store import Store, stats

__all__ = ["StorePlugin", "TimeZones"]


class TimeZones:
    """The IANA names the database can convert to: the only ones ``tz`` may take."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def __contains__(self, name: object) -> bool:
        return name in self.names


class StorePlugin(AppPlugin):
    """What every part of the app reads from: ``settings``, the open ``store`` (whoever
    opened it closes it), the ``time_zones`` it knows and the remembered callers
    (``principals``) that authentication checks against."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.time_zones = TimeZones(store.read_sync(stats.time_zones))
        self.principals = Principals(store)
