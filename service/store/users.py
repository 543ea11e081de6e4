"""Users, their personal access tokens, browser sessions and data versions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from service.models import Caller, TokenInfo, User, iso
from service.store import KEYED_CHUNK, keyed, one_of

if TYPE_CHECKING:
    from service.store import Cursor

__all__ = [
    "ACCESS_CHANGES",
    "AccessChanges",
    "ConflictError",
    "Grant",
    "NotFoundError",
    "add_token",
    "add_user",
    "add_web_session",
    "all_versions",
    "authenticate_token",
    "authenticate_web_session",
    "bump_versions",
    "end_web_session",
    "get_user",
    "get_version",
    "list_tokens",
    "list_users",
    "record_pull",
    "revoke_token",
    "set_active",
    "token_grant",
    "unknown_user_ids",
    "user_ids_by_folder",
    "web_session_grant",
]


class NotFoundError(LookupError):
    """The user or token named does not exist."""


class ConflictError(ValueError):
    """The thing to create exists already."""


def _now() -> datetime:
    return datetime.now(UTC)


class AccessChanges:
    """Counts, in this process, the changes that can take someone's access away: a token
    revoked, a user deactivated (or activated), a browser session ended.

    Whoever keeps callers in memory (``service.auth.principals``) drops them when the count
    moves. Each change counts from inside its transaction, before it commits; so an answer
    read from the database soon after a change may predate its commit, and is not kept for
    :data:`SETTLE_SECONDS`.
    """

    SETTLE_SECONDS = 2.0

    def __init__(self) -> None:
        self.count = 0
        self.last = -float("inf")

    def note(self) -> None:
        self.count += 1
        self.last = time.monotonic()

    def settled(self, since: float) -> bool:
        """Whether a read that started at ``since`` (``time.monotonic()``) saw every change
        counted before it committed."""
        return since - self.last >= self.SETTLE_SECONDS


ACCESS_CHANGES = AccessChanges()


_USER_COLUMNS = "id, email, is_admin, is_active, created_at, last_pull_at"


def _user(row: tuple[Any, ...]) -> User:
    return User(
        id=str(row[0]),
        email=str(row[1]),
        is_admin=bool(row[2]),
        is_active=bool(row[3]),
        created_at=iso(row[4]),
        last_pull_at=iso(row[5]),
    )


def add_user(cur: Cursor, email: str, *, is_admin: bool = False) -> User:
    email = email.strip().lower()
    if cur.execute("SELECT 1 FROM users WHERE email = ?", [email]).fetchone():
        raise ConflictError(f"a user with email {email} exists already")
    user_id = str(uuid.uuid4())
    cur.execute(
        "INSERT INTO users (id, email, is_admin, created_at) VALUES (?, ?, ?, ?)",
        [user_id, email, is_admin, _now()],
    )
    return get_user(cur, user_id)


def get_user(cur: Cursor, id_or_email: str) -> User:
    row = cur.execute(
        f"SELECT {_USER_COLUMNS} FROM users WHERE id = ? OR email = ?",
        [id_or_email, id_or_email.strip().lower()],
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no user {id_or_email}")
    return _user(row)


def list_users(cur: Cursor) -> list[User]:
    rows = cur.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY email").fetchall()
    return [_user(row) for row in rows]


def set_active(cur: Cursor, id_or_email: str, active: bool) -> User:
    user = get_user(cur, id_or_email)
    ACCESS_CHANGES.note()
    cur.execute("UPDATE users SET is_active = ? WHERE id = ?", [active, user.id])
    return get_user(cur, user.id)


def unknown_user_ids(cur: Cursor, user_ids: Sequence[str]) -> list[str]:
    """Which of ``user_ids`` name no user."""
    wanted = sorted(set(user_ids))
    where, params = one_of("id", wanted)
    found = {
        str(r[0]) for r in cur.execute(f"SELECT id FROM users WHERE {where}", params).fetchall()
    }
    return [user_id for user_id in wanted if user_id not in found]


def user_ids_by_folder(cur: Cursor) -> dict[str, str]:
    """Folder name → user id: the id itself, and the email's local part (legacy collector)."""
    mapping: dict[str, str] = {}
    rows = cur.execute("SELECT id, email FROM users ORDER BY created_at").fetchall()
    for user_id, email in rows:
        mapping[str(email).split("@", 1)[0]] = str(user_id)
    for (user_id,) in cur.execute("SELECT id FROM users").fetchall():
        mapping[str(user_id)] = str(user_id)
    return mapping


# -- tokens ------------------------------------------------------------------------------

_TOKEN_COLUMNS = (
    "t.id, u.email, t.name, t.prefix, t.is_service, t.created_at, t.expires_at, t.revoked_at"
)


def _token(row: tuple[Any, ...]) -> TokenInfo:
    return TokenInfo(
        id=str(row[0]),
        user_email=str(row[1]),
        name=str(row[2]),
        prefix=str(row[3]),
        is_service=bool(row[4]),
        created_at=iso(row[5]) or "",
        expires_at=iso(row[6]),
        revoked_at=iso(row[7]),
    )


def add_token(
    cur: Cursor,
    user_id_or_email: str,
    *,
    token_hash: str,
    prefix: str,
    name: str,
    expires_days: int | None = None,
    is_service: bool = False,
) -> TokenInfo:
    """Store a token by its hash; the caller made the token and shows it once."""
    user = get_user(cur, user_id_or_email)
    now = _now()
    expires = now + timedelta(days=expires_days) if expires_days is not None else None
    token_id = str(uuid.uuid4())
    cur.execute(
        "INSERT INTO tokens (id, user_id, name, prefix, hash, is_service, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [token_id, user.id, name, prefix, token_hash, is_service, now, expires],
    )
    return _token_by_id(cur, token_id)


def _token_by_id(cur: Cursor, token_id: str) -> TokenInfo:
    row = cur.execute(
        f"SELECT {_TOKEN_COLUMNS} FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?",
        [token_id],
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no token {token_id}")
    return _token(row)


def list_tokens(cur: Cursor, user_id_or_email: str | None = None) -> list[TokenInfo]:
    sql = f"SELECT {_TOKEN_COLUMNS} FROM tokens t JOIN users u ON u.id = t.user_id"
    params: list[object] = []
    if user_id_or_email is not None:
        sql += " WHERE u.id = ?"
        params.append(get_user(cur, user_id_or_email).id)
    rows = cur.execute(sql + " ORDER BY u.email, t.created_at", params).fetchall()
    return [_token(row) for row in rows]


def revoke_token(cur: Cursor, token_hash: str | None, prefix: str) -> TokenInfo:
    """Revoke by the token itself (its hash) or by its displayed prefix (must be unique)."""
    if token_hash is not None:
        rows = cur.execute("SELECT id FROM tokens WHERE hash = ?", [token_hash]).fetchall()
    else:
        rows = cur.execute("SELECT id FROM tokens WHERE prefix = ?", [prefix]).fetchall()
    if not rows:
        raise NotFoundError(f"no token matches {prefix}")
    if len(rows) > 1:
        raise ConflictError(f"{len(rows)} tokens share the prefix {prefix}: give the whole token")
    token_id = str(rows[0][0])
    ACCESS_CHANGES.note()
    cur.execute(
        "UPDATE tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?", [_now(), token_id]
    )
    cur.execute("DELETE FROM web_sessions WHERE token_id = ?", [token_id])
    return _token_by_id(cur, token_id)


_TOKEN_CALLER = (
    "t.id, t.is_service, t.expires_at, t.revoked_at, u.id, u.email, u.is_admin, u.is_active"
)


class Grant(NamedTuple):
    """Who a token or session stands for (or why no one), and until when that holds by
    itself: the first expiry ahead, or None when only a change can end it."""

    caller: Caller | str
    until: datetime | None = None


def _grant(row: tuple[Any, ...], via: str, csrf: str | None = None) -> Grant:
    """The caller behind a token row, or why the token stands for no one now: the same rules
    for a bearer token and for a browser session made from one."""
    token_id, is_service, expires_at, revoked_at, user_id, email, is_admin, is_active = row
    if revoked_at is not None:
        return Grant("token revoked")
    if expires_at is not None and expires_at <= _now():
        return Grant("token expired")
    if not is_active:
        return Grant("user deactivated")
    caller = Caller(
        user_id=user_id,
        email=email,
        is_admin=is_admin,
        token_id=token_id,
        is_service=is_service,
        via=via,
        csrf=csrf,
    )
    return Grant(caller, expires_at)


def token_grant(cur: Cursor, token_hash: str) -> Grant:
    row = cur.execute(
        f"SELECT {_TOKEN_CALLER} FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = ?",
        [token_hash],
    ).fetchone()
    return Grant("unknown token") if row is None else _grant(row, "bearer")


def authenticate_token(cur: Cursor, token_hash: str) -> Caller | str:
    """The caller a token stands for, or the reason it does not stand for anyone."""
    return token_grant(cur, token_hash).caller


# -- browser sessions --------------------------------------------------------------------


def add_web_session(
    cur: Cursor, *, session_hash: str, csrf: str, caller: Caller, lifetime: timedelta
) -> None:
    now = _now()
    cur.execute(
        "INSERT INTO web_sessions VALUES (?, ?, ?, ?, ?, ?)",
        [session_hash, caller.user_id, caller.token_id, csrf, now, now + lifetime],
    )


def web_session_grant(cur: Cursor, session_hash: str) -> Grant:
    row = cur.execute(
        f"SELECT s.csrf, s.expires_at, {_TOKEN_CALLER} FROM web_sessions s"
        " JOIN tokens t ON t.id = s.token_id JOIN users u ON u.id = s.user_id"
        " WHERE s.hash = ?",
        [session_hash],
    ).fetchone()
    if row is None:
        return Grant("not signed in")
    csrf, ends, *token = row
    if ends <= _now():
        return Grant("session expired")
    grant = _grant(tuple(token), "cookie", csrf)
    until = grant.until
    return grant._replace(until=ends if until is None else min(ends, until))


def authenticate_web_session(cur: Cursor, session_hash: str) -> Caller | str:
    return web_session_grant(cur, session_hash).caller


def end_web_session(cur: Cursor, session_hash: str) -> None:
    ACCESS_CHANGES.note()
    cur.execute("DELETE FROM web_sessions WHERE hash = ?", [session_hash])


# -- versions ----------------------------------------------------------------------------


def bump_versions(cur: Cursor, user_ids: set[str] | list[str]) -> dict[str, int]:
    """Give each user a new, higher version; call inside the transaction that changed them.

    One UPDATE for all of them, and an INSERT for those without a row yet (the first
    time): DuckDB's upsert costs several times as much, and a batch of uploads from many
    users runs this once, not once per user."""
    wanted = sorted(set(user_ids))
    versions: dict[str, int] = {}
    for where, params in keyed("user_id", wanted):
        rows = cur.execute(
            f"UPDATE user_versions SET version = version + 1 WHERE {where}"
            " RETURNING user_id, version",
            params,
        ).fetchall()
        versions.update((str(user_id), int(version)) for user_id, version in rows)
    new = [user_id for user_id in wanted if user_id not in versions]
    for start in range(0, len(new), KEYED_CHUNK):
        chunk = new[start : start + KEYED_CHUNK]
        rows = cur.execute(
            "INSERT INTO user_versions VALUES "
            + ", ".join("(?, 1)" for _ in chunk)
            + " RETURNING user_id, version",
            chunk,
        ).fetchall()
        versions.update((str(user_id), int(version)) for user_id, version in rows)
    return versions


def all_versions(cur: Cursor) -> dict[str, int]:
    rows = cur.execute("SELECT user_id, version FROM user_versions").fetchall()
    return {str(user_id): int(version) for user_id, version in rows}


def get_version(cur: Cursor, user_id: str) -> int:
    row = cur.execute("SELECT version FROM user_versions WHERE user_id = ?", [user_id]).fetchone()
    return int(row[0]) if row else 0


def record_pull(cur: Cursor, user_id: str, at: datetime) -> None:
    cur.execute("UPDATE users SET last_pull_at = ? WHERE id = ?", [at, user_id])
