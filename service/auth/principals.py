"""Who a bearer token or a session cookie stands for, remembered, so that an authenticated
request costs no database read.

A caller is read from the database once (by the hash of the secret) and kept with the
moment its token or session expires. Kept callers are all forgotten as soon as access may
have been taken away in this process (:data:`~service.store.users.ACCESS_CHANGES`: a token
revoked, a user deactivated, a browser session ended), so such a change holds for the very
next request; an expiry is checked on every use. Refusals are not kept: they are rare, and
each is read again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from service.models import Caller
from service.store import Cursor, Store, users

MAX_KEPT = 50_000
"""Callers kept at most (least recently used out first): a few MB."""


@dataclass(frozen=True, slots=True)
class _Kept:
    caller: Caller
    until: datetime | None
    changes: int  # ACCESS_CHANGES.count when it was read


class Principals:
    def __init__(self, store: Store, *, max_kept: int = MAX_KEPT) -> None:
        self.store = store
        self.max_kept = max_kept
        self._kept: OrderedDict[tuple[str, str], _Kept] = OrderedDict()
        self._changes = users.ACCESS_CHANGES

    async def bearer(self, token_hash: str) -> Caller | str:
        return (await self.bearer_grant(token_hash)).caller

    async def session(self, session_hash: str) -> Caller | str:
        return (await self.session_grant(session_hash)).caller

    async def bearer_grant(self, token_hash: str) -> users.Grant:
        return await self._find("bearer", token_hash, users.token_grant)

    async def session_grant(self, session_hash: str) -> users.Grant:
        return await self._find("cookie", session_hash, users.web_session_grant)

    async def _find(
        self, kind: str, secret_hash: str, read: Callable[[Cursor, str], users.Grant]
    ) -> users.Grant:
        key = (kind, secret_hash)
        kept = self._kept.get(key)
        if kept is not None:
            if kept.changes == self._changes.count and (
                kept.until is None or datetime.now(UTC) < kept.until
            ):
                self._kept.move_to_end(key)
                return users.Grant(kept.caller, kept.until)
            del self._kept[key]
        changes, started = self._changes.count, time.monotonic()
        grant = await self.store.read(read, secret_hash)
        if (
            isinstance(grant.caller, Caller)
            and changes == self._changes.count
            and self._changes.settled(started)
        ):
            self._kept[key] = _Kept(grant.caller, grant.until, changes)
            if len(self._kept) > self.max_kept:
                self._kept.popitem(last=False)
        return grant
