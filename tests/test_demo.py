"""``agnes-activity demo`` as a newcomer meets it: the real command in its own process, its
dashboard in Debian's Chromium. Nothing in the test touches the page after signing in."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.browser import CHROMIUM, RESULTS, chromium, wait_for


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` or set AGNES_CHROMIUM")
    with chromium() as browser:
        yield browser


@pytest.fixture
def demo() -> Iterator[tuple[str, str]]:
    """``agnes-activity demo --port 0 --interval 0.5``: (login URL, token) as it prints them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGNES_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "demo", "--port", "0", "--interval", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    printed = ""
    while "sign in with token" not in printed:
        line = proc.stdout.readline()
        assert line, f"demo ended early: {printed}{proc.communicate(timeout=10)[1]}"
        printed += line
    url = re.search(r"agnes-activity demo: (http://\S+/login)", printed)
    token = re.search(r"sign in with token: (\S+)", printed)
    assert url and token, printed
    yield url.group(1), token.group(1)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    folder = re.search(r"demo folder: (\S+)", proc.communicate(timeout=10)[1])
    assert folder, "the demo names its folder"
    assert not Path(folder.group(1)).exists(), "a stopped demo leaves no folder behind"


def test_the_demo_dashboard_shows_a_month_of_history_at_once_and_moves_by_itself(
    demo: tuple[str, str], browser: Browser
) -> None:
    login, token = demo
    base = login.removesuffix("/login")
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        sessions = http.get("/api/me/stats/sessions", params={"limit": 200}).json()
        tokens = http.get("/api/me/stats/tokens", params={"days": 30}).json()
    # the history is in place before the URL is printed: many sessions over the month,
    # several models, tool errors, and days without work
    assert sessions["total"] >= 15
    oldest = min(datetime.fromisoformat(r["started_at"]) for r in sessions["rows"])
    assert oldest < datetime.now(UTC) - timedelta(days=20)
    assert len(tokens["by_model"]) >= 2
    assert any(r["tool_errors"] for r in sessions["rows"])
    assert sum(day["total"] == 0 for day in tokens["daily"]) >= 4

    context = browser.new_context(timezone_id="UTC", locale="en-US")
    page = context.new_page()
    try:
        page.goto(login)
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_url("**/me/activity")
        expect(page.locator("#who")).to_have_text("ada@example.com")
        expect(page.locator("#sessions-count")).to_have_text(re.compile(r"\d+ session files"))
        rows = page.locator("#sessions-rows tr")
        expect(rows.first).to_be_visible()
        assert rows.count() >= 15
        expect(page.locator("#live-label")).to_have_text("Live", timeout=5000)

        before = page.locator("#sessions-rows").inner_text()
        started = time.monotonic()
        wait_for(
            lambda: page.locator("#sessions-rows").inner_text() != before,
            timeout=10,
            what="the sessions table to change without interaction",
        )
        assert time.monotonic() - started < 10
        page.screenshot(path=str(RESULTS / "demo-sessions.png"), full_page=True)
    finally:
        context.close()
