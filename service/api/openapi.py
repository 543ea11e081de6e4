"""What ``/schema`` says beyond what Litestar reads from the handlers' signatures: the
error answers each operation can give, and which operations need no token.

Handlers name their error answers with :func:`errors` (``responses=errors(400, 401)``), so
a client, and the fuzz test (``tests/test_fuzz.py``), can hold the service to its document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Schema,
)
from litestar.openapi.spec.enums import OpenAPIType


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every error answer (built in ``service.api.errors``): ``error`` is a stable code for
    programs (``invalid_gzip``, ``unauthorized``, ...), ``detail`` a sentence for people;
    ``extra`` names the fields that failed validation."""

    status_code: int
    error: str
    detail: str
    extra: list[Any] | dict[str, Any] | None = None


WHY = {
    400: "Bad input: a parameter or body the service cannot take (`error` says which).",
    401: "No token, or one that is unknown, revoked or expired (or its user deactivated).",
    403: "Not allowed: a write (or `GET /api/sync/manifest`, which records a pull) with the"
    " session cookie but without its CSRF token, or a"
    " caller without the rights the operation needs.",
    404: "Nothing of the caller's by that name.",
    409: "An audit event reuses the id of another event (stored already, or in the same"
    " batch) with other content; nothing was stored.",
    413: "The upload (or one audit event) is larger than the limit.",
    507: "No space left to store the upload; nothing was kept (retry later).",
}


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """The documented error answers ``codes`` (each with the JSON error body)."""
    return {
        code: ResponseSpec(data_container=ErrorBody, description=WHY[code], generate_examples=False)
        for code in codes
    }


NOT_MODIFIED = {
    304: ResponseSpec(
        data_container=None,
        description="Not modified: `If-None-Match` carried the current `ETag`.",
        generate_examples=False,
    )
}


@dataclass
class PublicOperation(Operation):
    """An operation that needs no token: overrides the document's default security."""

    def __post_init__(self) -> None:
        self.security = []


@dataclass
class FileOperation(Operation):
    """A file download. Litestar documents the ``Last-Modified`` header as a JSON Schema
    ``date-time`` (RFC 3339), but the header is an HTTP date (``Sat, 21 Nov 2026 14:11:49
    GMT``), which that format does not describe: the document drops the format."""

    def __post_init__(self) -> None:
        for response in (self.responses or {}).values():
            header = (getattr(response, "headers", None) or {}).get("last-modified")
            if isinstance(header, OpenAPIHeader) and isinstance(header.schema, Schema):
                header.schema.format = None
                header.description = "When the file last changed, as an HTTP date."


@dataclass
class CsvOperation(Operation):
    """A stats answer that ``format=csv`` turns into a CSV file (``service.export``): the
    200 answer is documented with both bodies and the attachment's header."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if not isinstance(ok, OpenAPIResponse):
            return
        ok.content = {
            **(ok.content or {}),
            "text/csv; charset=utf-8": OpenAPIMediaType(
                schema=Schema(
                    type=OpenAPIType.STRING,
                    description="With `format=csv`: a header line and every row the query"
                    " selects (not one page), cells that start with = + - @ tab or CR"
                    " prefixed with '.",
                )
            ),
        }
        ok.headers = {
            **(ok.headers or {}),
            "Content-Disposition": OpenAPIHeader(
                schema=Schema(type=OpenAPIType.STRING),
                description="With `format=csv`: `attachment; filename=agnes-<tab>-<date>.csv`.",
                required=False,
            ),
        }
