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

import itertools
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from operator import attrgetter

import msgspec

__all__ = [
    "BLOCK_LENGTH",
    "EPOCH",
    "LATEST",
    "Block",
    "BlockEntry",
    "BurnRate",
    "build",
    "burn_rate",
    "end_of",
    "micros",
    "opens_block",
]

BLOCK_LENGTH = timedelta(hours=5)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
"""Where time ends for Python: a block of a clock set to the last hours of 9999 ends here."""
_BLOCK_US = 5 * 3600 * 1_000_000
_HOUR_US = 3600 * 1_000_000
SYNTHETIC_MODEL = "<synthetic>"
"""An entry, counted in the sums, but no model (TRANSCRIPTS.md rule 6)."""


def micros(moment: datetime) -> int:
    """An aware datetime as microseconds since the epoch (what :class:`BlockEntry` holds:
    comparing integers is what makes a year of entries quick to scan)."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def _moment(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


class BlockEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What a block needs of one winning entry; ``ts`` in microseconds since the epoch
    (:func:`micros`)."""

    ts: int
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
        return end_of(self.start)

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_creation_tokens
        )

    def is_active(self, now: datetime) -> bool:
        """TRANSCRIPTS.md's rule, for a block that has begun (a clock set ahead can write
        entries of a block that starts after now: that block is not the current one)."""
        return self.start <= now < self.end and now - self.last_at < BLOCK_LENGTH


def end_of(start: datetime) -> datetime:
    """5 hours after ``start``, or :data:`LATEST` where that is past what Python counts."""
    return start + BLOCK_LENGTH if start < LATEST - BLOCK_LENGTH else LATEST


def opens_block(start: datetime, previous: datetime, moment: datetime) -> bool:
    """Whether an entry at ``moment`` opens a new block after a block that started at
    ``start`` and whose latest entry so far is at ``previous``."""
    return moment - start > BLOCK_LENGTH or moment - previous > BLOCK_LENGTH


_TS = attrgetter("ts")
_COUNTS = tuple(
    attrgetter(name)
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
)
_MODEL = attrgetter("model")
_COST = attrgetter("cost_usd")


def _summed(members: list[BlockEntry]) -> Block:
    """One block of ``members`` (in time order), each sum one pass in C (map and sum)."""
    first, last = members[0].ts, members[-1].ts
    inp, out, read, write = (sum(map(get, members)) for get in _COUNTS)
    costs = [cost for cost in map(_COST, members) if cost is not None]
    return Block(
        start=_moment(first - first % _HOUR_US),  # the epoch starts on a UTC hour
        first_at=_moment(first),
        last_at=_moment(last),
        entries=len(members),
        models=sorted(set(map(_MODEL, members)) - {None, SYNTHETIC_MODEL}),
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=read,
        cache_creation_tokens=write,
        # fsum is exact, so the sum does not depend on the order of the entries
        cost_usd=round(math.fsum(costs), 9) if costs else None,
    )


def build(entries: Iterable[BlockEntry]) -> list[Block]:
    """The blocks of ``entries`` (winning entries of one user), oldest first. The entries
    may come in any order; they are sorted by time (ties do not change any block)."""
    ordered = sorted(entries, key=_TS)
    if not ordered:
        return []
    opened = [0]  # where each block's first entry is
    start = previous = ordered[0].ts
    start -= start % _HOUR_US
    for index, ts in enumerate(map(_TS, ordered)):
        if ts - start > _BLOCK_US or ts - previous > _BLOCK_US:  # opens_block, on integers
            opened.append(index)
            start = ts - ts % _HOUR_US
        previous = ts
    opened.append(len(ordered))
    return [_summed(ordered[a:b]) for a, b in itertools.pairwise(opened)]


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
