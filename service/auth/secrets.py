"""Making and hashing the secrets the service hands out.

Tokens and session ids carry 256 random bits, so a plain SHA-256 is enough to store them:
there is nothing to brute-force, and a slow hash would cost every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "agn_"
SHOWN_PREFIX_LENGTH = len(TOKEN_PREFIX) + 8


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def shown_prefix(token: str) -> str:
    """The part of a token that may be displayed again to tell tokens apart."""
    return token[:SHOWN_PREFIX_LENGTH]


def looks_like_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX) and len(value) > SHOWN_PREFIX_LENGTH


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
