"""The store on its own: migrations, transactions, the one-writer rule."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from service import operations
from service.store import Store, StoreLockedError
from service.store.migrations import available, migrate


def test_every_migration_applies_on_top_of_the_one_before(tmp_path: Path) -> None:
    latest = available()[-1][0]
    for start in range(latest):
        conn = duckdb.connect(str(tmp_path / f"at-{start}.duckdb"))
        assert migrate(conn, target=start) == start
        conn.close()
        store = Store(tmp_path / f"at-{start}.duckdb")
        assert store.schema_version == latest
        store.close()


def test_an_existing_database_keeps_its_rows_when_reopened(tmp_path: Path) -> None:
    path = tmp_path / "activity.duckdb"
    store = Store(path)
    user = store.write_sync(operations.add_user, "kept@example.com", False)
    store.close()
    reopened = Store(path)
    assert [u.id for u in reopened.read_sync(operations.list_users)] == [user.id]
    assert reopened.schema_version == available()[-1][0]
    reopened.close()


def test_a_failed_write_keeps_nothing(store: Store) -> None:
    def add_then_fail(cur: duckdb.DuckDBPyConnection) -> None:
        operations.add_user(cur, "half@example.com")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.write_sync(add_then_fail)
    assert store.read_sync(operations.list_users) == []


def test_a_second_store_on_the_same_file_is_refused_with_the_holder(store: Store) -> None:
    import subprocess
    import sys

    code = (
        "from pathlib import Path; from service.store import Store;"
        f"Store(Path({str(store.path)!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert StoreLockedError.__name__ in result.stderr
    assert "is locked by process" in result.stderr


def test_migration_2_keys_existing_usage_entries_and_sessions_as_ingest_does(
    tmp_path: Path,
) -> None:
    """A database at version 1 with rows: after migration 0002 every copy has the key
    ingest computes (``message_key``, non-ASCII ids included) and every session its
    one-column key; what its next update starts from (``kept``) is left for that update."""
    from service.store.copies import message_key

    path = tmp_path / "v1.duckdb"
    conn = duckdb.connect(str(path))
    assert migrate(conn, target=1) == 1
    ids = ["msg_01ABC", "msg_é✓", None]
    for n, message_id in enumerate(ids):
        conn.execute(
            "INSERT INTO usage_entries (user_id, file_path, line_key, file_name, session_file,"
            " message_id, session_id, ts, input_tokens, output_tokens, cache_read_tokens,"
            " cache_creation_tokens, cache_creation_5m, cache_creation_1h, is_sidechain, winner)"
            " VALUES ('u-1', 'u-1/s.jsonl', ?, 's.jsonl', 's.jsonl', ?, 's', TIMESTAMPTZ"
            " '2026-03-01 10:00:00+00', 1, 2, 3, 4, 4, 0, false, true)",
            [str(n), message_id],
        )
    conn.execute(
        "INSERT INTO sessions (user_id, session_file, session_id, input_tokens)"
        " VALUES ('u-1', 's.jsonl', 's', 3)"
    )
    conn.close()
    store = Store(path)
    keys = store.read_sync(
        lambda cur: cur.execute(
            "SELECT message_id, message_key FROM usage_entries ORDER BY line_key"
        ).fetchall()
    )
    assert keys == [(m, None if m is None else message_key("u-1", m)) for m in ids]
    sessions = store.read_sync(
        lambda cur: cur.execute(
            "SELECT key, user_id, session_file, input_tokens, kept FROM sessions"
        ).fetchall()
    )
    assert sessions == [("u-1/s.jsonl", "u-1", "s.jsonl", 3, None)]
    store.close()


def test_migration_4_gives_existing_sessions_their_projects_and_fills_the_buckets(
    tmp_path: Path,
) -> None:
    """A database at version 2 with what that version wrote from real files (states
    without a cwd, sessions without a project, no buckets): after migration 0004 each
    state has its file's first cwd, each session its project, and ``usage_buckets``
    equals the winners; ingest then goes on from there exactly as a fresh read would."""
    import msgspec

    from service.ingest.pipeline import Ingest
    from service.settings import Settings, prepare_data_dir
    from service.store.ingest import reset_derived
    from service.synthetic.lines import assistant, jsonl
    from tests.test_projects_and_buckets import assert_exact, project_keys

    settings = Settings(data_dir=tmp_path / "data")
    prepare_data_dir(settings)
    # the rows, read by today's code into a scratch database ...
    scratch = Store(tmp_path / "scratch.duckdb")
    user = scratch.write_sync(operations.add_user, "old@example.com", False)
    folder = settings.sessions_dir / user.id
    folder.mkdir()
    (folder / "s.jsonl").write_bytes(
        jsonl(
            {"type": "summary", "summary": "first line, no cwd", "leafUuid": "x"},
            assistant(uuid="a1", ts="2026-03-01T10:00:00Z", message_id="m1", cwd="/w/a_b.c"),
        )
    )
    (folder / "s.agent-x.jsonl").write_bytes(
        jsonl(
            assistant(
                uuid="b1",
                ts="2026-03-01T10:20:00Z",
                message_id="m2",
                sidechain=True,
                cwd="/elsewhere",
            )
        )
    )
    (folder / "t.jsonl").write_bytes(
        jsonl(assistant(uuid="c1", ts="2026-03-02T10:00:00Z", message_id="m3", cwd="/w/t"))
    )
    Ingest(settings, scratch).run(sorted(folder.iterdir()))
    scratch.close()
    # ... then copied into a version-2 database as version 2 kept them
    conn = duckdb.connect(str(settings.db_path))
    assert migrate(conn, target=2) == 2
    conn.execute(f"ATTACH '{tmp_path / 'scratch.duckdb'}' AS new (READ_ONLY)")
    for table in ("users", "tokens", "user_versions", "usage_entries"):
        conn.execute(f"INSERT INTO {table} SELECT * FROM new.{table}")
    conn.execute("INSERT INTO sessions SELECT * EXCLUDE (project, project_key) FROM new.sessions")
    conn.execute("INSERT INTO files SELECT * FROM new.files")
    for path, blob in conn.execute("SELECT path, state FROM files").fetchall():
        state = msgspec.msgpack.decode(blob)
        assert state.pop("cwd") is not None  # what version 2's parser did not keep
        conn.execute(
            "UPDATE files SET state = ? WHERE path = ?", [msgspec.msgpack.encode(state), path]
        )
    conn.close()

    store = Store(settings.db_path)
    try:
        assert store.schema_version == available()[-1][0]
        assert store.read_sync(project_keys, user.id) == {
            "s.jsonl": ("/w/a_b.c", "-w-a-b-c"),
            "t.jsonl": ("/w/t", "-w-t"),
        }
        assert_exact(store)
        count = store.read_sync(
            lambda cur: cur.execute("SELECT count(*) FROM usage_buckets").fetchone()
        )
        assert count == (3,)
        # an append goes on from the migrated state; a reprocess gives the same
        with (folder / "t.jsonl").open("ab") as out:
            out.write(jsonl(assistant(uuid="c2", ts="2026-03-02T10:01:00Z", message_id="m4")))
        Ingest(settings, store).run([folder / "t.jsonl"])
        assert_exact(store)
        grown = store.read_sync(project_keys, user.id)
        store.write_sync(reset_derived)
        Ingest(settings, store).run(sorted(folder.iterdir()))
        assert store.read_sync(project_keys, user.id) == grown
        assert_exact(store)
    finally:
        store.close()


@pytest.mark.parametrize("count", [1, 8, 9, 40])
def test_rows_read_back_the_same_whether_inserted_as_parameters_or_as_an_arrow_table(
    store: Store, count: int
) -> None:
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa

    from service.store import bulk

    stamp = pa.timestamp("us", tz="UTC")
    columns = {
        "user_id": pa.string(),
        "start_at": stamp,
        "first_at": stamp,
        "last_at": stamp,
        "entries": pa.int64(),
        "models": pa.list_(pa.string()),  # an empty list too
        "input_tokens": pa.int64(),
        "output_tokens": pa.int64(),
        "cache_read_tokens": pa.int64(),
        "cache_creation_tokens": pa.int64(),
        "cost_usd": pa.float64(),
    }
    start = datetime(2026, 3, 1, tzinfo=UTC)
    data: list[list[object]] = [
        [f"user-{i}" for i in range(count)],
        [start + timedelta(hours=5 * i) for i in range(count)],
        [start + timedelta(hours=5 * i) for i in range(count)],
        [start + timedelta(hours=5 * i, minutes=1) for i in range(count)],
        list(range(count)),
        [[] if i % 2 else ["claude-opus-4-6", "claude-haiku"] for i in range(count)],
        *[list(range(count))] * 4,
        [None if i % 3 == 0 else i / 7 for i in range(count)],
    ]

    def insert(cur: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
        bulk.insert(cur, "blocks", columns, data)
        return cur.execute(f"SELECT {', '.join(columns)} FROM blocks ORDER BY entries").fetchall()

    rows = store.write_sync(insert)
    assert [list(column) for column in zip(*rows, strict=True)] == data
