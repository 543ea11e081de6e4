"""Running the app: open the store, bind the port, serve with uvicorn, clean up.

Every start-up problem (a data dir that cannot be made, a database another process holds, a
busy port) surfaces as a :class:`~service.settings.SettingsError` with a message that says
what and where, before anything is served.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import uvicorn

from service.app import create_app
from service.auth.secrets import new_secret
from service.settings import Settings, SettingsError, bind_socket, prepare_data_dir
from service.store import Store, StoreLockedError

log = logging.getLogger("agnes.server")


class AdminEndpoint(msgspec.Struct, frozen=True):
    """What ``DATA_DIR/.admin.json`` tells the CLI about the server holding the data dir."""

    url: str
    secret: str
    pid: int


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
    try:
        return Store(settings.db_path)
    except StoreLockedError as exc:
        raise SettingsError(str(exc)) from None


def serve(settings: Settings, *, announce: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted; ``announce`` gets the base URL once the port is bound."""
    store = open_store(settings)
    try:
        sock = bind_socket(settings.host, settings.port)
    except SettingsError:
        store.close()
        raise
    port = sock.getsockname()[1]
    secret = new_secret()
    base = loopback_url(settings.host, port)
    app = create_app(settings, store, admin_secret=secret)
    write_admin_file(settings.admin_file, AdminEndpoint(url=base, secret=secret, pid=os.getpid()))
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again: make
    # that a normal exit so the clean-up below (checkpoint, admin file) always runs.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if announce:
            announce(base)
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        settings.admin_file.unlink(missing_ok=True)
        sock.close()
        store.close()
