"""``/api/me/stats/tokens`` on seeded usage entries: every number worked out by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Account, Server
from tests.seed import add_session, add_usage, error_body

OPUS = "claude-opus-4-6"
SONNET = "claude-sonnet-4-5-20250929"
UNPRICED = "mystery-model-1"


def today_in(tz: str) -> date:
    return datetime.now(ZoneInfo(tz)).date()


def at(day: date, clock: str, tz: str = "UTC") -> datetime:
    return datetime.combine(day, time.fromisoformat(clock), ZoneInfo(tz)).astimezone(UTC)


def counts(
    inp: int, out: int, read: int, create: int, cost: float | None, sessions: int
) -> dict[str, Any]:
    return {
        "input": inp,
        "output": out,
        "cache_read": read,
        "cache_creation": create,
        "total": inp + out + read + create,
        "cost_usd": cost,
        "sessions": sessions,
    }


ZERO = counts(0, 0, 0, 0, 0.0, 0)  # a day without usage costs $0, not "unpriced"

# Three days ago in UTC, so the window of 7 days holds the day before and after it in
# every zone used below, whatever the time of day the test runs.
D = today_in("UTC") - timedelta(days=3)


@pytest.fixture
def seeded(server: Server, alice: Account, bob: Account) -> Account:
    """Alice's entries (X late on day D in UTC, Y early on D, Z midday, a <synthetic> one,
    and one 400 days old); Bob's entry on D must never show in her numbers."""
    store, a = server.store, alice.user.id
    # X: 23:30Z is the next day in Tokyo (+9), the same day in New York (-5/-4)
    add_usage(
        store,
        a,
        session_file="s-late.jsonl",
        ts=at(D, "23:30"),
        model=OPUS,
        tokens=(100, 10, 1000, 0),
        cost_usd=0.5,
    )
    # Y: 03:00Z is the same day in Tokyo, the day before in New York
    add_usage(
        store,
        a,
        session_file="s-early.jsonl",
        ts=at(D, "03:00"),
        model=OPUS,
        tokens=(200, 20, 0, 2000),
        cost_usd=0.25,
    )
    add_usage(
        store,
        a,
        session_file="s-early.jsonl",
        ts=at(D, "12:00"),
        model=UNPRICED,
        tokens=(7, 0, 0, 0),
    )
    add_usage(
        store,
        a,
        session_file="s-early.jsonl",
        ts=at(D, "12:00"),
        model="<synthetic>",
        tokens=(0, 0, 0, 0),
    )
    add_usage(
        store,
        a,
        session_file="s-old.jsonl",
        ts=at(D - timedelta(days=400), "12:00"),
        model=SONNET,
        tokens=(1, 1, 1, 1),
        cost_usd=0.125,
    )
    add_session(
        store,
        a,
        "s-early.jsonl",
        session_id="s-early",
        started_at=at(D, "03:00"),
        primary_model=OPUS,
    )
    add_usage(
        store,
        bob.user.id,
        session_file="s-late.jsonl",
        ts=at(D, "10:00"),
        model=OPUS,
        tokens=(90_000, 0, 0, 0),
        cost_usd=4.0,
    )
    return alice


def daily_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["day"]: {k: v for k, v in row.items() if k != "day"} for row in body["daily"]}


def window(tz: str, days: int) -> list[str]:
    last = today_in(tz)
    return [(last - timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("UTC", {D: counts(307, 30, 1000, 2000, 0.75, 2)}),
        (
            "Asia/Tokyo",
            {
                D: counts(207, 20, 0, 2000, 0.25, 1),
                D + timedelta(days=1): counts(100, 10, 1000, 0, 0.5, 1),
            },
        ),
        (
            "America/New_York",
            {
                D - timedelta(days=1): counts(200, 20, 0, 2000, 0.25, 1),
                D: counts(107, 10, 1000, 0, 0.5, 2),
            },
        ),
    ],
)
def test_daily_tokens_fall_on_the_day_of_the_requested_time_zone(
    server: Server, seeded: Account, tz: str, expected: dict[date, dict[str, Any]]
) -> None:
    with server.client(seeded) as http:
        response = http.get("/api/me/stats/tokens", params={"days": 7, "tz": tz})
    assert response.status_code == 200
    body = response.json()
    assert (body["days"], body["tz"]) == (7, tz)
    assert [row["day"] for row in body["daily"]] == window(tz, 7)
    wanted = {day: ZERO for day in window(tz, 7)}
    wanted.update({day.isoformat(): row for day, row in expected.items()})
    assert daily_of(body) == wanted


def test_totals_by_model_and_unpriced_models_cover_the_whole_history(
    server: Server, seeded: Account
) -> None:
    with server.client(seeded) as http:
        body = http.get("/api/me/stats/tokens", params={"days": 1}).json()
    assert body["totals"] == counts(308, 31, 1001, 2001, 0.875, 3)
    assert body["by_model"] == [
        {"model": OPUS, **counts(300, 30, 1000, 2000, 0.75, 2)},
        {"model": UNPRICED, **counts(7, 0, 0, 0, None, 1)},
        {"model": SONNET, **counts(1, 1, 1, 1, 0.125, 1)},
    ]
    assert body["unpriced_models"] == [UNPRICED]
    assert body["top_sessions"] == [
        {
            "session_file": "s-early.jsonl",
            "session_id": "s-early",
            "started_at": at(D, "03:00").isoformat(),
            "primary_model": OPUS,
            "total": 2227,
            "cost_usd": 0.25,
        },
        {
            "session_file": "s-late.jsonl",
            "session_id": "s-late",
            "started_at": None,
            "primary_model": None,
            "total": 1110,
            "cost_usd": 0.5,
        },
        {
            "session_file": "s-old.jsonl",
            "session_id": "s-old",
            "started_at": None,
            "primary_model": None,
            "total": 4,
            "cost_usd": 0.125,
        },
    ]


@pytest.mark.parametrize("days", [1, 2, 30, 365])
def test_days_gives_exactly_that_many_rows_ending_today(
    server: Server, seeded: Account, days: int
) -> None:
    tz = "Pacific/Kiritimati"  # UTC+14: its today is often the day after UTC's
    with server.client(seeded) as http:
        body = http.get("/api/me/stats/tokens", params={"days": days, "tz": tz}).json()
    assert [row["day"] for row in body["daily"]] == window(tz, days)
    in_window = sum(row["total"] for row in body["daily"])
    # X, Y, Z are on D or D+1 in Kiritimati (days 2-4 before its today): only a window of
    # 30 or more days holds them; the 400-day-old entry is never inside.
    assert in_window == (3337 if days >= 30 else 0)


def test_window_starts_at_local_midnight_of_its_first_day(server: Server, alice: Account) -> None:
    tz = "Asia/Tokyo"
    first = today_in(tz) - timedelta(days=2)
    midnight = at(first, "00:00", tz)
    add_usage(
        server.store,
        alice.user.id,
        session_file="in.jsonl",
        ts=midnight,
        model=OPUS,
        tokens=(5, 0, 0, 0),
    )
    add_usage(
        server.store,
        alice.user.id,
        session_file="out.jsonl",
        ts=midnight - timedelta(seconds=1),
        model=OPUS,
        tokens=(50, 0, 0, 0),
    )
    with server.client(alice) as http:
        body = http.get("/api/me/stats/tokens", params={"days": 3, "tz": tz}).json()
    assert body["daily"][0] == {"day": first.isoformat(), **counts(5, 0, 0, 0, None, 1)}
    assert sum(row["total"] for row in body["daily"]) == 5
    assert body["totals"]["input"] == 55


def test_top_sessions_are_the_10_largest_by_total_tokens(server: Server, alice: Account) -> None:
    # session n has n*100 input tokens over two entries, plus n output; 11 and 12 tie
    # on total with "z-tie" and "a-tie", which go in name order.
    for n in range(1, 13):
        for half in range(2):
            add_usage(
                server.store,
                alice.user.id,
                session_file=f"s{n:02d}.jsonl",
                ts=at(D, f"0{half}:00"),
                model=SONNET,
                tokens=(n * 50, n * half, 0, 0),
            )
    for name in ("z-tie.jsonl", "a-tie.jsonl"):
        add_usage(
            server.store,
            alice.user.id,
            session_file=name,
            ts=at(D, "05:00"),
            model=SONNET,
            tokens=(0, 0, 0, 1111),
        )
    with server.client(alice) as http:
        body = http.get("/api/me/stats/tokens").json()
    top = [(s["session_file"], s["total"]) for s in body["top_sessions"]]
    assert top == [
        ("s12.jsonl", 1212),
        ("a-tie.jsonl", 1111),
        ("s11.jsonl", 1111),
        ("z-tie.jsonl", 1111),
        ("s10.jsonl", 1010),
        ("s09.jsonl", 909),
        ("s08.jsonl", 808),
        ("s07.jsonl", 707),
        ("s06.jsonl", 606),
        ("s05.jsonl", 505),
    ]
    assert body["totals"]["total"] == sum(n * 101 for n in range(1, 13)) + 2222
    assert body["totals"]["sessions"] == 14
    assert body["by_model"] == [{"model": SONNET, **counts(7800, 78, 0, 2222, None, 14)}]
    assert body["unpriced_models"] == [SONNET]


@pytest.mark.parametrize("tz", ["Mars/Olympus", "utc+2", "", "Europe/Prague; DROP TABLE users"])
def test_unknown_time_zone_is_400(server: Server, alice: Account, tz: str) -> None:
    with server.client(alice) as http:
        response = http.get("/api/me/stats/tokens", params={"tz": tz})
    error_body(response, 400, "invalid_tz")
