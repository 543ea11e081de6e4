"""Transcript lines as Claude Code writes them, key for key in its order.

Every line the tests, the benchmarks and the demo write comes from here: a prompt or a
tool's result (:func:`user`), an API response's line (:func:`assistant`), the content
blocks inside them (:func:`tool_use`, :func:`tool_result`), and a file's bytes
(:func:`jsonl`). :func:`response` is the one-line response the benchmarks send, stamped now.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypedDict, Unpack

import msgspec

__all__ = [
    "CWD",
    "SESSION",
    "VERSION",
    "Author",
    "assistant",
    "jsonl",
    "no_usage",
    "response",
    "tool_result",
    "tool_use",
    "user",
]

SESSION = "11111111-2222-4333-8444-555555555555"
CWD = "/home/analyst/repo"
VERSION = "2.1.12"


class Author(TypedDict, total=False):
    """Whose line it is and where it stands: the keyword arguments every line takes (the
    defaults: the main session :data:`SESSION` in :data:`CWD`, no parent, no agent)."""

    session: str
    sidechain: bool
    parent: str | None
    cwd: str
    version: str
    agent_id: str | None


def _line(body: dict[str, Any], author: Author, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``body`` (from ``type`` or ``message`` on, with ``uuid`` and ``timestamp``) after the
    keys Claude Code writes first, then ``extra``."""
    line: dict[str, Any] = {
        "parentUuid": author.get("parent"),
        "isSidechain": author.get("sidechain", False),
        "userType": "external",
        "cwd": author.get("cwd", CWD),
        "sessionId": author.get("session", SESSION),
        "version": author.get("version", VERSION),
        "gitBranch": "main",
    }
    agent_id = author.get("agent_id")
    if agent_id is not None:
        line["agentId"] = agent_id
    line.update(body)
    line.update(extra or {})
    return line


def user(
    content: Any,
    *,
    uuid: str,
    ts: str,
    extra: Mapping[str, Any] | None = None,
    **author: Unpack[Author],
) -> dict[str, Any]:
    """A ``user`` line: a prompt (``content`` a string or text blocks) or tool results."""
    body = {"type": "user", "message": {"role": "user", "content": content}}
    return _line({**body, "uuid": uuid, "timestamp": ts}, author, extra)


def assistant(
    *,
    uuid: str,
    ts: str,
    message_id: str | None = "msg_01",
    request_id: str | None = "req_01",
    model: str = "claude-opus-4-6",
    usage: dict[str, Any] | None = None,
    content: list[dict[str, Any]] | None = None,
    stop_reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
    **author: Unpack[Author],
) -> dict[str, Any]:
    """One line of an API response. Claude Code writes a response as one line per content
    block, each with the response's id, request id and usage; all but the last carry a
    placeholder ``output_tokens``."""
    message: dict[str, Any] = {"model": model}
    if message_id is not None:
        message["id"] = message_id
    message.update(
        {
            "type": "message",
            "role": "assistant",
            "content": content if content is not None else [{"type": "text", "text": "hi"}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage if usage is not None else {"input_tokens": 1, "output_tokens": 1},
        }
    )
    body: dict[str, Any] = {"message": message}
    if request_id is not None:
        body["requestId"] = request_id
    body.update({"type": "assistant", "uuid": uuid, "timestamp": ts})
    return _line(body, author, extra)


def no_usage() -> dict[str, int]:
    """The usage of a ``<synthetic>`` line (an error notice Claude Code writes itself):
    every count zero."""
    return {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def tool_use(tool_id: str, tool_name: str, **tool_input: Any) -> dict[str, Any]:
    """A ``tool_use`` content block of a response."""
    return {"type": "tool_use", "id": tool_id, "name": tool_name, "input": tool_input}


def tool_result(tool_use_id: str, *, is_error: bool = False, output: str = "ok") -> dict[str, Any]:
    """A ``tool_result`` content block of a ``user`` line."""
    return {
        "type": "tool_result",
        "tool_use_id": tool_use_id,
        "content": output,
        "is_error": is_error,
    }


def jsonl(*lines: dict[str, Any] | bytes) -> bytes:
    """Lines joined the way Claude Code writes them, each ending in a newline."""
    return b"".join(
        (line if isinstance(line, bytes) else msgspec.json.encode(line)) + b"\n" for line in lines
    )


def response(
    session: str,
    n: int,
    *,
    tokens: tuple[int, int, int, int] = (10, 20, 30, 40),
    model: str = "claude-opus-4-6",
    size: int = 0,
    cwd: str = CWD,
    at: datetime | None = None,
) -> bytes:
    """A whole response on one line, as a file's bytes: the ``n``-th of ``session``, with
    ``tokens`` (input, output, cache creation, cache read), stamped ``at`` (now when not
    given), its text padded so the line is about ``size`` bytes."""
    inp, out, created, read = tokens
    line = assistant(
        uuid=f"{session}-u{n}",
        ts=(at or datetime.now(UTC)).isoformat(),
        message_id=f"msg_{session}_{n}",
        request_id=f"req_{session}_{n}",
        model=model,
        usage={
            "input_tokens": inp,
            "output_tokens": out,
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
        },
        content=[{"type": "text", "text": "done"}],
        session=session,
        cwd=cwd,
    )
    encoded = msgspec.json.encode(line)
    if len(encoded) + 1 < size:
        line["message"]["content"][0]["text"] = "x" * (size - len(encoded) - 1 + 4)
        encoded = msgspec.json.encode(line)
    return encoded + b"\n"
