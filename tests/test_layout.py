"""Each user's rows kept together as the tables grow: migration 0005 puts the audit events
in user order, and the periodic rewrite (service.layout, service.store.layout) folds the
events added since into that order, step by step, while ingest goes on, without changing
any answer and without losing an event if the process dies midway."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pytest
from msgspec.structs import replace

from service import operations
from service.ingest.audit import prepared
from service.layout import keep_user_order, rewrite
from service.models import AuditEvent
from service.store import Cursor, Store, audit, layout, users
from service.store.migrations import available, migrate
from tests.seed import add_events, event

START = datetime(2026, 1, 1, tzinfo=UTC)
ACTIONS = ["query.run", "query.explain", "sync.trigger", "manifest.fetch", "session.upload"]


def some_events(user_ids: list[str], count: int, seed: int, prefix: str) -> list[AuditEvent]:
    """``count`` events of random users in time order (some at the same instant)."""
    rng = random.Random(seed)
    return [
        event(
            rng.choice(user_ids),
            rng.choice(ACTIONS),
            START + timedelta(seconds=n // 3),
            id=f"{prefix}-{n:06d}",
            resource=f"table_{rng.randrange(5)}",
            params={"rows": rng.randrange(100)},
        )
        for n in range(count)
    ]


def every_row(cur: Cursor) -> list[tuple[Any, ...]]:
    return sorted(cur.execute("SELECT * FROM audit_events").fetchall(), key=lambda r: r[0])


def in_rowid_order(cur: Cursor, below: int | None = None) -> list[tuple[Any, ...]]:
    bound = "" if below is None else f" WHERE rowid < {below}"
    return cur.execute(f"SELECT user_id, ts, id FROM audit_events{bound} ORDER BY rowid").fetchall()


def sorted_below(cur: Cursor) -> int:
    row = cur.execute(
        "SELECT sorted_below FROM table_layout WHERE table_name = 'audit_events'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def tabs(cur: Cursor, user_ids: list[str]) -> dict[str, Any]:
    """Every page of every user's queries and sync tabs, 7 rows a page, cursor to cursor."""
    found: dict[str, Any] = {}
    for user_id in user_ids:
        for name, read in (("queries", audit.queries_page), ("sync", audit.sync_page)):
            pages, after = [], None
            while True:
                page = read(cur, user_id, limit=7, after=audit.decode_cursor(after))
                pages.append(page)
                after = page.next_cursor
                if after is None:
                    break
            found[f"{user_id} {name}"] = pages
    return found


def make_users(store: Store, count: int) -> list[str]:
    return [
        store.write_sync(operations.add_user, f"analyst{n}@example.com", False).id
        for n in range(count)
    ]


def test_migration_5_puts_existing_audit_events_in_user_order_and_keeps_every_one(
    tmp_path: Path,
) -> None:
    # a version-4 database whose events lie in time order, as version 4 stored them
    conn = duckdb.connect(str(tmp_path / "v4.duckdb"))
    assert migrate(conn, target=4) == 4
    ids = [f"user-{n}" for n in range(5)]
    for user_id in ids:
        users.add_user(conn, f"{user_id}@example.com")
    user_ids = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY email").fetchall()]
    events = some_events(user_ids, 3000, seed=1, prefix="old")
    stored = audit.insert_events(conn, [prepared(e) for e in events])
    assert len(stored) == 3000
    before = every_row(conn)
    assert in_rowid_order(conn) != sorted(in_rowid_order(conn))
    conn.close()

    store = Store(tmp_path / "v4.duckdb")
    try:
        assert store.schema_version == available()[-1][0] >= 5
        assert store.read_sync(every_row) == before
        order = store.read_sync(in_rowid_order)
        assert order == sorted(order)  # user, time, id
        assert store.read_sync(sorted_below) == 3000
        assert store.read_sync(layout.tail_rows, "audit_events") == 0
        # the events' primary key still refuses a second copy
        assert store.write_sync(audit.insert_events, [prepared(events[0])]) == []
    finally:
        store.close()


def test_the_queries_and_sync_tabs_answer_the_same_after_the_events_are_written_again(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "activity.duckdb")
    try:
        user_ids = make_users(store, 6)
        add_events(store, some_events(user_ids, 4000, seed=2, prefix="e"))
        before_rows = store.read_sync(every_row)
        before_tabs = store.read_sync(tabs, user_ids)
        assert store.read_sync(layout.tail_rows, "audit_events") == 4000
        assert store.read_sync(layout.due) == []  # under half a row group: left as it is
        assert store.read_sync(layout.due, 4000) == ["audit_events"]

        done = anyio.run(rewrite, store, "audit_events", 500)

        assert done.rows == 4000 and len(done.steps) == 8 + 6  # the tail by 500, a user a copy
        assert store.read_sync(every_row) == before_rows
        assert store.read_sync(tabs, user_ids) == before_tabs
        order = store.read_sync(in_rowid_order)
        assert order == sorted(order)
        assert store.read_sync(sorted_below) == 4000
        assert store.read_sync(layout.due, 1) == []
        # events stored afterwards form the next tail, and pages still see them first
        later = some_events(user_ids, 50, seed=3, prefix="later")
        add_events(store, [replace(e, timestamp=e.timestamp + timedelta(days=1)) for e in later])
        assert store.read_sync(layout.tail_rows, "audit_events") == 50
        asked = next(e for e in later if e.action.startswith("query.")).user_id
        newest = store.read_sync(audit.queries_page, asked, limit=1)
        expected = [e.id for e in later if e.user_id == asked and e.action.startswith("query.")]
        assert newest.rows[0].id == max(expected)
    finally:
        store.close()


def test_events_stored_while_the_rewrite_runs_are_all_kept_and_shown(tmp_path: Path) -> None:
    store = Store(tmp_path / "activity.duckdb")
    try:
        user_ids = make_users(store, 30)
        add_events(store, some_events(user_ids, 3000, seed=4, prefix="a"))
        during = some_events(user_ids, 120, seed=5, prefix="b")

        async def both() -> None:
            async def ingest() -> None:
                for n in range(0, len(during), 10):
                    await store.write(
                        audit.insert_events, [prepared(e) for e in during[n : n + 10]]
                    )
                    await anyio.sleep(0.005)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(ingest)
                done = await rewrite(store, "audit_events", 200)
                assert len(done.steps) >= 10

        anyio.run(both)
        ids = store.read_sync(lambda cur: [r[0] for r in every_row(cur)])
        assert ids == sorted([f"a-{n:06d}" for n in range(3000)] + [e.id for e in during])
        ordered = store.read_sync(sorted_below)
        assert ordered >= 3000
        part = store.read_sync(in_rowid_order, ordered)
        assert part == sorted(part)
        # the events stored during the rewrite are each user's newest in its tabs
        for user_id in user_ids:
            mine = [e for e in during if e.user_id == user_id and e.action.startswith("query.")]
            page = store.read_sync(audit.queries_page, user_id, limit=200)
            shown = {row.id for row in page.rows}
            assert {e.id for e in mine} <= shown
    finally:
        store.close()


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from service.store import Store, layout

    store = Store(Path(sys.argv[1]))
    plan = store.read_sync(layout.plan, "audit_events", 1000)
    print("stages", plan.stages, flush=True)
    store.write_sync(layout.begin, plan)
    for step in range(plan.steps):
        store.write_sync(layout.step, plan, step)
        print("step", step, flush=True)
    store.write_sync(layout.finish, plan)
    print("done", flush=True)
    """
)


def test_a_process_killed_during_the_rewrite_loses_no_event(tmp_path: Path) -> None:
    path = tmp_path / "activity.duckdb"
    store = Store(path)
    user_ids = make_users(store, 50)  # two a copy step
    add_events(store, some_events(user_ids, 20_000, seed=6, prefix="k"))
    before_rows = store.read_sync(every_row)
    before_tabs = store.read_sync(tabs, user_ids[:2])
    store.close()

    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    stages = int(child.stdout.readline().split()[1])
    assert stages == 20
    for _ in range(stages + 5):  # the tail staged, five users copied
        assert child.stdout.readline().startswith("step")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    store = Store(path)
    try:
        copies = store.read_sync(
            lambda cur: cur.execute("SELECT count(*) FROM audit_events" + layout.SUFFIX).fetchone()
        )
        assert copies is not None and 0 < copies[0] < 20_000  # the kill came midway
        assert store.read_sync(every_row) == before_rows
        assert store.read_sync(tabs, user_ids[:2]) == before_tabs

        async def periodic_task() -> None:  # as the server starts it
            stop = anyio.Event()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(keep_user_order, store, stop, 0.05, 1, 1000)
                for _ in range(1200):
                    if store.read_sync(layout.tail_rows, "audit_events") == 0:
                        break
                    await anyio.sleep(0.05)
                stop.set()

        anyio.run(periodic_task)
        assert store.read_sync(layout.drop_leftovers) == []
        assert store.read_sync(every_row) == before_rows
        assert store.read_sync(tabs, user_ids[:2]) == before_tabs
        order = store.read_sync(in_rowid_order)
        assert order == sorted(order)
    finally:
        store.close()


def test_a_rewrite_refuses_to_swap_when_rows_went_missing_meanwhile(tmp_path: Path) -> None:
    store = Store(tmp_path / "activity.duckdb")
    try:
        user_ids = make_users(store, 3)
        add_events(store, some_events(user_ids, 500, seed=7, prefix="m"))
        plan = store.read_sync(layout.plan, "audit_events", 100)
        store.write_sync(layout.begin, plan)
        for step in range(plan.steps):
            store.write_sync(layout.step, plan, step)
        store.write_sync(lambda cur: cur.execute("DELETE FROM audit_events WHERE id = 'm-000007'"))
        with pytest.raises(layout.NotAppendOnlyError):
            store.write_sync(layout.finish, plan)
        assert store.read_sync(lambda cur: len(every_row(cur))) == 499
        assert store.write_sync(layout.drop_leftovers) == ["audit_events"]
    finally:
        store.close()


def test_a_store_keeps_its_memory_limit_after_migrating_under_a_lower_one(
    tmp_path: Path,
) -> None:
    from service.store import duckdb_settings
    from service.store.migrations import MEMORY_LIMIT

    store = Store(tmp_path / "activity.duckdb", memory_limit="3GiB")
    try:
        assert store.schema_version == available()[-1][0]
        limit, _ = store.read_sync(duckdb_settings)
        assert MEMORY_LIMIT < limit == 3 * 2**30
    finally:
        store.close()
