"""Every error leaves the service as JSON: ``{"status_code", "error", "detail"}``.

``error`` is a stable machine-readable code (``invalid_gzip``, ``unauthorized``, ...) and
``detail`` a sentence for people; validation errors also carry ``extra`` with the fields.
"""

from __future__ import annotations

import errno
import logging
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

log = logging.getLogger("agnes.api")


class ApiError(HTTPException):
    """An HTTP error with a specific ``error`` code."""

    def __init__(self, status_code: int, error: str, detail: str) -> None:
        super().__init__(status_code=status_code, detail=detail)
        self.error = error


NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def storage_error(exc: OSError, what: str) -> ApiError:
    """The answer when ``what`` cannot be written to disk, logged for the operator: a full
    disk or a used-up quota is ``507 insufficient_storage`` (the client may retry later);
    any other failure (a read-only or failing file system) is ``500 storage_error``."""
    reason = exc.strerror or str(exc)
    log.error("cannot store %s: %s (%s)", what, reason, exc.filename)
    if exc.errno in NO_SPACE:
        return ApiError(
            507, "insufficient_storage", f"no space left to store {what}; nothing was kept"
        )
    return ApiError(500, "storage_error", f"cannot store {what}: {reason}; nothing was kept")


def _code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code == 404 and request.method == "GET":
        from service.api import pages  # the pages build on the API, not the other way round

        if pages.wants_html(request):
            return pages.not_found_page(request)
    body: dict[str, Any] = {
        "status_code": exc.status_code,
        "error": getattr(exc, "error", None) or _code(exc.status_code),
        "detail": exc.detail,
    }
    if exc.extra:
        body["extra"] = exc.extra
    return Response(body, status_code=exc.status_code, headers=exc.headers)


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = {"status_code": 500, "error": "internal_error", "detail": "internal server error"}
    return Response(body, status_code=500)


exception_handlers: dict[type[Exception] | int, Any] = {
    HTTPException: http_error,
    Exception: unexpected_error,
}
