"""5-hour blocks kept by ingest: always equal to the rules of TRANSCRIPTS.md applied to all
of a user's winning entries at once, however the entries arrived.

The reference here is the rule read literally, written apart from the service's code:
sort every winning entry by time, walk them, and open a block at the start of an entry's
UTC hour when it is more than 5 hours after the block's start or after the entry before.
"""

from __future__ import annotations

import math
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from service import operations
from service.ingest.backfill import archive_all, find_transcripts
from service.ingest.blocks import Block, BlockEntry, build, micros
from service.ingest.pipeline import Ingest
from service.ingest.pricing import cost_usd
from service.ingest.transcript import UsageEntry
from service.models import User
from service.settings import Settings
from service.store import Store, blocks
from service.store.ingest import reset_derived
from service.store.migrations import available
from service.synthetic import corpus
from service.synthetic.lines import assistant, jsonl
from tests.test_ingest import BACKFILLS, backfill, folder, grow_in_pieces

HOUR = timedelta(hours=1)
FIVE_HOURS = timedelta(hours=5)


# -- the reference ---------------------------------------------------------------------------


def reference(entries: list[BlockEntry]) -> list[dict[str, Any]]:
    """TRANSCRIPTS.md's block rules, read literally."""
    result: list[dict[str, Any]] = []
    members: list[BlockEntry] = []
    start: datetime | None = None
    for entry in sorted(entries, key=lambda e: e.ts):
        utc = moment(entry)
        if start is None or utc - start > FIVE_HOURS or utc - moment(members[-1]) > FIVE_HOURS:
            if members:
                result.append(summed(start, members))  # type: ignore[arg-type]
            start = utc.replace(minute=0, second=0, microsecond=0)
            members = []
        members.append(entry)
    if members:
        result.append(summed(start, members))  # type: ignore[arg-type]
    return result


def moment(entry: BlockEntry) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=entry.ts)


def summed(start: datetime, members: list[BlockEntry]) -> dict[str, Any]:
    costs = [m.cost_usd for m in members if m.cost_usd is not None]
    return {
        "start": start,
        "end": start + FIVE_HOURS,
        "first": moment(members[0]),
        "last_activity": moment(members[-1]),
        "entries": len(members),
        "models": sorted({m.model for m in members if m.model and m.model != "<synthetic>"}),
        "input": sum(m.input_tokens for m in members),
        "output": sum(m.output_tokens for m in members),
        "cache_read": sum(m.cache_read_tokens for m in members),
        "cache_creation": sum(m.cache_creation_tokens for m in members),
        "cost_usd": round(math.fsum(costs), 9) if costs else None,
    }


def as_dicts(found: list[Block]) -> list[dict[str, Any]]:
    return [
        {
            "start": b.start,
            "end": b.end,
            "first": b.first_at,
            "last_activity": b.last_at,
            "entries": b.entries,
            "models": b.models,
            "input": b.input_tokens,
            "output": b.output_tokens,
            "cache_read": b.cache_read_tokens,
            "cache_creation": b.cache_creation_tokens,
            "cost_usd": b.cost_usd,
        }
        for b in found
    ]


def corpus_entries(expected: corpus.Expected) -> list[BlockEntry]:
    """The corpus's winning entries as the generator wrote them, priced by the price list."""
    found = []
    for moment, model, usage in expected.winners:
        breakdown = usage.get("cache_creation")
        five = breakdown["ephemeral_5m_input_tokens"] if breakdown else None
        hour = breakdown["ephemeral_1h_input_tokens"] if breakdown else 0
        create = usage["cache_creation_input_tokens"] if breakdown is None else five + hour
        priced = UsageEntry(
            message_id=None,
            request_id=None,
            session_id="",
            timestamp=moment,
            model=model,
            input_tokens=usage["input_tokens"],
            output_tokens=usage["output_tokens"],
            cache_creation_tokens=create,
            cache_creation_5m=create - hour,
            cache_creation_1h=hour,
            cache_read_tokens=usage["cache_read_input_tokens"],
            is_sidechain=False,
            speed=usage.get("speed"),
            file_name="",
            line_key="",
        )
        found.append(
            BlockEntry(
                micros(moment),
                model,
                priced.input_tokens,
                priced.output_tokens,
                priced.cache_read_tokens,
                priced.cache_creation_tokens,
                cost_usd(priced),
            )
        )
    return found


def stored(store: Store, user_id: str) -> list[dict[str, Any]]:
    return as_dicts(store.read_sync(blocks.stored_blocks, user_id))


# -- the rule on its own ---------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 9, 17, 30, tzinfo=UTC)


def entry(at: datetime, tokens: int = 100, model: str = "claude-opus-4-6") -> BlockEntry:
    return BlockEntry(micros(at), model, tokens, 2 * tokens, 3 * tokens, 4 * tokens, tokens / 1e4)


def test_a_block_starts_at_the_utc_hour_and_takes_entries_up_to_five_hours_after_it() -> None:
    at_end = T0.replace(minute=0, second=0) + FIVE_HOURS  # 14:00:00: still the first block
    past = at_end + timedelta(microseconds=1)
    found = build([entry(T0), entry(at_end), entry(past)])
    assert [(b.start, b.first_at, b.last_at, b.entries) for b in found] == [
        (datetime(2026, 3, 2, 9, tzinfo=UTC), T0, at_end, 2),
        (datetime(2026, 3, 2, 14, tzinfo=UTC), past, past, 1),
    ]
    assert found[0].end == datetime(2026, 3, 2, 14, tzinfo=UTC)


def test_a_gap_of_more_than_five_hours_opens_a_block_at_the_next_entrys_hour() -> None:
    later = T0 + FIVE_HOURS + timedelta(seconds=1)
    found = build([entry(T0 + timedelta(hours=2)), entry(later + timedelta(hours=2))])
    assert [b.start for b in found] == [
        datetime(2026, 3, 2, 11, tzinfo=UTC),
        datetime(2026, 3, 2, 16, tzinfo=UTC),
    ]


def test_a_half_hour_zone_still_starts_blocks_at_utc_hours() -> None:
    kolkata = timezone_offset(5, 30)
    found = build([entry(datetime(2026, 3, 2, 15, 10, tzinfo=kolkata).astimezone(UTC))])
    assert found[0].start == datetime(2026, 3, 2, 9, tzinfo=UTC)  # 14:30 in Kolkata


def timezone_offset(hours: int, minutes: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=hours, minutes=minutes))


def test_synthetic_entries_count_in_the_sums_but_name_no_model() -> None:
    found = build([entry(T0), BlockEntry(micros(T0 + HOUR), "<synthetic>", 0, 0, 0, 0, 0.0)])
    assert found[0].entries == 2 and found[0].models == ["claude-opus-4-6"]


def test_a_block_of_unpriced_entries_has_no_cost_and_a_mixed_one_the_priced_part() -> None:
    unpriced = BlockEntry(micros(T0), "mystery-1", 5, 5, 0, 0, None)
    assert build([unpriced])[0].cost_usd is None
    assert build([unpriced, entry(T0 + HOUR)])[0].cost_usd == 0.01


@pytest.mark.parametrize("seed", range(20))
def test_random_entries_make_the_reference_blocks_in_any_order(seed: int) -> None:
    rng = random.Random(seed)
    moments = []
    at = T0
    for _ in range(rng.randint(1, 300)):
        at += timedelta(seconds=rng.choice([1, 30, 600, 3600, 4 * 3600, 5 * 3600, 6 * 3600]))
        moments.append(at)
    entries = [
        entry(m, rng.randint(0, 5000), rng.choice(["a", "b", "<synthetic>"])) for m in moments
    ]
    shuffled = entries[:]
    rng.shuffle(shuffled)
    assert as_dicts(build(shuffled)) == reference(entries)


# -- kept by ingest ---------------------------------------------------------------------------


@pytest.fixture
def ingest(settings: Settings, store: Store) -> Ingest:
    return Ingest(settings, store)


@pytest.fixture
def ana(store: Store) -> User:
    return store.write_sync(operations.add_user, "ana@example.com", False)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, corpus.Expected]:
    root = tmp_path_factory.mktemp("tree")
    expected = corpus.generate(root, size_bytes=1_500_000, seed=11, big_lines=False)
    quirks = expected.quirks
    assert quirks["btw replays"] and quirks["resumed session copies"], "the corpus covers them"
    assert any("/subagents/" in f for s in expected.sessions.values() for f in s.files)
    return root / "projects", expected


@pytest.mark.parametrize("how", BACKFILLS)
def test_backfilled_blocks_equal_the_rules_on_resumed_sessions_btw_replays_and_subagents(
    how: str,
    tree: tuple[Path, corpus.Expected],
    settings: Settings,
    store: Store,
    ingest: Ingest,
    ana: User,
) -> None:
    projects, expected = tree
    assert backfill(how, projects, settings, ingest, ana).errors == []
    want = reference(corpus_entries(expected))
    assert len(want) > 12
    assert stored(store, ana.id) == want


@pytest.mark.parametrize(("seed", "most"), [(1, 2), (2, 4), (3, 12)])
def test_blocks_grown_by_many_small_appends_equal_the_rules(
    tree: tuple[Path, corpus.Expected],
    settings: Settings,
    store: Store,
    ingest: Ingest,
    ana: User,
    seed: int,
    most: int,
) -> None:
    """Files arrive in random pieces and order (copies that win or lose later, subagent
    files before their parents, old sessions landing between blocks already made)."""
    projects, expected = tree
    grow_in_pieces(find_transcripts([projects]), folder(settings, ana), ingest, seed, most)
    assert stored(store, ana.id) == reference(corpus_entries(expected))


def test_reprocess_and_rebuild_make_the_same_blocks(
    tree: tuple[Path, corpus.Expected], settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    projects, expected = tree
    files = archive_all(find_transcripts([projects]), folder(settings, ana))
    for path in reversed(files):  # one file per batch, newest name first
        ingest.run([path])
    want = reference(corpus_entries(expected))
    assert stored(store, ana.id) == want
    store.write_sync(reset_derived)
    assert stored(store, ana.id) == []
    ingest.run(files)
    assert stored(store, ana.id) == want
    store.write_sync(blocks.rebuild)
    assert stored(store, ana.id) == want


def response(n: int, at: datetime, tokens: int = 100, **extra: Any) -> bytes:
    usage = {
        "input_tokens": tokens,
        "output_tokens": tokens,
        "cache_read_input_tokens": tokens,
        "cache_creation_input_tokens": tokens,
    }
    stamp = at.isoformat().replace("+00:00", "Z")
    return jsonl(
        assistant(
            uuid=f"u{n}", ts=stamp, message_id=f"m{n}", request_id=f"r{n}", usage=usage, **extra
        )
    )


def starts(store: Store, user_id: str) -> list[tuple[str, int]]:
    return [
        (b.start.strftime("%d %H:%M"), b.entries)
        for b in store.read_sync(blocks.stored_blocks, user_id)
    ]


def test_an_old_session_arriving_late_joins_and_splits_blocks_made_before_it(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    home = folder(settings, ana)
    day = datetime(2026, 3, 2, tzinfo=UTC)
    (home / "a.jsonl").write_bytes(response(1, day + timedelta(hours=1, minutes=10)))
    (home / "c.jsonl").write_bytes(response(3, day + timedelta(hours=7)))
    ingest.run([home / "a.jsonl", home / "c.jsonl"])
    assert starts(store, ana.id) == [("02 01:00", 1), ("02 07:00", 1)]
    # An entry at 04:00 bridges the gap: 07:00 is now within 5 h of it but 6 h after the
    # block's start, so the second block opens at 07:00 all the same, and so on.
    (home / "b.jsonl").write_bytes(response(2, day + timedelta(hours=4)))
    ingest.run([home / "b.jsonl"])
    assert starts(store, ana.id) == [("02 01:00", 2), ("02 07:00", 1)]
    # One at 00:30 moves the first block's start; 07:00 still opens its own.
    (home / "z.jsonl").write_bytes(response(0, day + timedelta(minutes=30)))
    ingest.run([home / "z.jsonl"])
    assert starts(store, ana.id) == [("02 00:00", 3), ("02 07:00", 1)]
    # Rewritten shorter, a file's entries go: the block they opened goes with them.
    (home / "z.jsonl").write_bytes(b"")
    (home / "a.jsonl").write_bytes(b"")
    ingest.run([home / "z.jsonl", home / "a.jsonl"])
    assert starts(store, ana.id) == [("02 04:00", 2)]  # 07:00 is 3 h after 04:00 now
    assert stored(store, ana.id) == reference(store.read_sync(blocks.winning_entries, ana.id))


def test_a_change_in_an_old_block_leaves_later_blocks_unwritten(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    home = folder(settings, ana)
    day = datetime(2026, 3, 2, tzinfo=UTC)
    for n in range(6):
        (home / f"s{n}.jsonl").write_bytes(response(n, day + timedelta(hours=8 * n)))
    ingest.run(sorted(home.iterdir()))
    rowids = store.read_sync(
        lambda cur: cur.execute("SELECT rowid, start_at FROM blocks ORDER BY start_at").fetchall()
    )
    (home / "late.jsonl").write_bytes(response(99, day + timedelta(hours=17)))
    ingest.run([home / "late.jsonl"])
    after = store.read_sync(
        lambda cur: cur.execute("SELECT rowid, start_at FROM blocks ORDER BY start_at").fetchall()
    )
    assert after[:2] == rowids[:2] and after[3:] == rowids[3:]  # only the third was rewritten
    assert after[2][0] != rowids[2][0] and after[2][1] == rowids[2][1]
    assert stored(store, ana.id) == reference(store.read_sync(blocks.winning_entries, ana.id))


def test_one_batch_of_many_users_changes_each_ones_blocks_as_alone(
    settings: Settings, store: Store, ingest: Ingest
) -> None:
    """A batch brings changes of several analysts at once (their blocks are kept by the
    same statements): an append at the end, a session arriving late that joins an old
    block, one that lands between blocks, a first upload, and a file emptied."""
    day = datetime(2026, 3, 2, tzinfo=UTC)
    names = ("append", "joins", "between", "first", "emptied", "untouched")
    people = {n: store.write_sync(operations.add_user, f"{n}@example.com", False) for n in names}
    homes = {n: folder(settings, people[n]) for n in names}
    for n, name in enumerate(names):
        if name == "first":
            continue
        for k in range(4):  # blocks at 01:00, 09:00, 17:00 and 01:00 the next day
            at = day + timedelta(hours=1 + 8 * k, minutes=5 * n)
            (homes[name] / f"s{k}.jsonl").write_bytes(response(100 * n + k, at))
    ingest.run(sorted(p for home in homes.values() for p in home.iterdir()))
    before = {name: stored(store, people[name].id) for name in names}
    late = {
        "append": day + timedelta(hours=26),
        "joins": day + timedelta(hours=5, minutes=30),  # within 01:00's five hours
        "between": day + timedelta(hours=22, minutes=30),  # after 17:00's five hours
        "first": day + timedelta(hours=3),
    }
    for name, at in late.items():
        (homes[name] / "late.jsonl").write_bytes(response(900 + names.index(name), at))
    (homes["emptied"] / "s1.jsonl").write_bytes(b"")
    ingest.run([homes[name] / "late.jsonl" for name in late] + [homes["emptied"] / "s1.jsonl"])
    for name in names:
        user_id = people[name].id
        assert stored(store, user_id) == reference(
            store.read_sync(blocks.winning_entries, user_id)
        ), name
    assert stored(store, people["untouched"].id) == before["untouched"]
    assert starts(store, people["joins"].id)[0] == ("02 01:00", 2)
    # 22:30 opens a block at 22:00, and the next day's 01:10 falls within its five hours:
    # the block that opened at 01:00 is gone (the later stretch read for that user alone).
    assert starts(store, people["between"].id) == [
        ("02 01:00", 1),
        ("02 09:00", 1),
        ("02 17:00", 1),
        ("02 22:00", 2),
    ]
    assert len(stored(store, people["emptied"].id)) == 3


def test_the_migration_fills_blocks_for_a_database_made_before_it(
    tree: tuple[Path, corpus.Expected], settings: Settings, tmp_path: Path
) -> None:
    """A database at the schema before blocks, with entries ingested, gains the table
    filled with the blocks the rules give."""
    projects, expected = tree
    version = next(v for v, step in available() if not isinstance(step, str))
    store = Store(settings.db_path)
    user = store.write_sync(operations.add_user, "old@example.com", False)
    Ingest(settings, store).run(archive_all(find_transcripts([projects]), folder(settings, user)))
    store.close()
    copy = tmp_path / "old.duckdb"
    shutil.copy(settings.db_path, copy)
    conn = duckdb.connect(str(copy))
    conn.execute("DROP TABLE blocks")
    # and what the migrations after it added (0004: projects and usage buckets; 0005: the
    # record of which tables lie in user order)
    conn.execute("DROP TABLE usage_buckets")
    conn.execute("DROP TABLE table_layout")
    conn.execute(
        "CREATE TABLE old_sessions AS SELECT * EXCLUDE (project, project_key) FROM sessions"
    )
    conn.execute("DROP TABLE sessions")
    conn.execute("ALTER TABLE old_sessions RENAME TO sessions")
    conn.execute("DELETE FROM schema_migrations WHERE version >= ?", [version])
    conn.close()
    reopened = Store(copy)
    try:
        assert reopened.schema_version == available()[-1][0]
        assert stored(reopened, user.id) == reference(corpus_entries(expected))
    finally:
        reopened.close()


def test_clocks_at_the_ends_of_the_calendar_make_blocks_and_break_nothing(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    home = folder(settings, ana)
    now = datetime.now(UTC).replace(microsecond=0)
    stamps = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC),
        now - timedelta(minutes=5),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    for n, at in enumerate(stamps):
        (home / f"s{n}.jsonl").write_bytes(response(n, at))
        assert ingest.run([home / f"s{n}.jsonl"]).errors == []
    found = store.read_sync(blocks.stored_blocks, ana.id)
    entries = store.read_sync(blocks.winning_entries, ana.id)
    assert stored(store, ana.id)[:3] == reference(entries[:3])  # (the reference overflows)
    assert [b.start.year for b in found] == [1, 1969, now.year, 9999]
    assert found[-1].end == datetime.max.replace(tzinfo=UTC)  # 5 hours later is past Python's
    answer = store.read_sync(
        blocks.block_stats, ana.id, days=3, tz="UTC", token_limit="max", now=now
    )
    assert answer.active is not None and answer.active.start == found[2].start.isoformat()
    assert [b.is_active for b in answer.blocks] == [
        False,
        True,
    ]  # the year 9999 block has not begun
