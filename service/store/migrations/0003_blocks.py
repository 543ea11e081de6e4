"""5-hour blocks per user (TRANSCRIPTS.md), kept by ingest; filled here from the winning
entries already stored (a Python step: the block rule is a scan in time order)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.store import Cursor

TABLE = """
-- One row per block: its start (a UTC hour; it ends 5 hours later), its first and last
-- entry, and the sums of its entries (service.ingest.blocks). No index: a user's blocks
-- are read by user and start time, and rows are written about in time order, so the
-- database skips the row groups of other times.
CREATE TABLE blocks (
    user_id                VARCHAR NOT NULL,
    start_at               TIMESTAMPTZ NOT NULL,
    first_at               TIMESTAMPTZ NOT NULL,
    last_at                TIMESTAMPTZ NOT NULL,
    entries                BIGINT NOT NULL,
    models                 VARCHAR[] NOT NULL,
    input_tokens           BIGINT NOT NULL,
    output_tokens          BIGINT NOT NULL,
    cache_read_tokens      BIGINT NOT NULL,
    cache_creation_tokens  BIGINT NOT NULL,
    cost_usd               DOUBLE          -- NULL: none of its entries is priced
);
"""


def upgrade(cur: Cursor) -> None:
    from service.store import blocks

    cur.execute(TABLE)
    blocks.rebuild(cur)
