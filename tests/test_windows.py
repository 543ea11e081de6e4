"""Date windows and projects on ``/api/me/stats/tokens`` and ``/api/me/stats/sessions``:
what a user selects is what every number covers, and what cannot be a window is a 400."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from service.synthetic.lines import assistant, jsonl
from tests.conftest import Account, Server
from tests.seed import error_body, upload_and_wait

TODAY = datetime.now(UTC).date()
CHURN = "/home/ana/work/churn_model.v2"
CHURN_KEY = "-home-ana-work-churn-model-v2"
SALES = "/home/ana/sales_q3"
SALES_KEY = "-home-ana-sales-q3"


def line(n: int, day: date, clock: str, cwd: str, tokens: int, session: str) -> bytes:
    return jsonl(
        assistant(
            uuid=f"u{n}",
            ts=f"{day.isoformat()}T{clock}Z",
            message_id=f"msg_{n}",
            request_id=f"req_{n}",
            model="claude-sonnet-4-5",
            usage={"input_tokens": tokens, "output_tokens": 1},
            cwd=cwd,
            session=session,
        )
    )


@pytest.fixture
def ana(server: Server, alice: Account) -> Account:
    """Three sessions: churn 40 days ago and 2 days ago, sales 2 days ago (at 23:30 UTC:
    the next day east of UTC)."""
    old, recent = TODAY - timedelta(days=40), TODAY - timedelta(days=2)
    upload_and_wait(server, alice, "c1.jsonl", line(1, old, "10:00:00", CHURN, 100, "c1"))
    upload_and_wait(server, alice, "c2.jsonl", line(2, recent, "10:00:00", CHURN, 20, "c2"))
    upload_and_wait(server, alice, "s1.jsonl", line(3, recent, "23:30:00", SALES, 3, "s1"))
    return alice


def get(server: Server, who: Account, path: str, **params: Any) -> Any:
    with server.client(who) as http:
        response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_sessions_carry_their_project_and_its_key(server: Server, ana: Account) -> None:
    rows = get(server, ana, "/api/me/stats/sessions")["rows"]
    assert {(r["session_file"], r["project"], r["project_key"]) for r in rows} == {
        ("c1.jsonl", CHURN, CHURN_KEY),
        ("c2.jsonl", CHURN, CHURN_KEY),
        ("s1.jsonl", SALES, SALES_KEY),
    }


def test_by_project_covers_the_whole_history_and_the_window_its_own_days(
    server: Server, ana: Account
) -> None:
    body = get(server, ana, "/api/me/stats/tokens", days=7)
    lifetime = {p["key"]: (p["project"], p["sessions"], p["input"]) for p in body["by_project"]}
    assert lifetime == {CHURN_KEY: (CHURN, 2, 120), SALES_KEY: (SALES, 1, 3)}
    window = body["window"]
    assert (window["from"], window["to"]) == ((TODAY - timedelta(days=6)).isoformat(), str(TODAY))
    assert {p["key"]: (p["sessions"], p["input"]) for p in window["by_project"]} == {
        CHURN_KEY: (1, 20),
        SALES_KEY: (1, 3),
    }
    assert window["totals"]["input"] == 23 and body["totals"]["input"] == 123
    churn = next(p for p in body["by_project"] if p["key"] == CHURN_KEY)
    # the end of the 15-minute period of its latest usage (10:00 UTC)
    assert churn["last_active"] == f"{TODAY - timedelta(days=2)}T10:15:00+00:00"
    assert churn["total"] == 122 and churn["cost_usd"] > 0


def test_project_narrows_tokens_and_sessions_to_that_project(server: Server, ana: Account) -> None:
    body = get(server, ana, "/api/me/stats/tokens", days="all", project=SALES_KEY)
    assert body["project"] == SALES_KEY
    assert body["totals"]["input"] == 3 and body["window"]["totals"]["input"] == 3
    assert [p["key"] for p in body["window"]["by_project"]] == [SALES_KEY]
    assert len(body["by_project"]) == 2  # the list a picker offers stays whole
    assert [s["session_file"] for s in body["top_sessions"]] == ["s1.jsonl"]
    page = get(server, ana, "/api/me/stats/sessions", project=CHURN_KEY)
    assert (page["total"], {r["session_file"] for r in page["rows"]}) == (
        2,
        {"c1.jsonl", "c2.jsonl"},
    )
    assert get(server, ana, "/api/me/stats/sessions", project="-nope")["total"] == 0


def test_days_all_runs_from_the_first_activity_to_today(server: Server, ana: Account) -> None:
    body = get(server, ana, "/api/me/stats/tokens", days="all")
    assert body["days"] == 41 and len(body["daily"]) == 41
    assert body["daily"][0] == {
        "day": str(TODAY - timedelta(days=40)),
        "input": 100,
        "output": 1,
        "cache_read": 0,
        "cache_creation": 0,
        "total": 101,
        "cost_usd": body["daily"][0]["cost_usd"],
        "sessions": 1,
    }
    assert body["daily"][1]["cost_usd"] == 0.0  # a day without usage costs nothing
    assert body["window"]["totals"] == body["totals"]


def test_from_and_to_are_local_dates_in_tz_both_included(server: Server, ana: Account) -> None:
    recent = TODAY - timedelta(days=2)
    utc = get(server, ana, "/api/me/stats/tokens", **{"from": str(recent), "to": str(recent)})
    assert utc["window"]["totals"]["input"] == 23  # in UTC both fall on that day
    east = get(
        server,
        ana,
        "/api/me/stats/tokens",
        tz="Asia/Tokyo",
        **{"from": str(recent), "to": str(recent)},
    )
    assert [d["day"] for d in east["daily"]] == [str(recent)]
    assert east["window"]["totals"]["input"] == 20  # 23:30 UTC is the next day in Tokyo
    sessions = get(
        server,
        ana,
        "/api/me/stats/sessions",
        tz="Asia/Tokyo",
        **{"from": str(recent + timedelta(days=1))},
    )
    assert [r["session_file"] for r in sessions["rows"]] == ["s1.jsonl"]


def test_from_alone_runs_to_today(server: Server, ana: Account) -> None:
    first = TODAY - timedelta(days=45)
    body = get(server, ana, "/api/me/stats/tokens", **{"from": str(first)})
    assert (body["window"]["from"], body["window"]["to"], body["days"]) == (
        str(first),
        str(datetime.now(ZoneInfo("UTC")).date()),
        46,
    )
    assert body["window"]["totals"]["input"] == 123


def test_each_window_has_its_own_etag(server: Server, ana: Account) -> None:
    with server.client(ana) as http:
        week = http.get("/api/me/stats/tokens", params={"days": 7})
        month = http.get("/api/me/stats/tokens", params={"days": 30})
        churn = http.get("/api/me/stats/tokens", params={"days": 7, "project": CHURN_KEY})
        again = http.get(
            "/api/me/stats/tokens",
            params={"days": 7},
            headers={"If-None-Match": week.headers["ETag"]},
        )
        other = http.get(
            "/api/me/stats/tokens",
            params={"days": 30},
            headers={"If-None-Match": week.headers["ETag"]},
        )
    assert len({week.headers["ETag"], month.headers["ETag"], churn.headers["ETag"]}) == 3
    assert again.status_code == 304 and other.status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-03-02", "to": "2026-03-01"},  # from after to
        {"from": "2016-01-01", "to": "2026-01-10"},  # 3,663 days
        {"to": "2026-03-01"},  # to needs from
        {"days": "7", "from": "2026-03-01"},  # one or the other
        {"from": "2026-02-30"},  # no such day
        {"from": "01/03/2026"},
        {"days": "0"},
        {"days": "3661"},
    ],
)
@pytest.mark.parametrize("tab", ["tokens", "sessions"])
def test_what_is_no_window_is_400(
    server: Server, alice: Account, tab: str, params: dict[str, str]
) -> None:
    with server.client(alice) as http:
        error_body(http.get(f"/api/me/stats/{tab}", params=params), 400)


def test_a_window_of_3660_days_is_taken(server: Server, alice: Account) -> None:
    first = TODAY - timedelta(days=3659)
    body = get(server, alice, "/api/me/stats/tokens", **{"from": str(first), "to": str(TODAY)})
    assert body["days"] == 3660 and body["daily"][-1]["day"] == str(TODAY)


def test_days_all_reaches_back_at_most_3660_days(server: Server, alice: Account) -> None:
    """A clock set far back (a line from 20 years ago) does not make the daily series
    20 years long: the window stops 3,660 days back; the lifetime totals still count it,
    and the sessions list with days=all still lists it."""
    ancient = TODAY - timedelta(days=7300)
    upload_and_wait(server, alice, "old.jsonl", line(1, ancient, "10:00:00", CHURN, 5, "old"))
    upload_and_wait(server, alice, "new.jsonl", line(2, TODAY, "00:00:00", SALES, 7, "new"))
    body = get(server, alice, "/api/me/stats/tokens", days="all")
    assert body["days"] == 3660 and body["window"]["from"] == str(TODAY - timedelta(days=3659))
    assert body["window"]["totals"]["input"] == 7 and body["totals"]["input"] == 12
    sessions = get(server, alice, "/api/me/stats/sessions", days="all")
    assert sessions["total"] == 2
