"""The store on its own: migrations, transactions, the one-writer rule."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from service import admin
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
    user = store.write_sync(admin.add_user, "kept@example.com", False)
    store.close()
    reopened = Store(path)
    assert [u.id for u in reopened.read_sync(admin.list_users)] == [user.id]
    assert reopened.schema_version == available()[-1][0]
    reopened.close()


def test_a_failed_write_keeps_nothing(store: Store) -> None:
    def add_then_fail(cur: duckdb.DuckDBPyConnection) -> None:
        admin.add_user(cur, "half@example.com")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.write_sync(add_then_fail)
    assert store.read_sync(admin.list_users) == []


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
