"""What a batch changes, decided without a database (``service.ingest.plan``,
``service.ingest.sessions``).

The store loads what a batch touches and writes what these functions decide; here the
decisions are pinned on plain values: which copy wins, which stored copy flips, when a
session's kept sums are brought up to date and when they must be summed again, and what
the winner changes add to the usage buckets and 5-hour blocks.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec

from service.ingest.accounting import ModelSums, dedup, exact_cost, model_sums
from service.ingest.batch import FileResult
from service.ingest.plan import (
    BucketKey,
    SessionKey,
    Span,
    StoredCopy,
    WinnerChange,
    block_spans,
    bucket_deltas,
    decide_winners,
    gained,
    sort_batch,
)
from service.ingest.pricing import cost_usd
from service.ingest.sessions import Kept, StoredSession, members, plan_sessions, session_records
from service.ingest.transcript import TranscriptState, UsageEntry

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
ALICE = "alice"
SESSION = SessionKey(ALICE, "s.jsonl")
PATH = "alice/s.jsonl"


def entry(
    message_id: str | None = "msg_1",
    *,
    tokens: int = 100,
    seconds: int = 0,
    session_id: str = "s",
    model: str = "claude-opus-4-6",
    line_key: str = "l1",
) -> UsageEntry:
    return UsageEntry(
        message_id=message_id,
        request_id="req_1" if message_id else None,
        session_id=session_id,
        timestamp=T0 + timedelta(seconds=seconds),
        model=model,
        input_tokens=tokens,
        output_tokens=10,
        cache_creation_tokens=0,
        cache_creation_5m=0,
        cache_creation_1h=0,
        cache_read_tokens=0,
        is_sidechain=False,
        speed=None,
        file_name="s.jsonl",
        line_key=line_key,
    )


def read(*entries: UsageEntry, path: str = PATH, **fields: object) -> FileResult:
    """A file of alice's session ``s.jsonl`` as a batch read it."""
    name = path.rsplit("/", 1)[-1]
    result = FileResult(
        path=path,
        user_id=ALICE,
        name=name,
        session_file="s.jsonl",
        is_subagent=name != "s.jsonl",
        size=10,
        read_offset=10,
        fingerprint="f",
        state=TranscriptState(file_name=name, session_id="s", cwd="/work/app", lines=1),
        entries=list(entries),
    )
    return msgspec.structs.replace(result, **fields)


def stored(copy: UsageEntry, *, rowid: int = 1, winner: bool = True) -> StoredCopy:
    return StoredCopy(rowid, ALICE, "s.jsonl", copy, winner, _cost(copy))


def _cost(copy: UsageEntry) -> Decimal | None:
    cost = cost_usd(copy)
    return None if cost is None else exact_cost(cost)


def gain(copy: UsageEntry) -> WinnerChange:
    return WinnerChange(ALICE, "s.jsonl", 1, copy, _cost(copy))


def loss(copy: UsageEntry) -> WinnerChange:
    return WinnerChange(ALICE, "s.jsonl", -1, copy, _cost(copy))


def row_keeping(*winners: UsageEntry, session_id: str = "s", project: str = "") -> StoredSession:
    """A stored row of the session whose kept sums are those of ``winners``."""
    kept = Kept(files=[PATH], models=model_sums(winners, session_id))
    return StoredSession(session_id, [], [], kept, project)


def states() -> dict[str, TranscriptState]:
    return {PATH: TranscriptState(file_name="s.jsonl", session_id="s", cwd="/work/app")}


# -- sorting a batch out ----------------------------------------------------------------------


def test_failed_and_unchanged_files_bring_no_copies_and_touch_no_session() -> None:
    batch = sort_batch(
        [
            read(entry(), path="alice/broken.jsonl", error="cannot read: gone"),
            read(entry(), path="alice/same.jsonl", unchanged=True),
            read(entry("msg_2")),
        ]
    )
    assert [r.path for r in batch.failed] == ["alice/broken.jsonl"]
    assert [r.path for r in batch.saved] == [PATH]
    assert batch.sessions == {SESSION}
    assert batch.message_ids == {ALICE: {"msg_2"}}
    assert [c.entry.message_id for c in batch.copies[ALICE]] == ["msg_2"]


def test_a_file_read_again_from_the_start_is_replaced_and_its_session_summed_again() -> None:
    batch = sort_batch([read(entry(), replaces=True)])
    assert batch.replaced == [PATH]
    assert batch.resummed == {SESSION}


# -- deciding winners -----------------------------------------------------------------------


def test_a_bigger_copy_arriving_later_wins_and_the_stored_copy_stops_counting() -> None:
    old, new = entry(tokens=100), entry(tokens=500, line_key="l2")
    batch = sort_batch([read(new)])
    winners = decide_winners(batch, [], {ALICE: [stored(old, rowid=7)]})
    assert winners.wins(new)
    assert winners.flipped == [7]
    assert [(c.sign, c.entry) for c in winners.changes] == [(-1, old)]


def test_a_smaller_copy_arriving_later_is_stored_as_a_loser_and_nothing_flips() -> None:
    old, new = entry(tokens=500), entry(tokens=100, line_key="l2")
    batch = sort_batch([read(new)])
    winners = decide_winners(batch, [], {ALICE: [stored(old)]})
    assert not winners.wins(new)
    assert winners.flipped == [] and winners.changes == []
    assert gained(batch.copies[ALICE], [_cost(new)], winners) == []


def test_the_winner_does_not_depend_on_which_copy_arrived_first() -> None:
    small, big = entry(tokens=100), entry(tokens=500, line_key="l2")
    first = decide_winners(sort_batch([read(big)]), [], {ALICE: [stored(small)]})
    second = decide_winners(sort_batch([read(small)]), [], {ALICE: [stored(big)]})
    assert first.wins(big) and not second.wins(small)
    assert dedup([small, big]) == [big]


def test_an_entry_without_a_message_id_always_counts() -> None:
    notice = entry(None)
    batch = sort_batch([read(notice)])
    winners = decide_winners(batch, [], {})
    assert winners.wins(notice)
    assert [c.entry for c in gained(batch.copies[ALICE], [None], winners)] == [notice]


def test_a_winner_deleted_with_its_file_counts_out_and_another_copy_may_take_over() -> None:
    gone, other = entry(tokens=500), entry(tokens=100, line_key="l2")
    batch = sort_batch([read(replaces=True)])
    deleted = [stored(gone, rowid=1)]
    for copy in deleted:
        batch.touch(copy)
    winners = decide_winners(batch, deleted, {ALICE: [stored(other, rowid=2, winner=False)]})
    assert [(c.sign, c.entry) for c in winners.changes] == [(-1, gone), (1, other)]
    assert winners.flipped == [2]


def test_a_flipped_copy_in_another_session_brings_that_session_up_to_date_too() -> None:
    old = StoredCopy(3, ALICE, "other.jsonl", entry(tokens=100), True, None)
    batch = sort_batch([read(entry(tokens=900, line_key="l2"))])
    decide_winners(batch, [], {ALICE: [old]})
    assert batch.sessions == {SESSION, SessionKey(ALICE, "other.jsonl")}


# -- session rows -------------------------------------------------------------------------------


def test_an_append_adds_its_winners_to_the_kept_sums_without_summing_again() -> None:
    first, second = entry("msg_1"), entry("msg_2", seconds=60, line_key="l2")
    rows = {SESSION: row_keeping(first)}
    plan = plan_sessions({SESSION: {PATH}}, states(), rows, [gain(second)], set())
    assert plan.to_sum == {}
    assert plan.sums[SESSION] == model_sums([first, second], "s")


def test_kept_sums_brought_up_to_date_equal_the_winners_summed_again() -> None:
    rng = random.Random(7)
    winners = [entry(f"msg_{i}", seconds=i, tokens=rng.randint(1, 9_999)) for i in range(40)]
    rows = {SESSION: row_keeping(*winners[:30])}
    # later responses lost and new ones gained: the earliest response stays
    changes = [loss(w) for w in winners[25:30]] + [gain(w) for w in winners[30:]]
    plan = plan_sessions({SESSION: {PATH}}, states(), rows, changes, set())
    assert plan.sums[SESSION] == model_sums(winners[:25] + winners[30:], "s")


def test_losing_what_may_be_a_models_earliest_response_sums_the_session_again() -> None:
    first, second = entry("msg_1"), entry("msg_2", seconds=60, line_key="l2")
    rows = {SESSION: row_keeping(first, second)}
    plan = plan_sessions({SESSION: {PATH}}, states(), rows, [loss(first)], set())
    assert plan.to_sum == {SESSION: "s"}


def test_a_session_read_again_from_the_start_is_summed_again() -> None:
    rows = {SESSION: row_keeping(entry())}
    plan = plan_sessions({SESSION: {PATH}}, states(), rows, [], {SESSION})
    assert plan.to_sum == {SESSION: "s"}


def test_a_session_whose_id_changed_is_summed_again() -> None:
    rows = {SESSION: row_keeping(entry(session_id="old"), session_id="old")}
    plan = plan_sessions({SESSION: {PATH}}, states(), rows, [], set())
    assert plan.to_sum == {SESSION: "s"}


def test_only_entries_of_the_sessions_own_id_count_in_its_sums() -> None:
    other = entry("msg_9", session_id="resumed-from")
    plan = plan_sessions({SESSION: {PATH}}, states(), {}, [gain(other)], set())
    assert plan.sums[SESSION] == []


def test_the_sessions_own_transcript_comes_first_then_its_subagent_files() -> None:
    sub = "alice/s.agent-1.jsonl"
    found = members([SESSION], {}, [read(path=sub), read()])
    all_states = {sub: TranscriptState(file_name="s.agent-1.jsonl"), **states()}
    plan = plan_sessions(found, all_states, {}, [], set())
    assert plan.files[SESSION] == [PATH, sub]


def test_a_new_session_gets_a_row_with_its_project_and_kept_sums() -> None:
    winner = entry()
    plan = plan_sessions({SESSION: {PATH}}, states(), {}, [gain(winner)], set())
    written = session_records(plan, {}, states(), {}, [SESSION])
    row = written.rows[SESSION]
    assert (row.session.key, row.summary.session_id, row.project) == (PATH, "s", "/work/app")
    assert row.summary.input_tokens == 100 and row.summary.assistant_messages == 1
    assert row.kept == Kept(files=[PATH], models=model_sums([winner], "s"))
    assert written.projects == {SESSION: row.project_key} and written.moved == {}


def test_a_session_whose_files_are_all_gone_from_view_loses_its_row() -> None:
    rows = {SESSION: row_keeping(entry(), project="app")}
    plan = plan_sessions({SESSION: set()}, {}, rows, [], set())
    written = session_records(plan, {}, {}, rows, [SESSION])
    assert written.rows == {} and written.gone == [SESSION]
    assert written.projects == {SESSION: ""} and written.moved == {SESSION: ""}


def test_a_session_summed_again_takes_the_stores_sums() -> None:
    rows = {SESSION: row_keeping(entry())}
    plan = plan_sessions({SESSION: {PATH}}, states(), rows, [], {SESSION})
    summed = {SESSION: [ModelSums(model="claude-opus-4-6", entries=2, input_tokens=7)]}
    row = session_records(plan, summed, states(), rows, [SESSION]).rows[SESSION]
    assert row.summary.input_tokens == 7 and row.kept.models == summed[SESSION]


# -- aggregates ----------------------------------------------------------------------------------


def test_winner_changes_add_to_their_15_minute_bucket_and_cancelling_ones_drop_out() -> None:
    a, b = entry("msg_1", seconds=60), entry("msg_2", seconds=16 * 60, line_key="l2")
    deltas = bucket_deltas([gain(a), gain(b), loss(b)])
    assert list(deltas) == [BucketKey(ALICE, T0, "s.jsonl", "claude-opus-4-6")]
    assert deltas[BucketKey(ALICE, T0, "s.jsonl", "claude-opus-4-6")].input_tokens == 100


def test_block_spans_run_from_each_users_earliest_to_latest_change() -> None:
    changes = [gain(entry(seconds=600)), loss(entry(seconds=60)), gain(entry(seconds=300))]
    assert block_spans(changes) == {
        ALICE: Span(T0 + timedelta(seconds=60), T0 + timedelta(seconds=600))
    }
