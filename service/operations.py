"""What the service does to its data on someone's behalf, each written once.

Users and tokens: one transaction each (a function of a cursor), which the CLI runs on the
database directly, or a running server runs for it through ``/api/admin``. Records that a
request leaves (a manifest pull, a ``CLAUDE.local.md`` kept): one transaction each, then
the hub tells the user's open dashboards. ``ingest`` and ``reprocess``: through the server's
ingest queue, or, with no server, by the CLI itself on the database. Audit events sent over
HTTP: through the server's own spool file and the queue.

Kept free of web-framework imports: every CLI command loads this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread

from service.auth.secrets import digest, looks_like_token, new_token, shown_prefix
from service.ingest.backfill import ingest_files
from service.ingest.batch import TRANSCRIPT_TABS
from service.ingest.pipeline import BatchReport, Ingest
from service.models import AuditEvent, Manifest, NewToken, TokenInfo, User, iso
from service.settings import Settings
from service.spool_writer import append_events, daily_name
from service.store import Cursor, Store, audit, files, users
from service.store.ingest import reset_derived
from watchers.scan import archived_files

if TYPE_CHECKING:
    from service.hub import Hub
    from service.ingest.queue import IngestQueue

__all__ = [
    "MAX_EXPIRES_DAYS",
    "SPOOL_WRITER",
    "ProgressBar",
    "add_user",
    "create_token",
    "fetch_manifest",
    "ingest_here",
    "keep_event",
    "list_tokens",
    "list_users",
    "no_bar",
    "reprocess",
    "reprocess_here",
    "revoke_token",
    "set_active",
    "store_events",
]

MAX_EXPIRES_DAYS = 36_500
"""The longest a token may be made to last (100 years); for longer, make one that never expires."""

# -- users and tokens ------------------------------------------------------------------------


def add_user(cur: Cursor, email: str, is_admin: bool = False) -> User:
    if "@" not in email or email.startswith("@") or email.endswith("@") or " " in email.strip():
        raise ValueError(f"{email!r} is not an email address")
    return users.add_user(cur, email, is_admin=is_admin)


def list_users(cur: Cursor) -> list[User]:
    return users.list_users(cur)


def set_active(cur: Cursor, email: str, active: bool) -> User:
    return users.set_active(cur, email, active)


def create_token(
    cur: Cursor,
    email: str,
    name: str = "default",
    expires_days: int | None = None,
    is_service: bool = False,
) -> NewToken:
    if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRES_DAYS:
        raise ValueError(
            f"--expires-days must be 1 to {MAX_EXPIRES_DAYS} (leave it out for no expiry)"
        )
    token = new_token()
    info = users.add_token(
        cur,
        email,
        token_hash=digest(token),
        prefix=shown_prefix(token),
        name=name,
        expires_days=expires_days,
        is_service=is_service,
    )
    return NewToken(token=token, info=info)


def list_tokens(cur: Cursor, email: str | None = None) -> list[TokenInfo]:
    return users.list_tokens(cur, email)


def revoke_token(cur: Cursor, token_or_prefix: str) -> TokenInfo:
    value = token_or_prefix.strip()
    whole = looks_like_token(value) and len(value) > len(shown_prefix(value))
    return users.revoke_token(cur, digest(value) if whole else None, shown_prefix(value))


# -- records a request leaves ------------------------------------------------------------------


def _record_pull(
    cur: Cursor, event: AuditEvent, sessions_dir: Path
) -> tuple[Manifest, dict[str, int]]:
    users.record_pull(cur, event.user_id, event.timestamp)
    audit.insert_events(cur, [event])
    versions = users.bump_versions(cur, [event.user_id])
    return Manifest(
        generated_at=iso(event.timestamp) or "",
        user_id=event.user_id,
        files=files.manifest_files(cur, event.user_id, sessions_dir),
    ), versions


async def fetch_manifest(store: Store, hub: Hub, event: AuditEvent, sessions_dir: Path) -> Manifest:
    """The user's stored session files, with the pull (``last_pull_at`` and the
    ``manifest.fetch`` event) recorded in the same transaction."""
    manifest, versions = await store.write(_record_pull, event, sessions_dir)
    hub.notify(versions, {event.user_id: ("sync",)})
    return manifest


def _record_event(cur: Cursor, event: AuditEvent) -> dict[str, int]:
    audit.insert_events(cur, [event])
    return users.bump_versions(cur, [event.user_id])


async def keep_event(store: Store, hub: Hub, event: AuditEvent) -> None:
    """Store one audit event of the user's own (it shows on their Sync tab at once)."""
    versions = await store.write(_record_event, event)
    hub.notify(versions, {event.user_id: ("sync",)})


SPOOL_WRITER = "api"
"""The server's own spool file (``audit/api-YYYY-MM-DD.jsonl``) that events sent over HTTP
are appended to."""


async def store_events(
    store: Store, settings: Settings, queue: IngestQueue, events: list[AuditEvent]
) -> int:
    """Append ``events`` (checked: none the spool would skip) to the server's own spool file
    and wait for the ingest batch that reads them, as a line another service appends takes
    that way; returns how many were not stored before. An ``OSError`` means nothing was
    appended."""
    ids = sorted({event.id for event in events if event.id is not None})
    before = await store.read(audit.existing_ids, ids)
    path = await anyio.to_thread.run_sync(
        lambda: append_events(settings.audit_dir, events, name=daily_name(SPOOL_WRITER))
    )
    await queue.ingest([path])
    after = await store.read(audit.existing_ids, ids)
    return len(after - before)


# -- reading transcripts again ---------------------------------------------------------------


ProgressBar = Callable[[int], AbstractContextManager[Callable[[int], None]]]
"""Given the bytes to read, a context in which a call advances by the bytes read."""


@contextmanager
def no_bar(total: int) -> Iterator[Callable[[int], None]]:
    yield lambda _: None


def _archived(settings: Settings) -> list[Path]:
    return [path for path, _, _ in archived_files(settings)]


async def reprocess(store: Store, settings: Settings, queue: IngestQueue, hub: Hub) -> BatchReport:
    """Forget everything derived from transcripts and read every archived file again,
    through the running server's ingest queue (no batch straddles the reset)."""
    async with queue.exclusive():
        versions = await store.write(reset_derived)
    hub.notify(versions, dict.fromkeys(versions, TRANSCRIPT_TABS))
    return await queue.ingest(await anyio.to_thread.run_sync(_archived, settings))


def reprocess_here(store: Store, settings: Settings, bar: ProgressBar = no_bar) -> BatchReport:
    """:func:`reprocess` with no server: on the database this process holds."""
    store.write_sync(reset_derived)
    return ingest_here(store, settings, _archived(settings), bar=bar)


def ingest_here(
    store: Store,
    settings: Settings,
    targets: Sequence[Path],
    *,
    sources: Sequence[Path] | None = None,
    bar: ProgressBar = no_bar,
) -> BatchReport:
    """Read ``targets`` (each first copied from ``sources[i]``, when given) with no server,
    in batches on a process pool."""
    with bar(sum(p.stat().st_size for p in sources or targets)) as progress:
        return ingest_files(Ingest(settings, store), targets, sources=sources, progress=progress)
