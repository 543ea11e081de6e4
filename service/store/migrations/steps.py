"""The Python steps of migrations: filling what SQL cannot compute alone.

Each runs inside its migration's transaction, right after the migration's SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pyarrow as pa

from service.ingest.names import project_key
from service.ingest.transcript import TranscriptState, first_cwd

if TYPE_CHECKING:
    from service.store import Cursor


def projects_and_buckets(cur: Cursor, sessions_dir: Path | None) -> None:
    """Migration 0004: every stored parser state learns its file's first ``cwd`` (read
    from the transcript, up to the first line that has one; a file that is gone keeps
    none), every session its project (as ingest computes it from those states), and
    ``usage_buckets`` is summed from the winning entries; then its key is indexed."""
    from service.ingest.sessions import Kept, member_order, project_of
    from service.store import usage

    decode = msgspec.msgpack.Decoder(TranscriptState).decode
    encode = msgspec.msgpack.Encoder().encode
    states: dict[str, TranscriptState] = {}
    by_session: dict[tuple[str, str], list[str]] = {}
    rewritten: list[tuple[str, bytes]] = []
    for path, user_id, session_file, blob in cur.execute(
        "SELECT path, user_id, session_file, state FROM files"
        " WHERE state IS NOT NULL AND user_id IS NOT NULL"
    ).fetchall():
        state = decode(blob)
        if state.cwd is None and sessions_dir is not None:
            try:
                state.cwd = first_cwd(str(sessions_dir / path))
            except OSError:
                state.cwd = None
            if state.cwd is not None:
                rewritten.append((path, encode(state)))
        states[path] = state
        by_session.setdefault((user_id, session_file), []).append(path)
    if rewritten:
        table = pa.table(
            {
                "path": [p for p, _ in rewritten],
                "state": pa.array([b for _, b in rewritten], pa.binary()),
            }
        )
        cur.register("migrated_states", table)
        try:
            cur.execute(
                "UPDATE files SET state = m.state FROM migrated_states m WHERE files.path = m.path"
            )
        finally:
            cur.unregister("migrated_states")

    kept_decode = msgspec.msgpack.Decoder(Kept).decode
    projects = []
    for key, user_id, session_file, kept in cur.execute(
        "SELECT key, user_id, session_file, kept FROM sessions"
    ).fetchall():
        paths = (
            kept_decode(kept).files
            if kept is not None
            else by_session.get((user_id, session_file), [])
        )
        members = [states[p] for p in sorted(paths, key=member_order) if p in states]
        project = project_of(members)
        if project is not None:
            projects.append((key, project, project_key(project)))
    if projects:
        table = pa.table(
            {
                "key": [k for k, _, _ in projects],
                "project": [p for _, p, _ in projects],
                "project_key": [k for _, _, k in projects],
            }
        )
        cur.register("migrated_projects", table)
        try:
            cur.execute(
                "UPDATE sessions SET project = m.project, project_key = m.project_key"
                " FROM migrated_projects m WHERE sessions.key = m.key"
            )
        finally:
            cur.unregister("migrated_projects")
    usage.rebuild(cur)
    cur.execute("CREATE INDEX usage_buckets_key ON usage_buckets (bucket_key)")


STEPS: dict[int, Callable[[Cursor, Path | None], None]] = {4: projects_and_buckets}
