"""The operator's actions (users, tokens), the same whether the CLI runs them on the
database directly or a running server runs them for it through its loopback admin API."""

from __future__ import annotations

from service.auth.secrets import digest, looks_like_token, new_token, shown_prefix
from service.models import NewToken, TokenInfo, User
from service.store import Cursor, users


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
    if expires_days is not None and expires_days < 1:
        raise ValueError("--expires-days must be at least 1")
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
