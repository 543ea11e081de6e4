"""The dashboard as analysts see it: Debian's Chromium, driven by Playwright, against a real
server on a free port. Screenshots land in ``test-results/``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect
from playwright.sync_api import Error as PlaywrightError

from tests.browser import (
    CHROMIUM,
    HIDDEN_COLUMNS,
    OVERFLOW,
    RESULTS,
    Tab,
    audit_events,
    chromium,
    duration,
    integer,
    local_time,
    milliseconds,
    params_text,
    project_name,
    quiet,
    seed,
    settled,
    transcript,
    upload,
    usd,
    wait_for,
)
from tests.conftest import Account, Server

STATIC = Path(__file__).resolve().parents[1] / "static"
KOLKATA = "Asia/Kolkata"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` or set AGNES_CHROMIUM")
    with chromium() as browser:
        yield browser


OpenTab = Callable[..., Tab]


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[OpenTab]:
    """A fresh browser context per call (its own cookies, zone, colour scheme, size)."""
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


def signed_in(open_tab: OpenTab, server: Server, account: Account, **kw: Any) -> Tab:
    tab = open_tab(**kw)
    tab.sign_in(server, account)
    tab.mode("Live")
    return tab


# -- signing in and out ------------------------------------------------------------------------


def test_signing_in_with_a_token_opens_the_dashboard_and_sign_out_leaves_it(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    tab = signed_in(open_tab, server, alice)
    page = tab.page
    expect(page.locator("#who")).to_have_text("alice@example.com")
    expect(page).to_have_title(re.compile("Sessions"))
    page.click("text=Sign out")
    page.wait_for_url("**/login")
    page.goto(f"{server.url}/me/activity")
    page.wait_for_url("**/login")


def test_a_wrong_token_is_refused_with_a_plain_error(server: Server, open_tab: OpenTab) -> None:
    page = open_tab().page
    page.goto(f"{server.url}/login")
    expect(page.locator("#login-error")).to_be_hidden()
    page.fill("#token", "agn_this-is-not-a-token")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("That token does not sign in: unknown token.")
    expect(page.locator("#token")).to_have_attribute("aria-invalid", "true")
    assert page.url.endswith("/login")


# -- tabs ------------------------------------------------------------------------------------


def test_tabs_are_deep_links_that_the_keyboard_moves_between(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    tab = open_tab()
    tab.sign_in(server, alice, "/me/activity?tab=sync")
    page = tab.page
    expect(page.locator("#panel-sync")).to_be_visible()
    expect(page.locator("#tab-sync")).to_have_attribute("aria-selected", "true")
    page.locator("#tab-sync").focus()
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#panel-access")).to_be_visible()
    expect(page.locator("#tab-access")).to_be_focused()
    assert page.url.endswith("?tab=access")
    page.keyboard.press("Home")
    expect(page.locator("#panel-sessions")).to_be_visible()
    page.go_back()
    expect(page.locator("#panel-access")).to_be_visible()
    expect(page.locator("#panel-sessions")).to_be_hidden()


def test_an_empty_account_is_told_to_run_agnes_activity_push(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    tab = signed_in(open_tab, server, alice)
    for name, box in [
        ("sessions", "#sessions-empty"),
        ("tokens", "#tokens-empty"),
        ("access", "#queries-empty"),
        ("sync", "#sync-empty"),
    ]:
        tab.show(name)
        expect(tab.page.locator(box)).to_be_visible()
    for box in ("#sessions-empty", "#tokens-empty", "#sync-empty"):
        expect(tab.page.locator(box)).to_contain_text("agnes-activity push")
    login = open_tab().page
    login.goto(f"{server.url}/login")
    expect(login.locator(".hint")).to_contain_text("agnes-activity push")
    assert "agnes push" not in login.locator("body").inner_text()


# -- every tab equals the API ---------------------------------------------------------------------


def session_cells(row: dict[str, Any], tz: str) -> list[str]:
    status = row["pipeline_status"]
    counted = status == "processed"  # the numbers of a pending or failed file are not known
    if status == "error":
        status = f"error {' '.join((row['error'] or 'unknown error').split())}"
    elif counted and not row["started_at"] and not row["tokens_total"]:
        status = "no messages"
    failed = f" {integer(row['tool_errors'])} failed" if row["tool_errors"] else ""
    numbers = [
        f"{duration(row['active_seconds'])} of {duration(row['wall_seconds'])}",
        integer(row["user_messages"]),
        integer(row["tool_calls"]) + failed,
        integer(row["tokens_total"]),
        usd(row["cost_usd"]),
    ]
    project = project_name(row.get("project"))
    return [
        local_time(row["started_at"], tz),
        f"{row['session_file']} {project}".strip(),
        row["primary_model"] or "—",
        *(numbers if counted else ["—"] * len(numbers)),
        status,
        "↓ Download",
    ]


def audit_cells(row: dict[str, Any], tz: str, action: str) -> list[str]:
    resource = " ".join(filter(None, [row["resource"] or "—", params_text(row["params"])]))
    return [
        local_time(row["timestamp"], tz),
        action,
        " ".join(resource.split()),
        row["result"] or "—",
        *([row["client_kind"] or "—"] if action != row["action"] else []),
        milliseconds(row["duration_ms"]),
    ]


def test_each_tab_shows_what_the_api_answers_in_the_browsers_time_zone(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    seed(server, alice)
    tab = signed_in(open_tab, server, alice, tz=KOLKATA)
    page = tab.page
    http = server.client(alice)

    sessions = http.get("/api/me/stats/sessions").json()
    assert {r["pipeline_status"] for r in sessions["rows"]} == {"processed", "error"}
    expect(page.locator("#sessions-rows tr")).to_have_count(len(sessions["rows"]))
    assert tab.cells("sessions-rows") == [session_cells(r, KOLKATA) for r in sessions["rows"]]
    assert (
        page.get_attribute("#sessions-rows tr:first-child a", "href")
        == (sessions["rows"][0]["download_url"])
    )

    tab.show("tokens")
    tokens = http.get("/api/me/stats/tokens", params={"days": 30, "tz": KOLKATA}).json()
    totals = tokens["window"]["totals"] if "window" in tokens else tokens["totals"]
    assert page.locator("#tokens-cards .stat-value").all_inner_texts() == [
        *(integer(totals[k]) for k in ("input", "output", "cache_read", "cache_creation", "total")),
        usd(totals["cost_usd"]),
    ]
    assert tokens["unpriced_models"] == ["mystery-model-7"]
    expect(page.locator("#tokens-unpriced")).to_contain_text("mystery-model-7")
    window_models = tokens["window"]["by_model"] if "window" in tokens else tokens["by_model"]
    models = tab.cells("models-rows")
    assert [m[0] for m in models] == [
        m["model"] + (" unpriced" if m["model"] in tokens["unpriced_models"] else "")
        for m in window_models
    ]
    assert [m[1:] for m in models] == [
        [
            *(integer(m[k]) for k in ("input", "output", "cache_read", "cache_creation", "total")),
            usd(m["cost_usd"]),
            integer(m["sessions"]),
        ]
        for m in window_models
    ]
    assert [row[:2] + row[3:] for row in tab.cells("top-rows")] == [
        [
            s["session_file"],
            local_time(s["started_at"], KOLKATA),
            integer(s["total"]),
            usd(s["cost_usd"]),
        ]
        for s in tokens["top_sessions"]
    ]
    days = page.locator("#tokens-chart g.day")
    expect(page.locator("#tokens-output-chart g.day")).to_have_count(30)
    expect(days).to_have_count(30)
    labels = [days.nth(i).get_attribute("aria-label") or "" for i in range(30)]
    assert [int(re.search(r": ([\d,]+) tokens", a)[1].replace(",", "")) for a in labels] == [  # type: ignore[index]
        d["total"] for d in tokens["daily"]
    ]

    # Hover or focus shows a day's values; the window can be 7 or 90 days.
    busiest = max(range(30), key=lambda i: tokens["daily"][i]["total"])
    days.nth(busiest).hover()
    tip = page.locator("#tokens-chart .chart-tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(f"Total{integer(tokens['daily'][busiest]['total'])}")
    days.nth(busiest).focus()
    page.keyboard.press("ArrowLeft")
    expect(days.nth(busiest - 1)).to_be_focused()
    expect(tip).to_contain_text(f"Total{integer(tokens['daily'][busiest - 1]['total'])}")
    page.select_option("#range", "7")
    expect(days).to_have_count(7)
    assert "days=7" in page.url
    week = http.get("/api/me/stats/tokens", params={"days": 7, "tz": KOLKATA}).json()
    assert (
        days.nth(6)
        .get_attribute("aria-label")
        .endswith(  # type: ignore[union-attr]
            f": {integer(week['daily'][6]['total'])} tokens, {usd(week['daily'][6]['cost_usd'])}"
        )
    )

    tab.show("access")
    queries = http.get("/api/me/stats/queries").json()
    assert len(queries["rows"]) == 3
    assert tab.cells("queries-rows") == [
        audit_cells(r, KOLKATA, r["action"]) for r in queries["rows"]
    ]

    tab.show("sync")
    sync = http.get("/api/me/stats/sync").json()
    actions = {
        "sync.trigger": "Sync",
        "manifest.fetch": "Pull (manifest)",
        "session.upload": "Upload",
    }
    assert tab.cells("sync-rows") == [
        audit_cells(r, KOLKATA, actions[r["action"]]) for r in sync["rows"]
    ]
    pulled = page.locator("#last-pull-time")
    expect(pulled).to_have_attribute("datetime", sync["last_pull_at"])
    expect(pulled).to_have_text(re.compile(r"just now|\d+ seconds? ago|1 minute ago"))
    pull = datetime.fromisoformat(sync["last_pull_at"]).astimezone(ZoneInfo(KOLKATA))
    exact = f"{pull:%B} {pull.day}, {pull.year} at {pull:%-I:%M:%S %p} GMT+5:30"
    assert (pulled.get_attribute("title") or "").endswith(exact)
    assert not tab.errors and not tab.dialogs
    http.close()


def test_more_rows_load_on_demand_and_sessions_page_back_and_forth(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    now = datetime.now(UTC)
    with server.client(alice) as http:
        for n in range(52):
            upload(http, f"s{n:02d}.jsonl", transcript(f"s{n}", now - timedelta(hours=n), "m"))
        settled(http, {"s00.jsonl", "s51.jsonl"})
    admin = server.account("ops@example.com", is_admin=True)
    query = {"user_id": alice.user.id, "action": "query.run", "resource": "t", "result": "ok"}
    earlier = [
        {**query, "id": f"q{n}", "timestamp": (now - timedelta(minutes=n + 1)).isoformat()}
        for n in range(60)
    ]
    audit_events(server, admin, earlier)
    tab = signed_in(open_tab, server, alice)
    page = tab.page

    expect(page.locator("#sessions-rows tr")).to_have_count(50)
    expect(page.locator("#sessions-range")).to_have_text("1\u201350 of 52")
    page.click("#sessions-next")
    expect(page.locator("#sessions-range")).to_have_text("51\u201352 of 52")
    assert [r[1].split()[0] for r in tab.cells("sessions-rows")] == ["s50.jsonl", "s51.jsonl"]
    expect(page.locator("#sessions-next")).to_be_disabled()
    page.click("#sessions-prev")
    expect(page.locator("#sessions-rows tr").first).to_contain_text("s00.jsonl")

    tab.show("access")
    rows = page.locator("#queries-rows tr")
    expect(rows).to_have_count(50)
    page.click("#queries-more")
    expect(rows).to_have_count(60)
    expect(page.locator("#queries-more")).to_be_hidden()
    expect(page.locator("#queries-rows tr.fresh")).to_have_count(0)  # loaded, not arrived
    new = {**query, "id": "q-new", "resource": "arrived", "timestamp": now.isoformat()}
    audit_events(server, admin, [new])
    expect(rows).to_have_count(61)
    expect(rows.first).to_contain_text("arrived")
    expect(rows.first).to_have_class(re.compile(r"\bfresh\b"))


# -- live ------------------------------------------------------------------------------------


def test_an_upload_appears_on_the_open_page_within_two_seconds_highlighted(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    seed(server, alice)
    tab = signed_in(open_tab, server, alice)
    row = tab.page.locator("#sessions-rows tr", has_text="fresh.jsonl")
    with server.client(alice) as http:
        started = time.monotonic()
        upload(http, "fresh.jsonl", transcript("fresh", datetime.now(UTC), "claude-opus-4-6"))
        expect(row).to_be_visible(timeout=2000)
        assert time.monotonic() - started < 2
    expect(row).to_have_class(re.compile(r"\bfresh\b"))
    expect(tab.page.locator("#sessions-rows tr.fresh")).to_have_count(1)
    expect(row).not_to_have_class(re.compile(r"\bfresh\b"), timeout=6000)  # briefly
    expect(tab.page.locator("#live-age")).to_have_text(re.compile(r"updated (just now|\ds ago)"))


def block_websocket(page: Page) -> dict[str, bool]:
    """Refuse the live socket while ``blocked["on"]``; pass it through otherwise."""
    blocked = {"on": True}

    def route(ws: WebSocketRoute) -> None:
        if blocked["on"]:
            ws.close(code=1011, reason="blocked by the test")
        else:
            ws.connect_to_server()

    page.route_web_socket(re.compile(r"/api/me/live"), route)
    return blocked


def test_without_a_websocket_the_page_polls_and_comes_back_live(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    with server.client(alice) as http:
        upload(http, "earlier.jsonl", transcript("earlier", datetime.now(UTC), "claude-opus-4-6"))
        settled(http, {"earlier.jsonl"})
        quiet(http)  # so the page's second look at every tab finds it unchanged: a 304
    tab = open_tab()
    blocked = block_websocket(tab.page)
    tab.sign_in(server, alice)
    tab.mode("Polling")
    expect(tab.page.locator("#sessions-rows tr", has_text="earlier.jsonl")).to_be_visible()
    with server.client(alice) as http:
        upload(http, "polled.jsonl", transcript("polled", datetime.now(UTC), "claude-opus-4-6"))
        row = tab.page.locator("#sessions-rows tr", has_text="polled.jsonl")
        expect(row).to_be_visible(timeout=3000)
        expect(row).to_contain_text("processed", timeout=5000)
    tab.mode("Polling")
    revalidated = [
        (u, h) for u, h in tab.requests if "/api/me/stats/" in u and "if-none-match" in h
    ]
    assert revalidated, "polling must revalidate with If-None-Match"
    # Whether the page's own revalidations meet a change depends on timing; what they ask
    # must be answered 304 while nothing changes, so ask it again ourselves.
    url, headers = revalidated[-1]
    with server.client(alice) as http:
        quiet(http)
        current = http.get(url).headers["ETag"]
        again = http.get(url, headers={"If-None-Match": current})
    assert again.status_code == 304
    assert headers["if-none-match"].startswith('W/"')

    blocked["on"] = False
    tab.mode("Live", timeout=20000)
    with server.client(alice) as http:
        upload(http, "pushed.jsonl", transcript("pushed", datetime.now(UTC), "claude-opus-4-6"))
    expect(tab.page.locator("#sessions-rows tr", has_text="pushed.jsonl")).to_be_visible()


def test_polling_pauses_while_the_page_is_hidden(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    tab = open_tab()
    block_websocket(tab.page)
    tab.sign_in(server, alice)
    tab.mode("Polling")
    page = tab.page
    page.evaluate(
        """() => {
            Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    page.wait_for_timeout(200)
    polls_before = sum("/api/me/live/poll" in u for u, _ in tab.requests)
    with server.client(alice) as http:
        upload(http, "later.jsonl", transcript("later", datetime.now(UTC), "claude-opus-4-6"))
        settled(http, {"later.jsonl"})
    page.wait_for_timeout(1000)
    assert sum("/api/me/live/poll" in u for u, _ in tab.requests) == polls_before
    expect(page.locator("#sessions-rows tr")).to_have_count(0)

    page.evaluate(
        """() => {
            Object.defineProperty(document, "hidden", { configurable: true, get: () => false });
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    expect(page.locator("#sessions-rows tr", has_text="later.jsonl")).to_be_visible(timeout=3000)


def test_a_missed_update_makes_the_page_ask_for_a_snapshot(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    tab = open_tab()
    sent: list[str] = []
    dropped: list[int] = []

    def route(ws: WebSocketRoute) -> None:
        upstream = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            data = json.loads(message)
            if data["type"] == "update" and not dropped:
                dropped.append(data["version"])  # lost on the way: the next one leaves a gap
                return
            ws.send(message)

        def from_page(message: str | bytes) -> None:
            sent.append(str(message))
            upstream.send(message)

        upstream.on_message(from_server)
        ws.on_message(from_page)

    tab.page.route_web_socket(re.compile(r"/api/me/live"), route)
    tab.sign_in(server, alice)
    tab.mode("Live")
    with server.client(alice) as http:
        upload(http, "one.jsonl", transcript("one", datetime.now(UTC), "claude-opus-4-6"))
        settled(http, {"one.jsonl"})
        # Playwright runs the route's handlers only while the test is inside one of its calls.
        wait_for(lambda: tab.page.wait_for_timeout(50) or dropped, what="an update to drop")
        upload(http, "two.jsonl", transcript("two", datetime.now(UTC), "claude-opus-4-6"))
    rows = tab.page.locator("#sessions-rows tr")
    expect(rows.filter(has_text="two.jsonl")).to_be_visible()
    expect(rows.filter(has_text="one.jsonl")).to_be_visible()
    assert '{"type":"resync"}' in sent


# -- safety ------------------------------------------------------------------------------------

PAYLOADS = [
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(1)</script>",
    "javascript:alert(1)",
]


def test_server_values_render_as_text_and_run_nothing(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    now = datetime.now(UTC)
    folder = server.settings.sessions_dir / alice.user.id
    folder.mkdir(parents=True, exist_ok=True)
    # Upload names are restricted; files copied in by other means (rsync) are not.
    copied = {"<img src=x onerror=alert(1)>.jsonl", "javascript:alert(1).jsonl"}
    for n, name in enumerate(sorted(copied)):
        (folder / name).write_bytes(transcript(f"copied{n}", now, "claude-opus-4-6"))
    with server.client(alice) as http:
        for n, model in enumerate(PAYLOADS):
            upload(http, f"evil-{n}.jsonl", transcript(f"evil{n}", now, model))
        settled(http, copied | {f"evil-{n}.jsonl" for n in range(3)})
    admin = server.account("ops@example.com", is_admin=True)
    audit_events(
        server,
        admin,
        [
            {
                "id": f"x{n}-{action}",
                "timestamp": (now - timedelta(minutes=n)).isoformat(),
                "user_id": alice.user.id,
                "action": action,
                "resource": payload,
                "params": {"q": payload, payload: "javascript:alert(1)"},
                "result": payload,
                "client_kind": payload,
            }
            for n, payload in enumerate(PAYLOADS)
            for action in ["query.run", "sync.trigger"]
        ],
    )

    tab = signed_in(open_tab, server, alice)
    page = tab.page
    shown = ""
    for name in ["sessions", "tokens", "access", "sync"]:
        tab.show(name)
        if name == "tokens":
            page.locator("#tokens-chart g.day").last.hover()
        shown += page.locator(f"#panel-{name}").inner_text()
    for payload in PAYLOADS:
        assert payload in shown
    for name in copied:
        assert name in shown
    page.wait_for_timeout(500)
    assert tab.dialogs == []
    assert tab.errors == []
    assert page.evaluate("document.querySelectorAll('img, iframe, object, embed').length") == 0
    assert page.evaluate("document.scripts.length") == 1
    hrefs = page.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))")
    assert all(h.startswith(("/", "?")) for h in hrefs), hrefs
    handlers = "[...document.querySelectorAll('*')].flatMap(e => e.getAttributeNames())"
    assert not [a for a in page.evaluate(handlers) if a.startswith("on")]


# -- looks -------------------------------------------------------------------------------------


LONG_SQL = (
    "select c.region, date_trunc('month', o.created_at) as month, count(distinct o.customer_id)"
    " as customers, sum(o.amount) as revenue from warehouse.sales.orders o join"
    " warehouse.crm.customers c on c.id = o.customer_id where o.created_at >= '2026-01-01'"
    " group by 1, 2 order by 1, 2"
)


def seed_wide(server: Server, account: Account) -> None:
    """What made cards overflow on a phone: a long resource name and long params."""
    admin = server.account("wide-ops@example.com", is_admin=True)
    now = datetime.now(UTC)
    audit_events(
        server,
        admin,
        [
            {
                "id": "wide-q",
                "timestamp": now.isoformat(),
                "user_id": account.user.id,
                "action": "query.run",
                "resource": "warehouse.analytics.customer_lifetime_value_by_cohort_and_region",
                "params": {"sql": LONG_SQL, "bytes": 33180, "rows": 1234567},
                "result": "ok",
                "duration_ms": 5321.0,
                "client_kind": "cli",
            },
            {
                "id": "wide-s",
                "timestamp": now.isoformat(),
                "user_id": account.user.id,
                "action": "session.upload",
                "resource": "d1f0c7b2-5a8e-4c1b-9f3e-7a6b5c4d3e2f.agent-a1b2c3d4e5f6a7b8.jsonl",
                "params": {"size": 48_000_000},
                "result": "ok",
                "client_kind": "api",
            },
        ],
    )


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_tab_fits_a_desktop_and_a_phone_with_every_column_shown(
    server: Server, alice: Account, open_tab: OpenTab, scheme: str
) -> None:
    """At 1280x900 and 390x844: no card, table or box is wider than its room and the page
    never scrolls sideways; the Sessions table shows every column (Status and Download
    included) on a desktop and a compact card per session on a phone; screenshots of each
    tab go to test-results/."""
    seed(server, alice)
    seed_wide(server, alice)
    RESULTS.mkdir(exist_ok=True)
    for width, height, size in [(1280, 900, "desktop"), (390, 844, "phone")]:
        tab = signed_in(open_tab, server, alice, scheme=scheme, width=width, height=height)
        page = tab.page
        expect(page.locator("#sessions-rows tr")).to_have_count(3)
        expect(page.locator("#queries-rows tr")).to_have_count(4)
        for name in ["sessions", "tokens", "access", "sync"]:
            tab.show(name)
            if name == "tokens":
                page.locator("#tokens-chart g.day").last.hover()
            assert page.evaluate(OVERFLOW) == [], f"{name} at {size}"
            path = RESULTS / f"dashboard-{name}-{scheme}-{size}.png"
            capture(page, path, full_page=True)
            assert path.stat().st_size > 10_000
        tab.show("sessions")
        assert page.evaluate(HIDDEN_COLUMNS, "sessions-rows") == []
        first = page.locator("#sessions-rows tr").first
        for column in ("c-status", "c-download", "c-tokens", "c-cost"):
            expect(first.locator(f"td.{column}")).to_be_visible()
            expect(first.locator(f"td.{column}")).to_be_in_viewport()
        if size == "phone":
            card = first.bounding_box()
            assert card is not None and card["height"] < height / 4, card  # 4 or more a screen
        tab.show("access")
        wide = page.locator("#queries-rows tr", has_text="customer_lifetime_value")
        expect(wide).to_contain_text("warehouse.analytics.customer_lifetime_value_by_cohort")
        expect(wide.locator("dd", has_text="32.4 KB")).to_be_visible()
        sql = wide.locator("code.sql")
        assert sql.evaluate("e => getComputedStyle(e).whiteSpace") == "pre-wrap"
        assert sql.evaluate("e => e.scrollWidth <= e.clientWidth")
        tab.show("sync")
        expect(page.locator("#sync-rows dd", has_text="45.8 MB")).to_be_visible()
        assert not tab.errors
    login = open_tab(scheme=scheme).page
    login.goto(f"{server.url}/login")
    login.fill("#token", "agn_wrong")
    login.click("button[type=submit]")
    capture(login, RESULTS / f"login-{scheme}.png")


def test_an_unknown_tab_in_the_address_is_named_not_silently_replaced(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    tab = open_tab()
    tab.sign_in(server, alice, "/me/activity?tab=bogus")
    notice = tab.page.locator("#tab-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("no tab “bogus”")
    expect(tab.page.locator("#panel-sessions")).to_be_visible()
    tab.show("tokens")
    expect(notice).to_be_hidden()


def test_each_tab_downloads_its_rows_as_csv(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    seed(server, alice)
    tab = signed_in(open_tab, server, alice)
    page = tab.page
    fetch_csv = """(href) => fetch(href).then(async (r) =>
        [r.status, r.headers.get("content-type"), r.headers.get("content-disposition"),
         (await r.text()).split(String.fromCharCode(13, 10))[0]])"""
    expected = {
        "sessions": ("sessions", "session_file,session_id,started_at"),
        "tokens": ("tokens", "day,input,output"),
        "access": ("queries", "id,timestamp,action"),
        "sync": ("sync", "id,timestamp,action"),
    }
    for name, (api, header) in expected.items():
        tab.show(name)
        link = page.locator(f"#{api}-csv")
        expect(link).to_be_visible()
        href = link.get_attribute("href") or ""
        assert href.startswith(f"/api/me/stats/{api}?") and "format=csv" in href, href
        status, kind, disposition, first = page.evaluate(fetch_csv, href)
        assert (status, kind) == (200, "text/csv; charset=utf-8")
        assert disposition.startswith(f'attachment; filename="agnes-{api}-')
        assert first.startswith(header), first
    tab.show("tokens")
    page.select_option("#range", "7")
    expect(page.locator("#tokens-csv")).to_have_attribute("href", re.compile(r"days=7"))
    with page.expect_download() as download:
        page.click("#tokens-csv")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0].startswith("day,") and len(lines) == 1 + 7


def test_the_chart_axis_fits_its_data_in_round_steps(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    seed(server, alice)
    tab = signed_in(open_tab, server, alice)
    page = tab.page
    ticks = page.evaluate(
        """() => import("/static/chart.js").then((m) =>
             [5e6, 3.8e6, 4.2e6, 1.3e6, 14740, 720, 3, 0].map(m.niceTicks))"""
    )
    assert ticks[0] == [0, 1e6, 2e6, 3e6, 4e6, 5e6]  # bars peaking at 5M: a 5M axis
    assert ticks[1] == [0, 1e6, 2e6, 3e6, 4e6]  # no "3.8M" tick
    assert ticks[2] == [0, 1e6, 2e6, 3e6, 4e6, 5e6]
    assert ticks[3] == [0, 500_000, 1_000_000, 1_500_000]
    assert ticks[4] == [0, 5000, 10000, 15000]
    assert ticks[5] == [0, 200, 400, 600, 800]
    assert ticks[6] == [0, 1, 2, 3]
    assert ticks[7] == [0, 1]
    tab.show("tokens")
    labels = page.locator("#tokens-chart .tick text").all_text_contents()
    assert labels == ["0", "5K", "10K", "15K"]  # the seed's busiest day holds 14,740 tokens
    assert page.locator("#tokens-output-chart .tick text").all_text_contents() == [
        "0",
        "200",
        "400",
        "600",
        "800",
    ]  # output (680 that day) on its own scale


def test_a_file_without_messages_says_so_and_is_not_counted_as_a_session(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    seed(server, alice)
    with server.client(alice) as http:
        upload(http, "summary-only.jsonl", b'{"type":"summary","summary":"Fix","leafUuid":"x"}\n')
        settled(http, {"summary-only.jsonl"})
    tab = signed_in(open_tab, server, alice)
    row = tab.page.locator("#sessions-rows tr", has_text="summary-only.jsonl")
    expect(row.locator(".c-status")).to_have_text("no messages")
    expect(tab.page.locator("#sessions-count")).to_have_text("3 sessions · 1 file without messages")


def test_the_api_page_and_the_not_found_page_work_in_a_browser_offline(
    server: Server, open_tab: OpenTab
) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(f"{server.url}/schema")
    expect(page.locator("#api-operations section")).not_to_have_count(0)
    expect(page.locator("#api-index")).to_contain_text("GET /api/me/stats/sessions")
    expect(page.locator("#api-index")).to_contain_text("POST /api/upload/local-md")
    expect(page.locator("#type-SessionRow")).to_contain_text("session_file")
    assert all(url.startswith(server.url) for url, _ in tab.requests), tab.requests
    capture(page, RESULTS / "api-page.png", full_page=False)
    page.goto(f"{server.url}/no/such/page")
    expect(page.locator("main")).to_contain_text("Page not found")
    page.click("text=Go to your activity")
    page.wait_for_url("**/login")
    assert not tab.errors


def capture(page: Page, path: Path, *, full_page: bool = False) -> None:
    """A screenshot; Chromium on a loaded 2-core machine now and then fails to produce a
    frame ("Unable to capture screenshot"), which says nothing about the page: try again."""
    for attempt in range(3):
        try:
            page.screenshot(path=str(path), full_page=full_page, timeout=15_000)
            return
        except PlaywrightError as exc:
            if "Unable to capture screenshot" not in str(exc) or attempt == 2:
                raise
            page.wait_for_timeout(500)


def test_page_weight_is_under_100_kb() -> None:
    files = [p for p in STATIC.iterdir() if p.suffix in {".html", ".css", ".js"}]
    assert {"activity.html", "activity.js", "app.css", "login.html"} <= {p.name for p in files}
    total = sum(p.stat().st_size for p in files)
    assert total < 100 * 1024, f"static/ weighs {total} bytes"


# -- windows and projects ------------------------------------------------------------------------

CHURN = "/home/ana/work/churn_model.v2"
PRICING = "/home/ana/work/pricing"


def project_key(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", path)


def card_total(page: Page) -> str:
    return page.locator("#tokens-cards .stat-total .stat-value").inner_text()


def test_the_window_picker_and_project_filter_change_the_numbers_and_the_address(
    server: Server, alice: Account, open_tab: OpenTab
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with server.client(alice) as http:
        for name, days_ago, cwd, tokens in [
            ("churn-new", 2, CHURN, (100, 10, 1000, 0)),
            ("pricing-new", 3, PRICING, (200, 20, 2000, 0)),
            ("churn-old", 45, CHURN, (400, 40, 4000, 0)),
        ]:
            data = transcript(name, now - timedelta(days=days_ago), "claude-opus-4-6", tokens, cwd)
            upload(http, f"{name}.jsonl", data)
        settled(http, {"churn-new.jsonl", "pricing-new.jsonl", "churn-old.jsonl"})

        def api(**params: str) -> dict[str, Any]:
            answer: dict[str, Any] = http.get(
                "/api/me/stats/tokens", params={"tz": "UTC", **params}
            ).json()
            return answer

        tab = signed_in(open_tab, server, alice)
        page = tab.page
        tab.show("tokens")
        thirty = api(days="30")
        expect(page.locator("#tokens-window-name")).to_have_text("Last 30 days")
        assert card_total(page) == integer(thirty["window"]["totals"]["total"])
        assert thirty["window"]["totals"]["total"] == 2 * (1110 + 2220)  # the old one is out

        page.select_option("#range", "all")
        expect(page.locator("#tokens-window-name")).to_have_text("All time")
        assert "days=all" in page.url
        everything = api(days="all")
        expect(page.locator("#tokens-cards .stat-total .stat-value")).to_have_text(
            integer(everything["window"]["totals"]["total"])
        )
        assert everything["window"]["totals"]["total"] > thirty["window"]["totals"]["total"]
        expect(page.locator("#models-window")).to_contain_text("All time")

        options = page.locator("#project option")
        expect(options).to_have_count(3)
        churn = page.locator("#project option", has_text="churn_model.v2")
        assert churn.get_attribute("title") == CHURN
        page.select_option("#project", label="churn_model.v2")
        assert f"project={project_key(CHURN)}" in page.url
        only_churn = api(days="all", project=project_key(CHURN))
        expect(page.locator("#tokens-cards .stat-total .stat-value")).to_have_text(
            integer(only_churn["window"]["totals"]["total"])
        )
        assert only_churn["window"]["totals"]["total"] == 2 * (1110 + 4440)

        tab.show("sessions")
        rows = page.locator("#sessions-rows tr")
        expect(rows).to_have_count(2)
        project = rows.first.locator(".project")
        expect(project).to_have_text("churn_model.v2")
        assert project.get_attribute("title") == CHURN
        assert "tab=sessions" in page.url and f"project={project_key(CHURN)}" in page.url
        page.select_option("#project", "")
        expect(rows).to_have_count(3)

        tab.show("tokens")
        page.select_option("#range", "custom")
        page.fill("#range-from", "2019-01-01")
        page.fill("#range-to", "2019-01-31")
        page.click("#custom-range button[type=submit]")
        assert "from=2019-01-01" in page.url and "to=2019-01-31" in page.url
        empty = page.locator("#tokens-window-empty")
        expect(empty).to_be_visible()
        expect(empty).to_contain_text("No usage from Jan 1 \u2013 Jan 31, 2019")
        expect(page.locator("#tokens-charts")).to_be_hidden()
        page.go_back()
        expect(page.locator("#tokens-window-name")).to_have_text("All time")
        assert not tab.errors
