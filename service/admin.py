"""The operator's actions (users, tokens), the same whether the CLI runs them on the
database directly or a running server runs them for it through its loopback admin API;
and how the CLI finds that server (``DATA_DIR/.admin.json``) or opens the database itself.

Kept free of web-framework imports: every CLI command loads this module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import msgspec

from service.auth.secrets import digest, looks_like_token, new_token, shown_prefix
from service.models import NewToken, TokenInfo, User
from service.settings import (
    Settings,
    SettingsError,
    duckdb_memory_limit,
    duckdb_threads,
    prepare_data_dir,
)
from service.store import Cursor, Store, StoreLockedError, users

SECRET_HEADER = "x-agnes-admin-secret"
MAX_EXPIRES_DAYS = 36_500
"""The longest a token may be made to last (100 years); for longer, make one that never expires."""


class AdminEndpoint(msgspec.Struct, frozen=True):
    """What ``DATA_DIR/.admin.json`` tells the CLI about the server holding the data dir."""

    url: str
    secret: str
    pid: int


def write_admin_file(path: Path, endpoint: AdminEndpoint) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(msgspec.json.encode(endpoint))
    os.chmod(path, 0o600)


def read_admin_file(path: Path) -> AdminEndpoint | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=AdminEndpoint)
    except (OSError, msgspec.DecodeError, json.JSONDecodeError):
        return None


def open_store(settings: Settings) -> Store:
    prepare_data_dir(settings)
    memory_limit, threads = duckdb_memory_limit(settings), duckdb_threads(settings)
    try:  # a value DuckDB cannot take is a setting's error, said before the database opens
        duckdb.connect(":memory:", config={"memory_limit": memory_limit}).close()
    except duckdb.Error as exc:
        raise SettingsError(f"DuckDB memory limit {memory_limit!r}: {exc}") from None
    try:
        return Store(settings.db_path, memory_limit=memory_limit, threads=threads)
    except StoreLockedError as exc:
        raise SettingsError(str(exc)) from None


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
