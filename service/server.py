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
import sys
from collections.abc import Callable

import uvicorn

from service.admin import AdminEndpoint, open_store, write_admin_file
from service.app import create_app
from service.auth.secrets import new_secret
from service.settings import Settings, SettingsError, bind_socket

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
    config.load()
    # A full collection visits every object the collector tracks, and pauses the event
    # loop, and so every socket, for as long as it takes. The modules, app and routes made
    # so far (~90,000 objects) live as long as the process: leave them out of every one.
    gc.collect()
    gc.freeze()
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
