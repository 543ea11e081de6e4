"""``/api/me/stats/blocks`` and the live socket's ``blocks`` tab, on transcripts uploaded
through the API: every number worked out from the lines the test wrote."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import msgspec
import pytest

from service.ingest.blocks import BlockEntry, micros
from service.ingest.pricing import cost_usd
from service.ingest.transcript import UsageEntry
from service.payloads import BlocksQuery, Payloads
from service.synthetic.lines import assistant, jsonl, user
from tests.browser import settled, upload
from tests.conftest import Account, Server
from tests.test_blocks import moment, reference
from tests.test_live import receive, socket, until

OPUS = "claude-opus-4-6"
KOLKATA = "Asia/Kolkata"
NEW_YORK = "America/New_York"


def stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


class Transcript:
    """A session written line by line, with the winning entries it holds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[dict[str, Any]] = []
        self.entries: list[BlockEntry] = []

    def prompt(self, at: datetime) -> Transcript:
        n = len(self.lines)
        self.lines.append(user("go on", uuid=f"{self.name}-u{n}", ts=stamp(at), session=self.name))
        return self

    def reply(
        self, at: datetime, tokens: tuple[int, int, int, int], model: str = OPUS
    ) -> Transcript:
        n = len(self.lines)
        inp, out, read, create = tokens
        usage = {
            "input_tokens": inp,
            "output_tokens": out,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": create,
        }
        self.lines.append(
            assistant(
                uuid=f"{self.name}-a{n}",
                ts=stamp(at),
                message_id=f"{self.name}-m{n}",
                request_id=f"{self.name}-r{n}",
                model=model,
                usage=usage,
                session=self.name,
            )
        )
        priced = UsageEntry(
            message_id=None,
            request_id=None,
            session_id=self.name,
            timestamp=at,
            model=model,
            input_tokens=inp,
            output_tokens=out,
            cache_creation_tokens=create,
            cache_creation_5m=create,
            cache_creation_1h=0,
            cache_read_tokens=read,
            is_sidechain=False,
            speed=None,
            file_name="",
            line_key="",
        )
        self.entries.append(BlockEntry(micros(at), model, inp, out, read, create, cost_usd(priced)))
        return self

    def bytes(self) -> bytes:
        return jsonl(*self.lines)


def send(server: Server, account: Account, *transcripts: Transcript) -> None:
    with server.client(account) as http:
        for t in transcripts:
            upload(http, f"{t.name}.jsonl", t.bytes())
        settled(http, {f"{t.name}.jsonl" for t in transcripts})


def blocks_of(server: Server, account: Account, **params: Any) -> dict[str, Any]:
    with server.client(account) as http:
        response = http.get("/api/me/stats/blocks", params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def rows(entries: list[BlockEntry], now: datetime) -> list[dict[str, Any]]:
    """The reference blocks as the API shows them, newest first."""
    shown = []
    for b in reversed(reference(entries)):
        shown.append(
            {
                "start": b["start"].isoformat(),
                "end": b["end"].isoformat(),
                "last_activity": b["last_activity"].isoformat(),
                "is_active": now < b["end"] and now - b["last_activity"] < timedelta(hours=5),
                "entries": b["entries"],
                "models": b["models"],
                "input": b["input"],
                "output": b["output"],
                "cache_read": b["cache_read"],
                "cache_creation": b["cache_creation"],
                "total": b["input"] + b["output"] + b["cache_read"] + b["cache_creation"],
                "cost_usd": b["cost_usd"],
            }
        )
    return shown


def minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def working(server: Server, alice: Account, bob: Account, now: datetime) -> list[BlockEntry]:
    """Alice is at work: replies 50 and 20 minutes ago (the active block), and a bigger
    block two days ago; Bob has a block of his own now. Alice's entries."""
    earlier = (
        Transcript("earlier")
        .prompt(now - timedelta(days=2, hours=3))
        .reply(now - timedelta(days=2, hours=3), (900, 9000, 90000, 9900))
    )
    current = (
        Transcript("current")
        .prompt(now - timedelta(minutes=51))
        .reply(now - timedelta(minutes=50), (1000, 2000, 30000, 4000))
        .reply(now - timedelta(minutes=20), (500, 1500, 20000, 0))
    )
    send(server, alice, earlier, current)
    send(server, bob, Transcript("bobs").reply(now - timedelta(minutes=5), (7, 7, 7, 7)))
    return earlier.entries + current.entries


def test_the_active_block_shows_its_pace_and_where_it_ends_up(
    server: Server, alice: Account, working: list[BlockEntry]
) -> None:
    before = minute(datetime.now(UTC))
    answer = blocks_of(server, alice, days=3)
    after = minute(datetime.now(UTC))
    as_of = datetime.fromisoformat(answer["as_of"])
    assert before <= as_of <= after and as_of.second == 0
    assert answer["blocks"] == rows(working, as_of)
    block = answer["blocks"][0]
    assert block["is_active"] and not answer["blocks"][1]["is_active"]
    assert block["total"] == 59_000 and block["entries"] == 2
    end = datetime.fromisoformat(block["end"])
    remaining = (end - as_of).total_seconds()
    per_minute = 59_000 / 30  # between the first and the last reply
    per_hour = block["cost_usd"] / 30 * 60
    assert answer["active"] == {
        "start": block["start"],
        "end": block["end"],
        "remaining_seconds": int(remaining),
        "tokens_per_minute": round(per_minute, 3),
        "cost_per_hour": round(per_hour, 9),
        "projected_total": round(59_000 + per_minute * remaining / 60),
        "projected_cost_usd": round(block["cost_usd"] + per_hour * remaining / 3600, 9),
        "percent_of_limit": None,
        "projected_percent_of_limit": None,
    }
    assert answer["token_limit"] is None
    assert answer["last_block_end"] == block["end"]


def test_a_token_limit_gives_percentages_and_max_is_the_largest_finished_block(
    server: Server, alice: Account, working: list[BlockEntry]
) -> None:
    limited = blocks_of(server, alice, token_limit=100_000)
    # the projection of the same answer: two requests may fall in two different minutes
    projected = limited["active"]["projected_total"]
    assert limited["token_limit"] == 100_000
    assert limited["active"]["percent_of_limit"] == 59.0
    assert limited["active"]["projected_percent_of_limit"] == round(projected / 1000, 2)
    largest = blocks_of(server, alice, token_limit="max")
    assert largest["token_limit"] == 109_800  # the finished block two days ago
    assert largest["active"]["percent_of_limit"] == round(59_000 / 109_800 * 100, 2)
    carol = server.account("carol@example.com")
    assert blocks_of(server, carol, token_limit="max")["token_limit"] is None


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", "MAX", "9" * 30])
def test_a_bad_token_limit_is_400(server: Server, alice: Account, value: str) -> None:
    with server.client(alice) as http:
        response = http.get("/api/me/stats/blocks", params={"token_limit": value})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_token_limit"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"days": 0}, 400),
        ({"days": 366}, 400),
        ({"days": "some"}, 400),
        ({"tz": "Mars/Olympus"}, 400),
        ({"from": "2026-02-03", "to": "2026-02-01"}, 400),
        ({"to": "2026-02-01"}, 400),
        ({"from": "2026-02-30"}, 400),
        ({"days": 3, "from": "2026-02-01"}, 400),
    ],
)
def test_bad_windows_and_zones_are_400(
    server: Server, alice: Account, params: dict[str, Any], code: int
) -> None:
    with server.client(alice) as http:
        assert http.get("/api/me/stats/blocks", params=params).status_code == code


def test_the_window_counts_local_days_of_the_zone_asked(
    server: Server, alice: Account, now: datetime
) -> None:
    """Blocks every 7 hours over four days; a window of two days starts at a different
    instant in Kolkata than in New York, and each answer holds the blocks that started
    after it (or are active)."""
    t = Transcript("spread")
    for n in range(14):
        t.reply(now - timedelta(hours=7 * n + 1), (10 * (n + 1), 1, 1, 1))
    send(server, alice, t)
    seen = {}
    for tz in (KOLKATA, NEW_YORK):
        answer = blocks_of(server, alice, days=2, tz=tz)
        as_of = datetime.fromisoformat(answer["as_of"])
        local_today = as_of.astimezone(ZoneInfo(tz)).date()
        since = datetime.combine(local_today - timedelta(days=1), datetime.min.time(), ZoneInfo(tz))
        want = [
            r
            for r in rows(t.entries, as_of)
            if r["is_active"] or datetime.fromisoformat(r["start"]) >= since
        ]
        assert answer["blocks"] == want
        assert answer["tz"] == tz and answer["days"] == 2
        seen[tz] = [r["start"] for r in want]
    assert seen[KOLKATA] != seen[NEW_YORK]


def test_a_window_of_dates_or_all_holds_the_blocks_that_started_in_it(
    server: Server, alice: Account, now: datetime
) -> None:
    """Blocks every 7 hours over four days: ``from``/``to`` (local dates in the zone asked)
    keep those that started on those days, plus the active one; ``days=all`` keeps every
    block and counts its days from the first one's."""
    t = Transcript("spread")
    for n in range(14):
        t.reply(now - timedelta(hours=7 * n + 1), (10 * (n + 1), 1, 1, 1))
    send(server, alice, t)
    for tz in (KOLKATA, NEW_YORK):
        zone = ZoneInfo(tz)
        local_today = datetime.now(UTC).astimezone(zone).date()
        first, last = local_today - timedelta(days=3), local_today - timedelta(days=2)
        answer = blocks_of(server, alice, tz=tz, **{"from": first.isoformat(), "to": str(last)})
        as_of = datetime.fromisoformat(answer["as_of"])
        since = datetime.combine(first, datetime.min.time(), zone)
        until = datetime.combine(last + timedelta(days=1), datetime.min.time(), zone)
        want = [
            r
            for r in rows(t.entries, as_of)
            if r["is_active"] or since <= datetime.fromisoformat(r["start"]) < until
        ]
        assert answer["blocks"] == want and len(want) > 2
        assert answer["days"] == 2
        everything = blocks_of(server, alice, tz=tz, days="all")
        assert everything["blocks"] == rows(t.entries, as_of)
        oldest = datetime.fromisoformat(everything["blocks"][-1]["start"]).astimezone(zone)
        assert everything["days"] == (local_today - oldest.date()).days + 1


def test_today_counts_the_local_day_of_the_zone_asked(
    server: Server, alice: Account, now: datetime
) -> None:
    t = Transcript("today")
    for n in range(30):
        t.reply(now - timedelta(hours=n + 0.5), (n + 1, 2 * n, 0, 1))
    send(server, alice, t)
    for tz in (KOLKATA, NEW_YORK):
        answer = blocks_of(server, alice, tz=tz)
        as_of = datetime.fromisoformat(answer["as_of"])
        day = as_of.astimezone(ZoneInfo(tz)).date()
        mine = [e for e in t.entries if moment(e).astimezone(ZoneInfo(tz)).date() == day]
        today = answer["today"]
        assert today["day"] == day.isoformat()
        assert (today["input"], today["output"], today["cache_read"], today["cache_creation"]) == (
            sum(e.input_tokens for e in mine),
            sum(e.output_tokens for e in mine),
            0,
            len(mine),
        )
        assert today["sessions"] == (1 if mine else 0)


def test_sessions_active_in_the_last_ten_minutes_are_listed(
    server: Server, alice: Account, now: datetime
) -> None:
    recent = (
        Transcript("recent")
        .prompt(now - timedelta(minutes=30))
        .reply(now - timedelta(minutes=3), (1, 2, 3, 4))
    )
    idle = (
        Transcript("idle")
        .prompt(now - timedelta(minutes=40))
        .reply(now - timedelta(minutes=25), (1, 1, 1, 1))
    )
    send(server, alice, recent, idle)
    answer = blocks_of(server, alice)
    assert [(s["session_file"], s["total"]) for s in answer["active_sessions"]] == [
        ("recent.jsonl", 10)
    ]
    assert answer["active_sessions"][0]["ended_at"] == (now - timedelta(minutes=3)).isoformat()


def test_no_block_is_called_active_past_its_end_though_no_data_changed(
    server: Server, alice: Account, working: list[BlockEntry]
) -> None:
    """The answer is named by its minute: the one cached while the block was active is
    not the answer for a minute after its end (same data, same version)."""
    payloads = Payloads(server.store)
    active = blocks_of(server, alice)["blocks"][0]
    end = datetime.fromisoformat(active["end"])

    async def ask(at: datetime) -> tuple[int, dict[str, Any]]:
        query = BlocksQuery(days=3, tz="UTC", as_of=at.isoformat())
        payload = await payloads.get(alice.user.id, query)
        return payload.version, msgspec.json.decode(payload.body)

    version, last_minute = anyio.run(ask, end - timedelta(minutes=1))
    same, past = anyio.run(ask, end)
    assert same == version
    assert last_minute["active"]["remaining_seconds"] == 60
    assert last_minute["blocks"][0]["is_active"]
    assert past["active"] is None and not past["blocks"][0]["is_active"]
    assert past["last_block_end"] == active["end"]


def test_an_unchanged_answer_is_304_within_its_minute_only(
    server: Server, alice: Account, working: list[BlockEntry]
) -> None:
    with server.client(alice) as http:
        for _ in range(3):  # a pair of requests that straddles a minute is asked again
            began = minute(datetime.now(UTC))
            first = http.get("/api/me/stats/blocks")
            again = http.get(
                "/api/me/stats/blocks", headers={"If-None-Match": first.headers["ETag"]}
            )
            if minute(datetime.now(UTC)) == began:
                break
        assert again.status_code == 304


def test_an_upload_pushes_the_new_block_to_its_owner_and_the_poll_names_the_tab(
    server: Server, alice: Account, now: datetime
) -> None:
    with server.client(alice) as http, socket(server, alice) as ws:
        snapshot = receive(ws)
        assert snapshot["type"] == "snapshot"
        assert (
            snapshot["tabs"]["blocks"]["blocks"] == []
            and snapshot["tabs"]["blocks"]["active"] is None
        )
        version = snapshot["version"]
        t = Transcript("live").reply(now - timedelta(minutes=2), (10, 20, 30, 40))
        upload(http, "live.jsonl", t.bytes())
        update = until(ws, lambda m: m["type"] == "update" and "blocks" in m["tabs"])
        pushed = update["tabs"]["blocks"]
        assert pushed["blocks"] == rows(t.entries, datetime.fromisoformat(pushed["as_of"]))
        assert pushed["active"]["start"] == pushed["blocks"][0]["start"]
        assert pushed["active"]["tokens_per_minute"] is None  # one reply: no pace yet
        assert pushed["today"]["total"] == 100
        polled = http.get("/api/me/live/poll", params={"since": version, "timeout": 5}).json()
        assert "blocks" in polled["changed"]


def test_each_user_sees_only_their_own_blocks(
    server: Server, alice: Account, bob: Account, working: list[BlockEntry], now: datetime
) -> None:
    theirs = blocks_of(server, bob)
    assert [(b["entries"], b["total"]) for b in theirs["blocks"]] == [(1, 28)]
    same_day = (now - timedelta(minutes=5)).date() == datetime.fromisoformat(theirs["as_of"]).date()
    assert theirs["today"]["total"] == (28 if same_day else 0)
    carol = server.account("carol2@example.com")
    answer = blocks_of(server, carol)
    assert answer["blocks"] == [] and answer["active"] is None and answer["today"]["total"] == 0
    assert answer["last_block_end"] is None and answer["active_sessions"] == []


def test_blocks_export_as_csv_one_line_per_block(
    server: Server, alice: Account, working: list[BlockEntry]
) -> None:
    with server.client(alice) as http:
        answer = http.get("/api/me/stats/blocks").json()
        response = http.get("/api/me/stats/blocks", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(response.text)))
    assert lines[0] == list(answer["blocks"][0])
    assert [line[0] for line in lines[1:]] == [b["start"] for b in answer["blocks"]]
    assert lines[1][lines[0].index("models")] == json.dumps([OPUS]).replace(" ", "")
