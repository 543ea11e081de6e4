"""Projects and the per-user aggregates ingest keeps (``usage_buckets``): always exactly
what summing the winning entries again gives, whatever order, tearing, flips and
re-reads the files come with; per-project and per-window numbers equal the corpus."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from service import operations
from service.ingest.backfill import archive_all, find_transcripts
from service.ingest.names import project_key
from service.ingest.pipeline import Ingest
from service.settings import Settings, prepare_data_dir
from service.store import Cursor, Store, stats
from service.store.ingest import reset_derived
from service.store.usage import bucket_key
from service.synthetic import corpus
from service.synthetic.lines import assistant, jsonl

BucketRow = tuple[str, datetime, str, str | None, str, int, int, int, int, int, Decimal, int]


def stored_buckets(cur: Cursor) -> list[BucketRow]:
    """Every row of ``usage_buckets`` (after checking its key), in one order."""
    rows = cur.execute(
        "SELECT bucket_key, user_id, bucket, session_file, model, project_key, entries,"
        " input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost,"
        " unpriced FROM usage_buckets ORDER BY ALL"
    ).fetchall()
    for row in rows:
        assert row[0] == bucket_key(row[1], row[2], row[3], row[4]), row
        assert row[6] > 0, f"a bucket without entries stays: {row}"
    return sorted((r[1], r[2].astimezone(UTC), *r[3:]) for r in rows)


def summed_again(cur: Cursor) -> list[BucketRow]:
    """What summing every winning entry again gives, each with its session's project."""
    rows = cur.execute(
        """
        SELECT e.user_id, time_bucket(INTERVAL 15 MINUTE, e.ts), e.session_file, e.model,
               coalesce(s.project_key, ''), count(*), sum(e.input_tokens),
               sum(e.output_tokens), sum(e.cache_read_tokens), sum(e.cache_creation_tokens),
               coalesce(sum(e.cost_usd::DECIMAL(38, 12)), 0),
               count(*) FILTER (WHERE e.cost_usd IS NULL)
        FROM usage_entries e
        LEFT JOIN sessions s ON s.key = e.user_id || '/' || e.session_file
        WHERE e.winner
        GROUP BY ALL
        """
    ).fetchall()
    return sorted((r[0], r[1].astimezone(UTC), *r[2:]) for r in rows)


def assert_exact(store: Store) -> None:
    assert store.read_sync(stored_buckets) == store.read_sync(summed_again)


# -- the property: any history of a user's files ---------------------------------------

PROJECT_OF = {
    "a.jsonl": "/w/churn_model",
    "a.agent-x1.jsonl": "/tmp/scratch",  # the session's until its parent file is read
    "b.jsonl": "/w/sales.v2",
    "c.jsonl": "/w/q3_report.final",
}
FILES = sorted(PROJECT_OF)
SESSION_OF = {"a.jsonl": "sa", "a.agent-x1.jsonl": "sa", "b.jsonl": "sb", "c.jsonl": "sc"}
BASE = datetime(2026, 3, 1, 23, 50, tzinfo=UTC)

line_spec = st.tuples(
    st.integers(0, 5),  # which response (message id)
    st.integers(0, 3),  # its size: copies of one response differ, so winners flip
    st.integers(0, 40),  # minutes after BASE (15-minute buckets and midnight)
    st.sampled_from(["claude-opus-4-6", "claude-haiku-4-5", "mystery-model"]),
    st.integers(0, 2),  # which requestId
)
operation = st.one_of(
    st.tuples(
        st.just("append"), st.sampled_from(FILES), st.lists(line_spec, max_size=3), st.booleans()
    ),
    st.tuples(st.just("ingest"), st.lists(st.sampled_from(FILES), min_size=1, unique=True)),
    st.tuples(st.just("rewrite"), st.sampled_from(FILES), st.lists(line_spec, max_size=3)),
    st.tuples(st.just("reprocess")),
)


def line(file: str, spec: tuple[int, int, int, str, int], n: int, with_cwd: bool) -> bytes:
    message, size, minutes, model, request = spec
    sidechain = "agent" in file
    body = assistant(
        uuid=f"{file}-{n}",
        ts=(BASE + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
        # responses 0-3 are shared by the files (replays: winners flip), 4-5 their own
        message_id=f"msg_{message}" if message < 4 else f"msg_{file}_{message}",
        request_id=f"req_{message}_{request}",
        model=model,
        usage={"input_tokens": 1 + size, "output_tokens": 10 * size, "cache_read_input_tokens": 3},
        session=SESSION_OF[file],
        sidechain=sidechain,
    )
    if with_cwd:
        body["cwd"] = PROJECT_OF[file]
    else:
        del body["cwd"]  # a file's first lines may carry none
    return jsonl(body)


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(operation, min_size=1, max_size=12))
def test_buckets_always_equal_a_full_re_sum_of_the_winning_entries(
    steps: list[tuple[Any, ...]],
) -> None:
    """Random histories of four files of one user: appends (a last line may be torn and
    finished later), batches of any of them (a subagent file before its parent: the
    session's project changes when the parent comes), files rewritten (read again from the
    start), reprocess. After every batch the buckets equal a re-sum of the winners."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Settings(data_dir=Path(tmp) / "data")
        prepare_data_dir(config)
        store = Store(config.db_path)
        try:
            user = store.write_sync(operations.add_user, "prop@example.com", False)
            folder = config.sessions_dir / user.id
            folder.mkdir()
            ingest = Ingest(config, store)
            written: dict[str, int] = defaultdict(int)
            torn: dict[str, bytes] = {}
            # whether a whole line of the file has a cwd; whether its torn last line has one
            with_cwd: dict[str, bool] = defaultdict(bool)
            torn_with_cwd: dict[str, bool] = {}
            for op in steps:
                if op[0] == "append":
                    _, file, specs, tear = op
                    data = torn.pop(file, b"")
                    cwds = [torn_with_cwd.pop(file)] if data else []  # one per line of data
                    for spec in specs:
                        cwds.append(written[file] % 3 != 0)
                        data += line(file, spec, written[file], cwds[-1])
                        written[file] += 1
                    if tear and data:
                        cut = len(data) - 7
                        data, torn[file] = data[:cut], data[cut:]
                        torn_with_cwd[file] = cwds.pop()
                    with_cwd[file] |= any(cwds)
                    with (folder / file).open("ab") as out:
                        out.write(data)
                elif op[0] == "rewrite":
                    _, file, specs = op
                    torn.pop(file, None)
                    torn_with_cwd.pop(file, None)
                    with_cwd[file] = bool(specs)
                    data = b"".join(line(file, s, 1000 + i, True) for i, s in enumerate(specs))
                    (folder / file).write_bytes(data)
                    written[file] = len(specs)
                else:
                    paths = [folder / f for f in (op[1] if op[0] == "ingest" else FILES)]
                    if op[0] == "reprocess":
                        store.write_sync(reset_derived)
                    report = ingest.run([p for p in paths if p.exists()])
                    assert not report.errors, report.errors
                    assert_exact(store)
            ingest.run([folder / f for f in FILES if (folder / f).exists()])
            assert_exact(store)
            keys = store.read_sync(
                lambda cur: dict(
                    cur.execute("SELECT session_file, project_key FROM sessions").fetchall()
                )
            )
            for session_file, key in keys.items():
                parent = (folder / session_file).exists() and with_cwd[session_file]
                allowed = {project_key(PROJECT_OF[session_file]), ""}
                if session_file == "a.jsonl" and not parent:
                    allowed.add(project_key(PROJECT_OF["a.agent-x1.jsonl"]))
                assert key in allowed, (session_file, key)
        finally:
            store.close()


# -- projects ------------------------------------------------------------------------


def test_a_subagent_file_read_before_its_parent_moves_to_the_parents_project(
    settings: Settings, store: Store
) -> None:
    """Until the parent file comes, the session takes its subagent file's cwd; then the
    parent's first cwd, and every bucket of the session moves with it."""
    user = store.write_sync(operations.add_user, "move@example.com", False)
    folder = settings.sessions_dir / user.id
    folder.mkdir()
    ingest = Ingest(settings, store)
    sub = folder / "s.agent-a1.jsonl"
    sub.write_bytes(
        jsonl(
            assistant(
                uuid="x1",
                ts="2026-03-01T10:00:00Z",
                message_id="m1",
                sidechain=True,
                cwd="/tmp/scratch",
            )
        )
    )
    ingest.run([sub])
    assert store.read_sync(project_keys, user.id) == {"s.jsonl": ("/tmp/scratch", "-tmp-scratch")}
    assert_exact(store)
    parent = folder / "s.jsonl"
    parent.write_bytes(
        jsonl(
            {"type": "summary", "summary": "no cwd here", "leafUuid": "x"},
            assistant(uuid="p1", ts="2026-03-01T09:00:00Z", message_id="m0", cwd="/home/me/a_b.c"),
        )
    )
    ingest.run([parent])
    assert store.read_sync(project_keys, user.id) == {
        "s.jsonl": ("/home/me/a_b.c", "-home-me-a-b-c")
    }
    assert_exact(store)
    keys = store.read_sync(
        lambda cur: cur.execute("SELECT DISTINCT project_key FROM usage_buckets").fetchall()
    )
    assert keys == [("-home-me-a-b-c",)]


def project_keys(cur: Cursor, user_id: str) -> dict[str, tuple[str | None, str]]:
    rows = cur.execute(
        "SELECT session_file, project, project_key FROM sessions WHERE user_id = ?", [user_id]
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


# -- the corpus: per project and per window, in two time zones --------------------------


@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("projects-corpus")
    expected = corpus.generate(root / "tree", size_bytes=1_500_000, seed=23, big_lines=False)
    config = Settings(data_dir=root / "data")
    prepare_data_dir(config)
    store = Store(config.db_path)
    user = store.write_sync(operations.add_user, "corpus@example.com", False)
    folder = config.sessions_dir / user.id
    sources = find_transcripts([root / "tree" / "projects"])
    report = Ingest(config, store).run(archive_all(sources, folder))
    assert not report.errors
    yield store, user, expected
    store.close()


def reference(
    expected: corpus.Expected, tz: str, first: date, last: date, key: str | None = None
) -> tuple[dict[str, tuple[int, int, int, int]], dict[str, tuple[int, int, int, int]]]:
    """The corpus's own numbers: per local day of [first, last] in ``tz`` and per project
    key over the window, as (input, output, cache read, cache creation)."""
    days: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    projects: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for moment, _model, usage, cwd in expected.credits:
        day = moment.astimezone(ZoneInfo(tz)).date()
        if not first <= day <= last or (key is not None and project_key(cwd) != key):
            continue
        values = (
            usage["input_tokens"],
            usage["output_tokens"],
            usage["cache_read_input_tokens"],
            usage["cache_creation_input_tokens"],
        )
        for bucket in (days[day.isoformat()], projects[project_key(cwd)]):
            for n, v in enumerate(values):
                bucket[n] += v
    return (
        {d: (v[0], v[1], v[2], v[3]) for d, v in days.items() if any(v)},
        {k: (v[0], v[1], v[2], v[3]) for k, v in projects.items()},
    )


@pytest.mark.parametrize("tz", ["America/St_Johns", "Asia/Kathmandu"])  # -3:30 and +5:45
def test_per_project_and_window_totals_equal_the_corpus_in_two_time_zones(
    corpus_store: Any, tz: str
) -> None:
    store, user, expected = corpus_store
    assert_exact(store)
    first, last = date(2026, 1, 20), date(2026, 2, 25)
    window = stats.Window(days=None, start=first.isoformat(), end=last.isoformat())
    answer = store.read_sync(stats.token_stats, user.id, window=window, tz=tz)
    want_days, want_projects = reference(expected, tz, first, last)
    got_days = {
        d.day: (d.input, d.output, d.cache_read, d.cache_creation) for d in answer.daily if d.total
    }
    assert got_days == want_days
    assert len(answer.daily) == (last - first).days + 1
    got_projects = {
        p.key: (p.input, p.output, p.cache_read, p.cache_creation) for p in answer.window.by_project
    }
    assert got_projects == want_projects
    paths = {f"/home/analyst/work/{d}" for d in corpus.PROJECT_DIRS}
    for row in answer.window.by_project:
        assert row.project in paths and project_key(row.project) == row.key
    assert all("_" not in p.key and "." not in p.key for p in answer.by_project)
    total = answer.window.totals
    assert total.total == sum(sum(v) for v in want_days.values())
    # the whole history: every credit
    _, lifetime = reference(expected, tz, date(2000, 1, 1), date(2100, 1, 1))
    assert {
        p.key: (p.input, p.output, p.cache_read, p.cache_creation) for p in answer.by_project
    } == lifetime


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kathmandu"])
def test_a_project_filter_narrows_days_totals_and_sessions_exactly(
    corpus_store: Any, tz: str
) -> None:
    store, user, expected = corpus_store
    key = project_key("/home/analyst/work/q3_report.final")
    first, last = date(2026, 1, 1), date(2026, 3, 31)
    window = stats.Window(days=None, start=first.isoformat(), end=last.isoformat())
    answer = store.read_sync(stats.token_stats, user.id, window=window, tz=tz, project=key)
    want_days, want_projects = reference(expected, tz, first, last, key)
    assert {
        d.day: (d.input, d.output, d.cache_read, d.cache_creation) for d in answer.daily if d.total
    } == want_days
    assert [p.key for p in answer.window.by_project] == [key]
    assert answer.window.totals.total == sum(want_projects[key])
    assert answer.totals.total == answer.window.totals.total  # all of the corpus lies inside
    assert len(answer.by_project) == 7  # the list of projects stays whole
    page = store.read_sync(stats.sessions_page, user.id, limit=200, offset=0, project=key)
    assert page.rows and all(r.project_key == key for r in page.rows)
    in_project = [s for s in expected.sessions.values() if s.files[0].startswith(f"{key}/")]
    assert page.total == len(page.rows) == len(in_project)


Entry = tuple[datetime, str, str | None, str, int, int, int, int, Decimal | None]


def winning_entries(cur: Cursor, user_id: str) -> list[Entry]:
    """The user's winning entries: time, session, model, project key, the four token
    counts and the exact cost (None: unpriced), as the buckets sum them."""
    rows = cur.execute(
        """
        SELECT e.ts, e.session_file, e.model, coalesce(s.project_key, ''), e.input_tokens,
               e.output_tokens, e.cache_read_tokens, e.cache_creation_tokens,
               e.cost_usd::DECIMAL(38, 12)
        FROM usage_entries e LEFT JOIN sessions s ON s.key = e.user_id || '/' || e.session_file
        WHERE e.winner AND e.user_id = ?
        """,
        [user_id],
    ).fetchall()
    return [(r[0].astimezone(UTC), *r[1:]) for r in rows]


def re_summed(entries: list[Entry]) -> dict[str, Any]:
    """A TokenCounts of ``entries`` summed one by one: the cost is the exact sum rounded
    to 9 places (0 without entries, None when none has a price)."""
    costs = [e[8] for e in entries]
    priced = [c for c in costs if c is not None]
    inp, out, read, create = (sum(e[n] for e in entries) for n in (4, 5, 6, 7))
    return {
        "input": inp,
        "output": out,
        "cache_read": read,
        "cache_creation": create,
        "total": inp + out + read + create,
        "cost_usd": None if costs and not priced else round(float(sum(priced, Decimal(0))), 9),
        "sessions": len({e[1] for e in entries}),
    }


def counts_of(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in re_summed([])}


def grouped(entries: list[Entry], at: int) -> dict[Any, list[Entry]]:
    groups: dict[Any, list[Entry]] = defaultdict(list)
    for entry in entries:
        groups[entry[at]].append(entry)
    return groups


@pytest.mark.parametrize(
    ("tz", "start", "end", "with_project"),
    [
        ("UTC", "2026-01-01", "2026-01-31", False),
        ("Asia/Kathmandu", "2026-01-20", "2026-02-25", True),
        ("America/St_Johns", "2026-02-01", "2026-03-05", False),
        ("Pacific/Chatham", "2026-02-01", "2026-02-14", True),
    ],
)
def test_every_number_of_the_tokens_answer_equals_a_re_sum_of_the_winning_entries(
    corpus_store: Any, tz: str, start: str, end: str, with_project: bool
) -> None:
    """Days, totals, models, projects, top sessions and unpriced models, over the window
    and the whole history, each summed again from the entries one by one (costs exactly,
    rounded once), with and without a project."""
    store, user, _ = corpus_store
    entries = store.read_sync(winning_entries, user.id)
    key = project_key("/home/analyst/work/q3_report.final") if with_project else None
    window = stats.Window(days=None, start=start, end=end)
    answer = store.read_sync(stats.token_stats, user.id, window=window, tz=tz, project=key)
    mine = [e for e in entries if key is None or e[3] == key]
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    zone = ZoneInfo(tz)
    inside = [e for e in mine if first <= e[0].astimezone(zone).date() <= last]
    assert inside and len(inside) < len(mine)  # the window holds some of it, not all

    def models(of: list[Entry]) -> dict[str, dict[str, Any]]:
        return {
            m: re_summed(group)
            for m, group in grouped(of, 2).items()
            if m is not None and m != "<synthetic>"
        }

    def projects(of: list[Entry]) -> dict[str, dict[str, Any]]:
        return {k: re_summed(group) for k, group in grouped(of, 3).items()}

    assert counts_of(answer.totals) == re_summed(mine)
    assert {m.model: counts_of(m) for m in answer.by_model} == models(mine)
    assert {p.key: counts_of(p) for p in answer.by_project} == projects(entries)
    assert answer.unpriced_models == sorted(
        m
        for m, group in grouped(mine, 2).items()
        if m is not None and m != "<synthetic>" and any(e[8] is None for e in group)
    )
    per_session = {f: re_summed(group) for f, group in grouped(mine, 1).items()}
    top = sorted(per_session.items(), key=lambda f: (-f[1]["total"], f[0]))[:10]
    assert [(t.session_file, t.total, t.cost_usd) for t in answer.top_sessions] == [
        (f, c["total"], c["cost_usd"]) for f, c in top
    ]
    w = answer.window
    assert counts_of(w.totals) == re_summed(inside)
    assert {m.model: counts_of(m) for m in w.by_model} == models(inside)
    assert {p.key: counts_of(p) for p in w.by_project} == projects(inside)
    by_day = {
        d: re_summed(group)
        for d, group in grouped(
            [(e[0].astimezone(zone).date().isoformat(), *e[1:]) for e in inside], 0
        ).items()
    }
    assert len(answer.daily) == (last - first).days + 1
    for day in answer.daily:
        assert counts_of(day) == by_day.get(day.day, re_summed([]) | {"cost_usd": 0.0})


def test_a_file_read_again_from_the_start_takes_its_new_first_cwd_with_its_buckets(
    settings: Settings, store: Store
) -> None:
    """A transcript rewritten (its earlier bytes changed) is read again from the start: a
    different first cwd moves the session, and every bucket of it, to that project."""
    user = store.write_sync(operations.add_user, "rewrite@example.com", False)
    folder = settings.sessions_dir / user.id
    folder.mkdir()
    ingest = Ingest(settings, store)
    path = folder / "s.jsonl"
    first = assistant(uuid="a1", ts="2026-03-01T10:00:00Z", message_id="m1", cwd="/w/old_name")
    second = assistant(uuid="a2", ts="2026-03-01T11:00:00Z", message_id="m2", cwd="/w/old_name")
    path.write_bytes(jsonl(first, second))
    ingest.run([path])
    assert store.read_sync(project_keys, user.id) == {"s.jsonl": ("/w/old_name", "-w-old-name")}
    path.write_bytes(jsonl(dict(first, cwd="/w/new.name"), second))  # same size, new bytes
    ingest.run([path])
    assert store.read_sync(project_keys, user.id) == {"s.jsonl": ("/w/new.name", "-w-new-name")}
    assert_exact(store)
    keys = store.read_sync(
        lambda cur: cur.execute("SELECT DISTINCT project_key FROM usage_buckets").fetchall()
    )
    assert keys == [("-w-new-name",)]
