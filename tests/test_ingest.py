"""Ingest into a real store: exact numbers, incremental reads, and files that misbehave."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from service import operations
from service.ingest.backfill import archive_all, find_transcripts, ingest_files
from service.ingest.pipeline import Ingest
from service.ingest.queue import IngestQueue
from service.ingest.sessions import Kept
from service.models import User
from service.settings import Settings, prepare_data_dir
from service.store import Cursor, Store, users
from service.store.ingest import reset_derived
from service.synthetic import corpus
from service.synthetic.lines import assistant, jsonl, user
from watchers.scan import unread_files

USAGE = {
    "input_tokens": 10,
    "output_tokens": 20,
    "cache_creation_input_tokens": 30,
    "cache_read_input_tokens": 40,
}


@pytest.fixture
def ingest(settings: Settings, store: Store) -> Ingest:
    return Ingest(settings, store)


@pytest.fixture
def ana(store: Store) -> User:
    return store.write_sync(operations.add_user, "ana@example.com", False)


def folder(settings: Settings, owner: User | str) -> Path:
    path = settings.sessions_dir / (owner if isinstance(owner, str) else owner.id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def totals(cur: Cursor, user_id: str) -> tuple[int, ...]:
    row = cur.execute(
        "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),"
        " coalesce(sum(cache_creation_tokens), 0), coalesce(sum(cache_read_tokens), 0)"
        " FROM usage_entries WHERE user_id = ? AND winner",
        [user_id],
    ).fetchone()
    assert row is not None
    return tuple(int(v) for v in row)


def file_status(cur: Cursor, path: str) -> tuple[str, str | None, int, int]:
    row = cur.execute(
        "SELECT status, error, lines, bad_lines FROM files WHERE path = ?", [path]
    ).fetchone()
    assert row is not None, f"no row for {path}"
    return row[0], row[1], row[2], row[3]


def session_rows(cur: Cursor, user_id: str) -> list[tuple[object, ...]]:
    return cur.execute(
        "SELECT * EXCLUDE (user_id) FROM sessions WHERE user_id = ? ORDER BY session_file",
        [user_id],
    ).fetchall()


def response(n: int, ts: str, **changes: Any) -> bytes:
    return jsonl(
        assistant(
            **{
                "uuid": f"a{n}",
                "ts": ts,
                "message_id": f"msg_{n}",
                "request_id": f"req_{n}",
                "usage": USAGE,
                **changes,
            }
        )
    )


# -- exactness on the generated corpus -------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, corpus.Expected]]:
    root = tmp_path_factory.mktemp("tree")
    expected = corpus.generate(root, size_bytes=3_000_000, seed=7, big_lines=False)
    yield root / "projects", expected


def backfill(how: str, projects: Path, settings: Settings, ingest: Ingest, owner: User) -> Any:
    """The tree ingested as one batch, or the way ``agnes-activity ingest`` does it: copies
    made by a process pool that reads them, in batches (small here, so several) whose
    reading overlaps the storing of the one before."""
    sources = find_transcripts([projects])
    if how == "one batch":
        return ingest.run(archive_all(sources, folder(settings, owner)))
    return ingest_files(
        ingest,
        [settings.sessions_dir / owner.id / name for _, name in sources],
        sources=[source for source, _ in sources],
        workers=2,
        batch_bytes=400_000,
    )


BACKFILLS = ["one batch", "pool, overlapping batches"]


@pytest.mark.parametrize("how", BACKFILLS)
def test_backfill_equals_the_accounting_rules_per_day_and_model(
    how: str,
    tree: tuple[Path, corpus.Expected],
    settings: Settings,
    store: Store,
    ingest: Ingest,
    ana: User,
) -> None:
    projects, expected = tree
    report = backfill(how, projects, settings, ingest, ana)
    assert report.errors == []
    assert report.files == expected.files
    got = {
        (str(day), model): (inp, out, create, read)
        for day, model, inp, out, create, read in store.read_sync(
            lambda cur: cur.execute(
                "SELECT (ts AT TIME ZONE 'UTC')::DATE, model, sum(input_tokens),"
                " sum(output_tokens), sum(cache_creation_tokens), sum(cache_read_tokens)"
                " FROM usage_entries WHERE winner AND model <> '<synthetic>' GROUP BY ALL"
            ).fetchall()
        )
    }
    want = {
        key: (t.input, t.output, t.cache_creation, t.cache_read)
        for key, t in expected.by_day_model.items()
        if key[1] is not None  # <synthetic> notices: entries without a model and no tokens
    }
    assert got == want
    quirks = expected.quirks
    assert quirks["btw replays"] and quirks["resumed session copies"], "the corpus covers them"


@pytest.mark.parametrize("how", BACKFILLS)
def test_backfill_session_rows_equal_the_corpus(
    how: str,
    tree: tuple[Path, corpus.Expected],
    settings: Settings,
    store: Store,
    ingest: Ingest,
    ana: User,
) -> None:
    projects, expected = tree
    backfill(how, projects, settings, ingest, ana)
    rows = store.read_sync(
        lambda cur: cur.execute(
            "SELECT session_id, input_tokens, output_tokens, cache_creation_tokens,"
            " cache_read_tokens, user_messages, tool_calls, tool_errors, subagent_dispatches,"
            " skill_invocations, mcp_calls, slash_commands, started_at, ended_at FROM sessions"
        ).fetchall()
    )
    got = {r[0]: r[1:] for r in rows}
    want = {
        sid: (
            s.tokens.input,
            s.tokens.output,
            s.tokens.cache_creation,
            s.tokens.cache_read,
            s.user_messages,
            s.tool_calls,
            s.tool_errors,
            s.subagent_dispatches,
            s.skill_invocations,
            s.mcp_calls,
            s.slash_commands,
            s.started_at,
            s.ended_at,
        )
        for sid, s in expected.sessions.items()
    }
    assert got == want


def test_a_file_that_cannot_be_copied_is_reported_and_the_rest_ingested(
    tmp_path: Path, settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    projects = tmp_path / "projects" / "-home-ana-work"
    projects.mkdir(parents=True)
    (projects / "good.jsonl").write_bytes(response(1, "2026-03-01T10:00:00Z"))
    (projects / "blocked.jsonl").write_bytes(response(2, "2026-03-01T11:00:00Z"))
    archive = folder(settings, ana)
    (archive / "blocked.jsonl").mkdir()  # the archive's name is taken by a folder
    sources = find_transcripts([tmp_path / "projects"])
    report = ingest_files(
        ingest,
        [archive / name for _, name in sources],
        sources=[source for source, _ in sources],
        workers=2,
    )
    [(path, reason)] = report.errors
    assert path == f"{ana.id}/blocked.jsonl"
    assert reason.startswith(f"cannot copy {projects / 'blocked.jsonl'} into the archive:")
    assert store.read_sync(totals, ana.id) == (1, 10, 20, 30, 40)
    assert sorted(p.name for p in archive.iterdir()) == ["blocked.jsonl", "good.jsonl"]


def test_arrival_order_does_not_change_the_numbers(
    tree: tuple[Path, corpus.Expected], settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    projects, _ = tree
    files = archive_all(find_transcripts([projects]), folder(settings, ana))
    ingest.run(files)
    at_once = store.read_sync(totals, ana.id), store.read_sync(session_rows, ana.id)
    store.write_sync(reset_derived)
    for path in reversed(files):  # one file per batch, the other way round
        ingest.run([path])
    assert (store.read_sync(totals, ana.id), store.read_sync(session_rows, ana.id)) == at_once


# -- incremental reads -------------------------------------------------------------------


def test_a_grown_file_is_read_from_where_reading_stopped(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = folder(settings, ana) / "s.jsonl"
    path.write_bytes(response(1, "2026-03-01T10:00:00Z") + response(2, "2026-03-01T10:01:00Z"))
    first = ingest.run([path])
    assert (first.bytes, first.lines) == (path.stat().st_size, 2)
    more = response(3, "2026-03-01T10:02:00Z")
    with path.open("ab") as out:
        out.write(more)
    grown = ingest.run([path])
    assert (grown.bytes, grown.lines) == (len(more), 1)
    incremental = store.read_sync(totals, ana.id), store.read_sync(session_rows, ana.id)
    assert incremental[0] == (3, 30, 60, 90, 120)
    store.write_sync(reset_derived)
    ingest.run([path])
    assert (store.read_sync(totals, ana.id), store.read_sync(session_rows, ana.id)) == incremental


def test_reading_the_same_file_again_changes_nothing(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = folder(settings, ana) / "s.jsonl"
    path.write_bytes(response(1, "2026-03-01T10:00:00Z"))
    first = ingest.run([path]).versions[ana.id]
    again = ingest.run([path])
    assert again.bytes == 0
    assert store.read_sync(totals, ana.id) == (1, 10, 20, 30, 40)
    assert again.versions == {}, "no new version, so no dashboard is told of a change"
    assert store.read_sync(users.get_version, ana.id) == first


def test_a_torn_last_line_counts_once_after_it_is_completed(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = folder(settings, ana) / "s.jsonl"
    whole = response(1, "2026-03-01T10:00:00Z")
    path.write_bytes(whole[:40])
    ingest.run([path])
    assert store.read_sync(totals, ana.id) == (0, 0, 0, 0, 0)
    with path.open("ab") as out:
        out.write(whole[40:])
    ingest.run([path])
    ingest.run([path])
    assert store.read_sync(totals, ana.id) == (1, 10, 20, 30, 40)
    assert store.read_sync(file_status, f"{ana.id}/s.jsonl") == ("processed", None, 1, 0)


def test_a_rewritten_shorter_file_is_read_again_whole(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = folder(settings, ana) / "s.jsonl"
    path.write_bytes(response(1, "2026-03-01T10:00:00Z") + response(2, "2026-03-01T10:01:00Z"))
    ingest.run([path])
    path.write_bytes(response(3, "2026-03-02T10:00:00Z", model="claude-sonnet-4-5"))
    report = ingest.run([path])
    assert report.bytes == path.stat().st_size
    assert store.read_sync(totals, ana.id) == (1, 10, 20, 30, 40)
    models = store.read_sync(
        lambda cur: cur.execute("SELECT model FROM usage_entries WHERE winner").fetchall()
    )
    assert models == [("claude-sonnet-4-5",)]


def test_a_same_size_rewrite_is_noticed_by_its_fingerprint(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = folder(settings, ana) / "s.jsonl"
    path.write_bytes(response(1, "2026-03-01T10:00:00Z"))
    ingest.run([path])
    path.write_bytes(response(1, "2026-03-01T10:00:00Z", model="claude-opus-4-5"))
    assert ingest.run([path]).bytes == path.stat().st_size
    models = store.read_sync(lambda cur: cur.execute("SELECT model FROM usage_entries").fetchall())
    assert models == [("claude-opus-4-5",)]


def test_a_deleted_file_keeps_its_numbers(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = folder(settings, ana) / "s.jsonl"
    path.write_bytes(response(1, "2026-03-01T10:00:00Z"))
    ingest.run([path])
    path.unlink()
    ingest.run([path])
    assert unread_files(settings, store) == []
    assert store.read_sync(totals, ana.id) == (1, 10, 20, 30, 40)
    assert store.read_sync(file_status, f"{ana.id}/s.jsonl")[0] == "error"


# -- who owns a folder -------------------------------------------------------------------


def test_a_folder_named_by_email_local_part_belongs_to_that_user(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = folder(settings, "ana") / "s.jsonl"
    path.write_bytes(response(1, "2026-03-01T10:00:00Z"))
    ingest.run([path])
    assert store.read_sync(totals, ana.id) == (1, 10, 20, 30, 40)


def test_an_orphaned_folder_is_kept_reported_and_picked_up_once_its_user_exists(
    settings: Settings, store: Store, ingest: Ingest
) -> None:
    path = folder(settings, "zoe") / "s.jsonl"
    path.write_bytes(response(1, "2026-03-01T10:00:00Z"))
    report = ingest.run([path])
    assert report.errors == [("zoe/s.jsonl", "orphaned: folder 'zoe' matches no user id or email")]
    assert path.exists()
    assert unread_files(settings, store) == [path]
    zoe = store.write_sync(operations.add_user, "zoe@example.com", False)
    ingest.run(unread_files(settings, store))
    assert store.read_sync(totals, zoe.id) == (1, 10, 20, 30, 40)
    assert store.read_sync(file_status, "zoe/s.jsonl")[0] == "processed"


# -- files that are not what they should be ----------------------------------------------


@pytest.mark.parametrize(
    ("content", "lines", "bad"),
    [(b"", 0, 0), (b"\n\n  \n", 0, 0)],
    ids=["empty", "blank lines only"],
)
def test_empty_files_are_processed_sessions_without_numbers(
    settings: Settings,
    store: Store,
    ingest: Ingest,
    ana: User,
    content: bytes,
    lines: int,
    bad: int,
) -> None:
    path = folder(settings, ana) / "s.jsonl"
    path.write_bytes(content)
    assert ingest.run([path]).errors == []
    assert store.read_sync(file_status, f"{ana.id}/s.jsonl") == ("processed", None, lines, bad)
    assert store.read_sync(totals, ana.id) == (0, 0, 0, 0, 0)


def test_a_file_with_no_readable_line_is_an_error_with_its_reason(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = folder(settings, ana) / "notes.jsonl"
    path.write_bytes(b"hello\n[1, 2]\nnull\n42\n")
    ingest.run([path])
    status, error, lines, bad = store.read_sync(file_status, f"{ana.id}/notes.jsonl")
    assert (status, lines, bad) == ("error", 4, 4)
    assert error == "not a transcript: none of its 4 lines could be read"


def test_bad_lines_are_skipped_and_counted_and_the_rest_is_read(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    path = folder(settings, ana) / "s.jsonl"
    path.write_bytes(
        b"{not json\n"
        + response(1, "2026-03-01T10:00:00Z")
        + b"[]\n"
        + jsonl(user("hello", uuid="u1", ts="2026-03-01T09:59:00Z"))
    )
    ingest.run([path])
    assert store.read_sync(file_status, f"{ana.id}/s.jsonl") == ("processed", None, 4, 2)
    assert store.read_sync(totals, ana.id) == (1, 10, 20, 30, 40)


def test_a_symlink_out_of_the_data_dir_is_not_followed(
    settings: Settings, store: Store, ingest: Ingest, ana: User, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.jsonl"
    outside.write_bytes(response(1, "2026-03-01T10:00:00Z"))
    link = folder(settings, ana) / "link.jsonl"
    os.symlink(outside, link)
    report = ingest.run([link])
    assert report.errors == [(f"{ana.id}/link.jsonl", "symlink not followed")]
    assert store.read_sync(totals, ana.id) == (0, 0, 0, 0, 0)
    assert unread_files(settings, store) == [], "the scan does not pick symlinks up either"


def test_paths_outside_user_sessions_and_temporary_uploads_are_ignored(
    settings: Settings, ingest: Ingest, ana: User, tmp_path: Path
) -> None:
    stray = tmp_path / "x.jsonl"
    stray.write_bytes(response(1, "2026-03-01T10:00:00Z"))
    temp = folder(settings, ana) / ".upload-1234.tmp"
    temp.write_bytes(response(1, "2026-03-01T10:00:00Z"))
    assert ingest.run([stray, temp]).files == 0


# -- the live path: sums kept in the session row and grown ------------------------------


def grow_in_pieces(
    sources: list[tuple[Path, str]], target: Path, ingest: Ingest, seed: int, most: int
) -> list[Path]:
    """Write every source into ``target`` in 2 to 5 pieces cut at random bytes (so lines
    are torn and completed later), a few files per round in a random order, ingesting
    each round as one batch of up to ``most`` files: responses split over lines, copies
    that win or lose later, subagent files before or after their parents."""
    rng = random.Random(seed)
    pending: dict[Path, list[bytes]] = {}
    for source, name in sources:
        data = source.read_bytes()
        cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(1, 4))))
        edges = [0, *cuts, len(data)]
        pending[target / name] = [data[a:b] for a, b in itertools.pairwise(edges)]
    paths = sorted(pending)
    while pending:
        batch = rng.sample(sorted(pending), k=min(len(pending), rng.randint(1, most)))
        for path in batch:
            with path.open("ab") as out:
                out.write(pending[path].pop(0))
            if not pending[path]:
                del pending[path]
        report = ingest.run(batch)
        assert not report.errors, report.errors
    return paths


@pytest.mark.parametrize(("seed", "most"), [(1, 3), (2, 3), (3, 12)])
def test_files_grown_in_many_small_appends_equal_one_read_of_them(
    tree: tuple[Path, corpus.Expected],
    settings: Settings,
    store: Store,
    ingest: Ingest,
    ana: User,
    seed: int,
    most: int,
) -> None:
    """Batches of up to 3 files take the path of a live append, up to 12 also that of a
    bulk one (more than 8 sessions: rows replaced in two statements)."""
    projects, _ = tree
    sources = find_transcripts([projects])
    paths = grow_in_pieces(sources, folder(settings, ana), ingest, seed, most)
    grown = store.read_sync(totals, ana.id), store.read_sync(session_rows, ana.id)
    store.write_sync(reset_derived)
    ingest.run(paths)
    assert (store.read_sync(totals, ana.id), store.read_sync(session_rows, ana.id)) == grown
    assert len(grown[1]) > 10


def test_session_rows_from_before_the_kept_sums_are_summed_once_then_grown(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    """Rows written before migration 0002 have no file list and no kept sums: the next
    update finds both by a scan, and later ones grow them."""
    path = folder(settings, ana) / "s.jsonl"
    subagent = folder(settings, ana) / "s.agent-a1.jsonl"
    path.write_bytes(response(1, "2026-03-01T10:00:00Z"))
    subagent.write_bytes(response(9, "2026-03-01T10:00:30Z", sidechain=True))
    ingest.run([path, subagent])
    store.write_sync(lambda cur: cur.execute("UPDATE sessions SET kept = NULL"))
    for n in (2, 3):
        with path.open("ab") as out:
            out.write(response(n, f"2026-03-01T10:0{n}:00Z"))
        ingest.run([path])
    grown = store.read_sync(totals, ana.id), store.read_sync(session_rows, ana.id)
    assert grown[0] == (4, 40, 80, 120, 160)
    blob = store.read_sync(
        lambda cur: cur.execute("SELECT kept FROM sessions WHERE user_id = ?", [ana.id]).fetchone()
    )[0]
    kept = msgspec.msgpack.decode(blob, type=Kept)
    assert kept.files == [f"{ana.id}/s.jsonl", f"{ana.id}/s.agent-a1.jsonl"]
    store.write_sync(reset_derived)
    ingest.run([path, subagent])
    assert (store.read_sync(totals, ana.id), store.read_sync(session_rows, ana.id)) == grown


def test_a_batch_with_thousands_of_known_responses_finds_every_stored_copy(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    """More responses than one keyed lookup takes (1,000): the bulk lookup finds every
    stored copy, and more winner flips than one keyed update takes all land."""
    n = 2_400
    first = folder(settings, ana) / "first.jsonl"
    first.write_bytes(b"".join(response(i, "2026-03-01T10:00:00Z") for i in range(n)))
    ingest.run([first])
    # a later file replays every response; its copies of the even ones are bigger, so win
    bigger = dict(USAGE, output_tokens=25)
    replay = folder(settings, ana) / "replay.jsonl"
    replay.write_bytes(
        b"".join(
            response(i, "2026-03-01T11:00:00Z", usage=bigger if i % 2 == 0 else USAGE)
            for i in range(n)
        )
    )
    report = ingest.run([replay])
    assert report.lines == n
    expected = (n, 10 * n, 20 * n // 2 + 25 * n // 2, 30 * n, 40 * n)
    assert store.read_sync(totals, ana.id) == expected
    in_two = store.read_sync(session_rows, ana.id)
    store.write_sync(reset_derived)
    ingest.run([first, replay])
    assert store.read_sync(totals, ana.id) == expected
    assert store.read_sync(session_rows, ana.id) == in_two


def test_two_responses_on_lines_with_one_uuid_keep_their_own_costs(
    settings: Settings, store: Store, ingest: Ingest, ana: User
) -> None:
    """A line key (the line's uuid) can repeat in a file; each copy's exact cost is still
    its own, whether the lines arrive in one read or in two appends."""
    path = folder(settings, ana) / "s.jsonl"
    opus = response(1, "2026-03-01T10:00:00Z", uuid="same", model="claude-opus-4-6")
    haiku = response(2, "2026-03-01T10:00:05Z", uuid="same", model="claude-haiku-4-5-20251001")
    path.write_bytes(opus)
    ingest.run([path])
    with path.open("ab") as out:
        out.write(haiku)
    ingest.run([path])
    appended = store.read_sync(session_rows, ana.id)
    store.write_sync(reset_derived)
    ingest.run([path])
    assert store.read_sync(session_rows, ana.id) == appended
    costs = store.read_sync(
        lambda cur: cur.execute(
            "SELECT sum(cost_usd) FROM usage_entries WHERE user_id = ? AND winner", [ana.id]
        ).fetchone()[0]
    )
    assert appended[0][-4] == pytest.approx(costs)  # the row's cost_usd: both responses


def test_no_batch_reads_or_stores_while_the_queue_is_held_for_a_reprocess(
    settings: Settings, store: Store, ana: User
) -> None:
    """``reprocess`` forgets every offset inside ``IngestQueue.exclusive()``: a batch that
    read a file's offset before that and stored after it would resume from the forgotten
    offset and lose the start of the file. A path queued meanwhile waits, then is read
    whole."""
    path = folder(settings, ana) / "s.jsonl"
    path.write_bytes(response(1, "2026-03-01T10:00:00Z"))
    queue = IngestQueue(Ingest(settings, store))

    async def scenario() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(queue.run)
            await queue.ingest([path])
            async with queue.exclusive():
                with path.open("ab") as out:
                    out.write(response(2, "2026-03-01T10:01:00Z"))
                queue.put([path])  # the watcher's event
                await anyio.sleep(0.3)
                assert store.read_sync(totals, ana.id)[0] == 1, "no batch ran meanwhile"
                await store.write(reset_derived)
            await queue.idle()
            tasks.cancel_scope.cancel()

    anyio.run(scenario)
    assert store.read_sync(totals, ana.id) == (2, 20, 40, 60, 80)
    assert store.read_sync(file_status, f"{ana.id}/s.jsonl") == ("processed", None, 2, 0)


def test_a_data_dir_reached_through_a_link_is_scanned_and_read(
    tmp_path: Path,
) -> None:
    """``DATA_DIR`` may be a link (a volume mounted elsewhere): the scan finds what was
    written through it, and ingest reads it."""
    real = tmp_path / "volume"
    real.mkdir()
    (tmp_path / "data").symlink_to(real)
    settings = Settings(data_dir=tmp_path / "data")
    prepare_data_dir(settings)
    store = Store(settings.db_path)
    try:
        owner = store.write_sync(operations.add_user, "ana@example.com", False)
        (folder(settings, owner) / "s.jsonl").write_bytes(response(1, "2026-03-01T10:00:00Z"))
        found = unread_files(settings, store)
        assert Ingest(settings, store).run(found).files == 1
        assert store.read_sync(totals, owner.id)[0] == 1
        assert unread_files(settings, store) == []
    finally:
        store.close()
