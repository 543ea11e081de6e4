"""Every error leaves the service as JSON: ``{"status_code", "error", "detail"}``.

``error`` is a stable machine-readable code (``invalid_gzip``, ``unauthorized``, ...) and
``detail`` a sentence for people; validation errors also carry ``extra`` with the fields.
"""

from __future__ import annotations

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


def _code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
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
