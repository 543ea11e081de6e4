"""Driving the dashboard in Debian's Chromium, and what its cells should read.

The formatters here say, in Python, how the page shows a value (static/dom.js): a test
reads the API's answer, formats it the way a person should see it, and compares that with
the page's text.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from playwright.sync_api import Browser, Page, expect, sync_playwright

from service.synthetic.lines import assistant, jsonl, tool_result, tool_use, user
from tests.conftest import Account, Server

CHROMIUM = Path(os.environ.get("AGNES_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RESULTS = Path(__file__).resolve().parents[1] / "test-results"


@contextmanager
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        raise RuntimeError(
            f"no Chromium at {CHROMIUM}: `apt-get install chromium`, or set AGNES_CHROMIUM"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Tab:
    """One open dashboard, with what it did that a test may want to check."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.statuses: list[tuple[str, int]] = []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.requests.append((r.url, r.headers)))
        page.on("response", lambda r: self.statuses.append((r.url, r.status)))

    def sign_in(self, server: Server, account: Account, path: str = "/me/activity") -> None:
        self.page.goto(f"{server.url}/login")
        self.page.fill("#token", account.token)
        self.page.click("button[type=submit]")
        self.page.wait_for_url("**/me/activity")
        if path != "/me/activity":
            self.page.goto(server.url + path)

    def show(self, tab: str) -> None:
        self.page.click(f"#tab-{tab}")
        expect(self.page.locator(f"#panel-{tab}")).to_be_visible()

    def mode(self, expected: str, timeout: float = 5000) -> None:
        expect(self.page.locator("#live-label")).to_have_text(expected, timeout=timeout)

    def cells(self, tbody: str) -> list[list[str]]:
        """The text of each cell of each row, whitespace folded."""
        rows: list[list[str]] = self.page.evaluate(
            """(id) => Array.from(document.getElementById(id).rows, (tr) =>
                 Array.from(tr.cells, (td) => td.innerText.split(/\\s+/).join(" ").trim()))""",
            tbody,
        )
        return rows


def wait_for(check: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- seeding through the API ------------------------------------------------------------------


def transcript(
    session: str,
    start: datetime,
    model: str,
    tokens: tuple[int, int, int, int] = (1200, 340, 5000, 800),
    cwd: str | None = None,
) -> bytes:
    """A short session: two prompts, one failing tool call, two responses (run in ``cwd``,
    the project's folder, when given)."""
    where = {"cwd": cwd} if cwd else {}

    def at(minutes: int) -> str:
        return (start + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")

    inp, out, read, create = tokens
    usage = {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": create,
    }
    return jsonl(
        user(
            "How many orders came in last week?",
            uuid=f"{session}-u1",
            ts=at(0),
            session=session,
            **where,
        ),
        assistant(
            uuid=f"{session}-a1",
            ts=at(1),
            message_id=f"{session}-m1",
            request_id=f"{session}-r1",
            model=model,
            usage=usage,
            session=session,
            content=[tool_use(f"{session}-t1", "Bash", command="ls")],
            **where,
        ),
        user(
            [tool_result(f"{session}-t1", is_error=True, output="no such file")],
            uuid=f"{session}-u2",
            ts=at(2),
            session=session,
            **where,
        ),
        user(
            "Try the warehouse instead.", uuid=f"{session}-u3", ts=at(5), session=session, **where
        ),
        assistant(
            uuid=f"{session}-a2",
            ts=at(7),
            message_id=f"{session}-m2",
            request_id=f"{session}-r2",
            model=model,
            usage=usage,
            session=session,
            **where,
        ),
    )


def upload(http: httpx.Client, name: str, data: bytes) -> None:
    response = http.post("/api/upload/sessions", files={"file": (name, data)})
    assert response.status_code == 200, response.text


def settled(http: httpx.Client, names: set[str]) -> dict[str, Any]:
    """The sessions page once every file in ``names`` is listed and no longer pending."""

    def check() -> dict[str, Any] | None:
        page: dict[str, Any] = http.get("/api/me/stats/sessions", params={"limit": 200}).json()
        rows = {r["session_file"]: r for r in page["rows"]}
        done = names <= rows.keys() and all(rows[n]["pipeline_status"] != "pending" for n in names)
        return page if done else None

    return wait_for(check, what=f"{sorted(names)} to be processed")  # type: ignore[no-any-return]


def quiet(http: httpx.Client) -> None:
    """Wait until the caller's version stops moving (a second without a change)."""
    version = 0
    while True:
        answer = http.get("/api/me/live/poll", params={"since": version, "timeout": 1})
        if answer.status_code == 204:
            return
        version = answer.json()["version"]


def audit_events(server: Server, admin: Account, events: list[dict[str, Any]]) -> None:
    with server.client(admin) as http:
        response = http.post("/api/audit/events", json=events)
    assert response.status_code == 200, response.text


def seed(server: Server, account: Account) -> None:
    """Three sessions (one priced, one of an unpriced model, one broken), a pull, queries
    and a sync, all made through the API the way real clients make them."""
    now = datetime.now(UTC).replace(microsecond=0)
    with server.client(account) as http:
        upload(
            http, "alpha.jsonl", transcript("alpha", now - timedelta(hours=3), "claude-opus-4-6")
        )
        upload(
            http,
            "beta.jsonl",
            transcript("beta", now - timedelta(days=2, hours=5), "mystery-model-7", (10, 20, 0, 0)),
        )
        upload(http, "broken.jsonl", b"this is not a transcript\n")
        settled(http, {"alpha.jsonl", "beta.jsonl", "broken.jsonl"})
        assert http.get("/api/sync/manifest").status_code == 200
    admin = server.account("ops@example.com", is_admin=True)
    user_id = account.user.id
    events = [
        {
            "id": f"q{n}",
            "timestamp": (now - timedelta(hours=n, minutes=7)).isoformat(),
            "user_id": user_id,
            "action": "query.run",
            "resource": f"warehouse.orders_{n}",
            "params": {"sql": f"select count(*) from orders_{n}", "rows": n},
            "result": "ok" if n != 2 else "error",
            "duration_ms": 120.5 * n,
            "client_kind": "cli",
        }
        for n in range(1, 4)
    ]
    events.append(
        {
            "id": "sync1",
            "timestamp": (now - timedelta(minutes=42)).isoformat(),
            "user_id": user_id,
            "action": "sync.trigger",
            "resource": "warehouse",
            "params": {},
            "result": "ok",
            "duration_ms": 2400,
            "client_kind": "cli",
        }
    )
    audit_events(server, admin, events)


# -- how the page shows values (static/dom.js) -------------------------------------------------


def integer(n: int | None) -> str:
    return f"{n or 0:,}"


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    if 0 < value < 0.01:
        text = f"{value:.4f}".rstrip("0")
        return "$" + (text + "0" * (2 - len(text.split(".")[1])))
    return f"${value:,.2f}"


def local_time(iso: str | None, tz: str) -> str:
    if not iso:
        return "—"
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def half_up(value: float) -> int:
    """JavaScript's Math.round (Python's round() goes to the even neighbour)."""
    return math.floor(value + 0.5)


def duration(seconds: float | None) -> str:
    s = max(0, half_up(seconds or 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s % 3600) // 60:02d}m"


def project_name(path: str | None) -> str:
    """The project's short name (static/activity.js projectName): its last folder."""
    if not path:
        return ""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    return parts[-1] if parts else path


def byte_size(n: float) -> str:
    """33180 → "32.4 KB" (static/activity.js byteSize)."""
    units = ["bytes", "KB", "MB", "GB", "TB"]
    value, unit = float(n), 0
    while abs(value) >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{integer(round(value))} bytes"
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text} {units[unit]}"


def params_text(params: dict[str, Any]) -> str:
    """An event's params as the page lists them: "key value" pairs, sizes in KB."""
    out = []
    for key, value in params.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            is_size = key.lower().endswith(("size", "bytes"))
            shown = byte_size(value) if is_size else f"{value:,}"
        elif isinstance(value, str):
            shown = value
        else:
            shown = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        out.append(f"{key} {shown}")
    return " ".join(" ".join(out).split())


def milliseconds(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{half_up(ms)} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


OVERFLOW = """() => {
    const visible = (e) => e.offsetParent !== null || getComputedStyle(e).position === "fixed";
    const boxes = [...document.querySelectorAll(
        ".card, .stat, .table-wrap, table, .empty, .notice, .filters, .panel-head, .chart-card"
    )].filter(visible);
    const wide = boxes
        .filter((e) => e.scrollWidth > e.clientWidth + 1)
        .map((e) => `${e.tagName.toLowerCase()}#${e.id}.${[...e.classList].join(".")}`
                    + ` ${e.scrollWidth} > ${e.clientWidth}`);
    const page = document.documentElement;
    if (page.scrollWidth > page.clientWidth) {
        wide.push(`page ${page.scrollWidth} > ${page.clientWidth}`);
    }
    return wide;
}"""
"""Every visible card, table and box whose content is wider than the box (it would scroll
or be cut off), and the page itself when it scrolls sideways."""


HIDDEN_COLUMNS = """(tbody) => {
    const table = document.getElementById(tbody).closest("table");
    const wrap = table.closest(".table-wrap");
    const right = wrap.getBoundingClientRect().right;
    const row = table.tBodies[0].rows[0];
    if (!row) return [];
    return [...row.cells]
        .filter((td) => td.getBoundingClientRect().right > right + 1
                        || getComputedStyle(td).display === "none")
        .map((td) => td.dataset.label || td.className);
}"""
"""Cells of a table's first row that lie beyond the table's visible box or are not shown."""
