"""Real parts for every test: a DuckDB file in a temp folder and the app served by uvicorn
on a free port, reached over HTTP by httpx."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar

from service import operations
from service.app import create_app
from service.models import User
from service.server import uvicorn_config
from service.settings import Settings, bind_socket, prepare_data_dir
from service.store import Store

ADMIN_SECRET = "test-admin-secret"


@dataclass
class Account:
    user: User
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Server:
    """A running service: its URL, settings and store (for seeding and checking)."""

    url: str
    settings: Settings
    store: Store
    app: Litestar

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/api/me/live"

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Call the loopback admin API the way the CLI does."""
        headers = {"x-agnes-admin-secret": ADMIN_SECRET}
        return httpx.request(method, f"{self.url}/api/admin{path}", headers=headers, **kw)

    def client(self, account: Account | None = None, **kw: object) -> httpx.Client:
        headers = account.headers if account else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]

    def account(self, email: str, *, is_admin: bool = False, is_service: bool = False) -> Account:
        user = self.store.write_sync(operations.add_user, email, is_admin)
        made = self.store.write_sync(operations.create_token, email, "test", None, is_service)
        return Account(user=user, token=made.token)


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings for a temp data dir; ``@pytest.mark.settings(watch=False, ...)`` on a test
    changes any other field."""
    marker = request.node.get_closest_marker("settings")
    overrides = marker.kwargs if marker else {}
    settings = Settings(data_dir=tmp_path / "data", host="127.0.0.1", port=0, **overrides)
    prepare_data_dir(settings)
    return settings


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = Store(settings.db_path)
    yield store
    store.close()


@pytest.fixture
def server(settings: Settings, store: Store) -> Iterator[Server]:
    sock = bind_socket(settings.host, 0)
    port = sock.getsockname()[1]
    app = create_app(settings, store, admin_secret=ADMIN_SECRET)
    config = uvicorn_config(
        app, settings, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    yield Server(url=f"http://127.0.0.1:{port}", settings=settings, store=store, app=app)
    uv.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def alice(server: Server) -> Account:
    return server.account("alice@example.com")


@pytest.fixture
def bob(server: Server) -> Account:
    return server.account("bob@example.com")
