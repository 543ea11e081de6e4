"""5-hour blocks (TRANSCRIPTS.md, "5-hour blocks"): pure functions over winning entries.

Claude's subscription limits reset in 5-hour windows. A user's winning entries, in time
order, fall into blocks: the first entry opens a block at the start of its UTC hour; an
entry more than 5 hours after its block's start, or more than 5 hours after the entry
before it, opens the next one the same way; otherwise it joins the current block. This is
ccusage's block algorithm, so its ``blocks`` report gives the same starts and entries
wherever its dedup agrees with ours.

The rule is a scan from the first entry, but it restarts cleanly at every block's first
entry: what happens from there on depends on nothing before it. So a change at time T
needs only the entries from the first entry of the block that holds (or precedes) T, and
stops mattering once an old block still opens where it did (:func:`opens_block`); the
store keeps blocks current that way (``service.store.blocks``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta

import msgspec

__all__ = [
    "BLOCK_LENGTH",
    "Block",
    "BlockEntry",
    "BurnRate",
    "build",
    "burn_rate",
    "hour_start",
    "opens_block",
]

BLOCK_LENGTH = timedelta(hours=5)
SYNTHETIC_MODEL = "<synthetic>"
"""An entry, counted in the sums, but no model (TRANSCRIPTS.md rule 6)."""


class BlockEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What a block needs of one winning entry."""

    ts: datetime  # aware, UTC
    model: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cost_usd: float | None  # None: the model has no known price


class Block(msgspec.Struct, kw_only=True):
    """One block: its start (a UTC hour), its first and last entry, and the sums of its
    entries. ``cost_usd`` is None when none of its entries is priced."""

    start: datetime
    first_at: datetime
    last_at: datetime
    entries: int
    models: list[str]  # distinct, sorted; ``<synthetic>`` is no model
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cost_usd: float | None

    @property
    def end(self) -> datetime:
        return self.start + BLOCK_LENGTH

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_creation_tokens
        )

    def is_active(self, now: datetime) -> bool:
        return now < self.end and now - self.last_at < BLOCK_LENGTH


def hour_start(moment: datetime) -> datetime:
    """The start of ``moment``'s hour in UTC (for every zone the same instant, even where
    the local offset is not whole hours)."""
    return moment - timedelta(
        minutes=moment.minute, seconds=moment.second, microseconds=moment.microsecond
    )


def opens_block(start: datetime, previous: datetime, moment: datetime) -> bool:
    """Whether an entry at ``moment`` opens a new block after a block that started at
    ``start`` and whose latest entry so far is at ``previous``."""
    return moment - start > BLOCK_LENGTH or moment - previous > BLOCK_LENGTH


class _Open:
    """The block being filled while scanning."""

    __slots__ = ("costs", "first", "inp", "last", "models", "n", "out", "read", "start", "write")

    def __init__(self, entry: BlockEntry) -> None:
        self.start = hour_start(entry.ts)
        self.first = entry.ts
        self.last = entry.ts
        self.n = 0
        self.inp = self.out = self.read = self.write = 0
        self.models: set[str] = set()
        self.costs: list[float] = []

    def add(self, entry: BlockEntry) -> None:
        self.last = entry.ts
        self.n += 1
        self.inp += entry.input_tokens
        self.out += entry.output_tokens
        self.read += entry.cache_read_tokens
        self.write += entry.cache_creation_tokens
        if entry.model is not None and entry.model != SYNTHETIC_MODEL:
            self.models.add(entry.model)
        if entry.cost_usd is not None:
            self.costs.append(entry.cost_usd)

    def close(self) -> Block:
        return Block(
            start=self.start,
            first_at=self.first,
            last_at=self.last,
            entries=self.n,
            models=sorted(self.models),
            input_tokens=self.inp,
            output_tokens=self.out,
            cache_read_tokens=self.read,
            cache_creation_tokens=self.write,
            # fsum is exact, so the sum does not depend on the order of the entries
            cost_usd=round(math.fsum(self.costs), 9) if self.costs else None,
        )


def build(entries: Iterable[BlockEntry]) -> list[Block]:
    """The blocks of ``entries`` (winning entries of one user), oldest first. The entries
    may come in any order; they are sorted by time (ties do not change any block)."""
    blocks: list[Block] = []
    current: _Open | None = None
    for entry in sorted(entries, key=lambda e: e.ts):
        if current is None or opens_block(current.start, current.last, entry.ts):
            if current is not None:
                blocks.append(current.close())
            current = _Open(entry)
        current.add(entry)
    if current is not None:
        blocks.append(current.close())
    return blocks


class BurnRate(msgspec.Struct, frozen=True):
    tokens_per_minute: float
    cost_per_hour: float | None


def burn_rate(block: Block) -> BurnRate | None:
    """Tokens and cost per unit of time between the block's first and last entry; None
    while they are at the same moment (nothing to divide by)."""
    minutes = (block.last_at - block.first_at).total_seconds() / 60
    if minutes <= 0:
        return None
    cost = None if block.cost_usd is None else block.cost_usd / minutes * 60
    return BurnRate(tokens_per_minute=block.total / minutes, cost_per_hour=cost)
