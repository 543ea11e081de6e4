"""Running the app: open the store, bind the port, serve with uvicorn, clean up.

Every start-up problem (a data dir that cannot be made, a database another process holds, a
busy port) surfaces as a :class:`~service.settings.SettingsError` with a message that says
what and where, before anything is served.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.admin import AdminEndpoint, open_store, write_admin_file
from service.app import create_app
from service.auth.secrets import new_secret
from service.settings import Settings, SettingsError, bind_socket

__all__ = [
    "HeaderLimitedHttp",
    "bind_admin_socket",
    "loopback_url",
    "raise_open_file_limit",
    "serve",
    "trusted_proxies",
    "uvicorn_config",
]

log = logging.getLogger("agnes.server")


def loopback_url(host: str, port: int) -> str:
    if host in {"", "0.0.0.0", "localhost"}:  # noqa: S104 - a wildcard bind is reachable on loopback
        return f"http://127.0.0.1:{port}"
    if host == "::":
        return f"http://[::1]:{port}"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{port}"
    return f"http://[{host}]:{port}" if address.version == 6 else f"http://{host}:{port}"


class HeaderLimitedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request whose line and headers run past
    ``max_header_bytes`` with a ``431``, the connection closed, before the app sees it.

    Counted twice: the headers as parsed (a head that arrives whole in one read), and the
    bytes received while the head is unfinished, so that no one header can grow in memory
    past the limit either (the parser keeps an unfinished header whole). The body is not
    counted."""

    max_header_bytes = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._raw_head = 0  # bytes received since the head began
        self._parsed_head = 0  # of the request line and headers parsed so far
        self._too_large = False  # refused: the rest of what was read is parsed and ignored

    def _count(self, size: int) -> None:
        self._parsed_head += size
        if self._parsed_head > self.max_header_bytes:
            self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed_head = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url) + 16)  # with the method and the HTTP version
        if not self._too_large:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # with ": " and the line end
        if not self._too_large:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._raw_head = 0
        if not self._too_large:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._too_large:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._too_large:
            super().on_message_complete()
            self._in_head = True

    def data_received(self, data: bytes) -> None:
        if self._too_large:
            return
        counted = self._in_head
        if counted:
            self._raw_head += len(data)
        super().data_received(data)
        if counted and self._in_head and self._raw_head > self.max_header_bytes:
            self._refuse()

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        if self._too_large:
            return
        self._too_large = True
        log.warning(
            "refused a request from %s whose line and headers pass %d bytes (431)",
            self.client[0] if self.client else "?",
            self.max_header_bytes,
        )
        body = msgspec.json.encode(
            {
                "status_code": 431,
                "error": "headers_too_large",
                "detail": f"the request line and headers may be at most {self.max_header_bytes}"
                " bytes",
            }
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


def trusted_proxies(value: str) -> list[str] | None:
    """The proxies ``--forwarded-allow-ips`` names (None: trust no one's X-Forwarded-*)."""
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SettingsError(
                f"--forwarded-allow-ips: {entry!r} is not an IP address or network"
            ) from None
    return entries or None


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """How the app is served, the same for ``serve`` and the tests: a limit on request
    headers, and X-Forwarded-* believed only from the proxies the settings name."""
    proxies = trusted_proxies(settings.forwarded_allow_ips)
    http = type(
        "HeaderLimitedHttp", (HeaderLimitedHttp,), {"max_header_bytes": settings.max_header_bytes}
    )
    return uvicorn.Config(
        app,
        http=http,
        proxy_headers=proxies is not None,
        forwarded_allow_ips=proxies or [],
        **options,
    )


def bind_admin_socket() -> socket.socket:
    """A listener of its own for the admin API, on a loopback address and a free port, so the
    CLI reaches it whatever address ``--host`` names (and no one else can)."""
    try:
        return bind_socket("127.0.0.1", 0)
    except SettingsError:
        return bind_socket("::1", 0)


def raise_open_file_limit() -> int:
    """Lift this process's soft limit on open files to its hard limit; returns the limit.

    Every socket is a file, and the usual soft default of 1,024 would refuse connections
    long before the thousands of open dashboards one process is meant to hold."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("open-file limit stays at %d: %s", soft, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def serve(settings: Settings, *, announce: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted; ``announce`` gets the base URL once the port is bound."""
    raise_open_file_limit()
    trusted_proxies(settings.forwarded_allow_ips)  # a bad entry is an error before anything
    store = open_store(settings)
    try:
        sock = bind_socket(settings.host, settings.port)
    except SettingsError:
        store.close()
        raise
    try:
        admin_sock = bind_admin_socket()
    except SettingsError:
        sock.close()
        store.close()
        raise
    port = sock.getsockname()[1]
    secret = new_secret()
    base = loopback_url(settings.host, port)
    admin_host, admin_port = admin_sock.getsockname()[:2]
    app = create_app(settings, store, admin_secret=secret, admin_listener=(admin_host, admin_port))
    admin_url = loopback_url(admin_host, admin_port)
    write_admin_file(
        settings.admin_file, AdminEndpoint(url=admin_url, secret=secret, pid=os.getpid())
    )
    config = uvicorn_config(
        app,
        settings,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again: make
    # that a normal exit so the clean-up below (checkpoint, admin file) always runs.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config.load()
    # A full collection visits every object the collector tracks, and pauses the event
    # loop, and so every socket, for as long as it takes. The modules, app and routes made
    # so far (~90,000 objects) live as long as the process: leave them out of every one.
    gc.collect()
    gc.freeze()
    try:
        if announce:
            announce(base)
        uvicorn.Server(config).run(sockets=[sock, admin_sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        settings.admin_file.unlink(missing_ok=True)
        sock.close()
        admin_sock.close()
        store.close()
