from __future__ import annotations

from litestar import get

from service import __version__
from service.api.openapi import PublicOperation
from service.models import Health

ACCEPTS_HEADER = "X-Agnes-Accepts"


@get(
    "/api/health",
    exclude_from_auth=True,
    response_headers={ACCEPTS_HEADER: "session-gzip"},
    operation_class=PublicOperation,
)
async def health() -> Health:
    """Liveness, and what the server accepts (``session-gzip``: gzipped uploads)."""
    return Health(status="ok", version=__version__)
