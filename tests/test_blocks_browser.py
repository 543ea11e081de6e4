"""The Now strip and the blocks section in Chromium, fed by the real push path: the Claude
Code hook that ``agnes-activity push --install-hook`` installs, run as Claude Code runs it
after a response. Screenshots land in ``test-results/``; ``docs/now-strip.png`` (the
README's picture) is written when missing or when ``AGNES_UPDATE_SCREENSHOTS`` is set."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, expect

from service.synthetic.lines import assistant, jsonl, user
from tests.browser import RESULTS, Tab, chromium, integer, usd
from tests.conftest import Account, Server
from tests.test_dashboard import capture, signed_in
from tests.test_hook import (
    install,
    our_commands,
    run_hook,
    settings_of,
    stop_payload,
    wait_for_session,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"
SESSION = "5f0c1e2a-7b7d-4d59-9f4e-0c8d2b1a9e33"
TOKENS = {
    "input_tokens": 1200,
    "output_tokens": 3400,
    "cache_read_input_tokens": 52_000,
    "cache_creation_input_tokens": 8000,
}  # 64,600 tokens a response


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


OpenTab = Callable[..., Tab]


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[OpenTab]:
    """A fresh browser context per call (its own storage, zone, colour scheme and size)."""
    contexts = []

    def open_(
        *, tz: str = "UTC", scheme: str = "light", width: int = 1280, height: int = 900
    ) -> Tab:
        context = browser.new_context(
            timezone_id=tz,
            color_scheme=scheme,  # type: ignore[arg-type]
            locale="en-US",
            viewport={"width": width, "height": height},
        )
        contexts.append(context)
        return Tab(context.new_page())

    yield open_
    for context in contexts:
        context.close()


def stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def exchange(n: int, at: datetime) -> bytes:
    """A prompt and its response at ``at``."""
    return jsonl(
        user(f"step {n}", uuid=f"u{n}", ts=stamp(at - timedelta(seconds=20)), session=SESSION),
        assistant(
            uuid=f"a{n}",
            ts=stamp(at),
            message_id=f"msg_{n}",
            request_id=f"req_{n}",
            model="claude-opus-4-6",
            usage=TOKENS,
            session=SESSION,
        ),
    )


def blocks(server: Server, account: Account, tz: str = "UTC") -> dict[str, Any]:
    with server.client(account) as http:
        return http.get("/api/me/stats/blocks", params={"tz": tz}).json()  # type: ignore[no-any-return]


class Analyst:
    """A Claude config folder with our hook installed, and one session in it."""

    def __init__(self, server: Server, account: Account, home: Path) -> None:
        self.claude = home / ".claude"
        self.claude.mkdir(parents=True)
        done = install(self.claude, server, account)
        assert done.returncode == 0, done.stderr
        [self.command] = our_commands(settings_of(self.claude), "Stop")
        self.transcript = self.claude / "projects" / "-home-analyst-repo" / f"{SESSION}.jsonl"
        self.transcript.parent.mkdir(parents=True)
        self.home = home
        self.server, self.account = server, account

    def respond(self, n: int, at: datetime) -> None:
        """One more response in the session, then the Stop hook, as Claude Code runs it."""
        with self.transcript.open("ab") as out:
            out.write(exchange(n, at))
        _, done = run_hook(self.command, stop_payload(self.transcript), self.home)
        assert done.returncode == 0, done.stderr  # (how fast it returns: tests/test_hook.py)
        wait_for_session(self.server, self.account, self.transcript.name, n * 64_600)


def strip_text(tab: Any, name: str) -> str:
    return str(tab.page.locator(f"#now-{name}").inner_text()).strip()


def test_a_response_pushed_by_the_hook_moves_the_now_strip_without_a_reload(
    server: Server, alice: Account, open_tab: OpenTab, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    analyst = Analyst(server, alice, tmp_path / "home")
    analyst.respond(1, now - timedelta(minutes=40))
    analyst.respond(2, now - timedelta(minutes=25))
    tab = signed_in(open_tab, server, alice)
    tab.page.evaluate("window.sameDocument = true")
    expect(tab.page.locator("#now-tokens-value")).to_have_text(f"{integer(129_200)} tokens")
    before = {name: strip_text(tab, name) for name in ("rate-value", "projected-value")}
    first = blocks(server, alice)["active"]
    assert before["rate-value"] == f"{integer(round(first['tokens_per_minute']))} tokens/min"

    analyst.respond(3, now - timedelta(minutes=1))
    expect(tab.page.locator("#now-tokens-value")).to_have_text(f"{integer(193_800)} tokens")
    answer = blocks(server, alice)
    active, block = answer["active"], answer["blocks"][0]
    assert tab.page.evaluate("window.sameDocument") is True  # no reload
    rate = strip_text(tab, "rate-value")
    assert (
        rate == f"{integer(round(active['tokens_per_minute']))} tokens/min" != before["rate-value"]
    )
    assert strip_text(tab, "rate-sub") == f"{usd(active['cost_per_hour'])}/h"
    assert strip_text(tab, "tokens-sub") == f"{usd(block['cost_usd'])} · 3 responses"

    # The projection is the pace times the whole seconds left, as the strip shows them.
    shown = tab.page.evaluate(
        """() => [document.getElementById('now-left').dataset.seconds,
                  document.getElementById('now-projected-value').textContent]"""
    )
    seconds = int(shown[0])
    projected = round(193_800 + active["tokens_per_minute"] * seconds / 60)
    assert shown[1] == f"{integer(projected)} tokens" != before["projected-value"]
    end = datetime.fromisoformat(active["end"])
    assert abs((end - datetime.now(UTC)).total_seconds() - seconds) < 3

    # The countdown ticks every second: over 2.5 s it goes down by two (one tick may come
    # late on a busy machine, never one too many), and the text follows.
    first_left = strip_text(tab, "left")
    first = int(tab.page.locator("#now-left").get_attribute("data-seconds") or 0)
    tab.page.wait_for_timeout(2500)
    later = int(tab.page.locator("#now-left").get_attribute("data-seconds") or 0)
    assert 1 <= first - later <= 3
    assert strip_text(tab, "left") != first_left
    assert later < seconds
    assert not tab.errors


def test_a_token_limit_set_in_the_browser_shows_percentages_and_stays(
    server: Server, alice: Account, open_tab: OpenTab, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    analyst = Analyst(server, alice, tmp_path / "home")
    analyst.respond(1, now - timedelta(minutes=30))
    analyst.respond(2, now - timedelta(minutes=10))
    tab = signed_in(open_tab, server, alice)
    limit = tab.page.locator("#now-limit")
    limit.fill("banana")
    limit.press("Enter")
    expect(limit).to_have_attribute("aria-invalid", "true")
    limit.fill("200,000")
    limit.press("Enter")
    expect(tab.page.locator("#now-projected-sub")).to_contain_text("64.6% of limit now")
    tab.page.reload()
    expect(tab.page.locator("#now-limit")).to_have_value("200000")
    expect(tab.page.locator("#now-projected-sub")).to_contain_text("64.6% of limit now")
    asked = [url for url, _ in tab.requests if "/api/me/stats/blocks?" in url]
    assert asked and all("token_limit=200000" in url for url in asked)


def test_with_no_active_block_the_strip_says_when_the_last_one_ended(
    server: Server, alice: Account, open_tab: OpenTab, tmp_path: Path
) -> None:
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=7)
    analyst = Analyst(server, alice, tmp_path / "home")
    analyst.respond(1, old)
    tab = signed_in(open_tab, server, alice, tz="Asia/Kolkata")
    end = datetime.fromisoformat(blocks(server, alice)["last_block_end"])
    local = end.astimezone(ZoneInfo("Asia/Kolkata"))
    expect(tab.page.locator("#now-status")).to_have_text(
        f"No active block; the last one ended at {local:%Y-%m-%d %H:%M}."
    )
    expect(tab.page.locator("#now-tokens")).to_be_hidden()
    expect(tab.page.locator("#now-time")).to_be_hidden()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_of_the_now_strip_and_the_blocks(
    server: Server, alice: Account, open_tab: OpenTab, tmp_path: Path, scheme: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    analyst = Analyst(server, alice, tmp_path / "home")
    for n, minutes in enumerate([26 * 60, 25 * 60 + 20, 9 * 60, 95, 60, 32, 4], start=1):
        analyst.respond(n, now - timedelta(minutes=minutes))
    RESULTS.mkdir(exist_ok=True)
    for width, height, size in [(1280, 900, "desktop"), (390, 844, "phone")]:
        tab = signed_in(open_tab, server, alice, scheme=scheme, width=width, height=height)
        expect(tab.page.locator("#now-left")).not_to_be_empty()
        overflow = tab.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{size}: {overflow}px of horizontal overflow"
        path = RESULTS / f"now-strip-{scheme}-{size}.png"
        capture(tab.page, path)
        assert path.stat().st_size > 10_000
        tab.show("tokens")
        section = tab.page.locator("#blocks-section")
        expect(section.locator("#blocks-rows tr")).to_have_count(3)
        section.scroll_into_view_if_needed()
        capture(tab.page, RESULTS / f"blocks-{scheme}-{size}.png")
        overflow = tab.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{size} blocks: {overflow}px of horizontal overflow"
        if scheme == "light" and size == "desktop":
            tab.show("sessions")
            strip = RESULTS / "now-strip.png"
            tab.page.locator("#now").screenshot(path=str(strip))
            if os.environ.get("AGNES_UPDATE_SCREENSHOTS") or not (DOCS / "now-strip.png").exists():
                DOCS.mkdir(exist_ok=True)
                shutil.copy(strip, DOCS / "now-strip.png")
        assert not tab.errors
