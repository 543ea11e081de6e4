"""Estimated cost of a usage entry, from the price list in ``prices.json``.

Prices are facts from the provider's public price list, kept in one data file with the
date they were checked, so updating them is a data change, not a code change. A model
missing from the file has no price: its cost is None (reported as unpriced), never 0.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Protocol

import msgspec

__all__ = ["ModelPrice", "PriceList", "cost_usd", "load_prices", "price_for"]

_DATE_SUFFIX = re.compile(r"[-@]\d{8}$")


class ModelPrice(msgspec.Struct, frozen=True):
    """USD per million tokens for each kind of token of one model; ``long_*`` apply to the
    tokens of a kind beyond ``long_context_threshold`` in one entry, when set."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    fast_multiplier: float = 1.0
    long_context_threshold: int | None = None
    long_input: float = 0.0
    long_output: float = 0.0
    long_cache_write_5m: float = 0.0
    long_cache_write_1h: float = 0.0
    long_cache_read: float = 0.0


class PriceList(msgspec.Struct, frozen=True):
    checked: str
    models: dict[str, ModelPrice]


class _Priced(Protocol):
    """What pricing reads from an entry (``UsageEntry`` has it)."""

    @property
    def model(self) -> str | None: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_creation_5m(self) -> int: ...
    @property
    def cache_creation_1h(self) -> int: ...
    @property
    def cache_read_tokens(self) -> int: ...
    @property
    def speed(self) -> str | None: ...


class _Tier(msgspec.Struct):
    """One tier of a row of ``prices.json``, in USD per million tokens."""

    input: float
    output: float
    cache_write_5m: float | None = None
    cache_write_1h: float | None = None
    cache_read: float | None = None
    threshold: int | None = None


class _Row(_Tier):
    fast_multiplier: float = 1.0
    long_context: _Tier | None = None
    aliases: list[str] = msgspec.field(default_factory=list)


class _Defaults(msgspec.Struct):
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    long_context_threshold: int


class _PriceFile(msgspec.Struct):
    checked: str
    defaults: _Defaults
    models: dict[str, _Row]


def _per_token(tier: _Tier, defaults: _Defaults) -> tuple[float, float, float, float, float]:
    """Input, output, 5m write, 1h write and read rates; cache rates default
    to the usual multiples of the input rate."""
    write_5m = tier.cache_write_5m
    write_1h = tier.cache_write_1h
    read = tier.cache_read
    return (
        tier.input,
        tier.output,
        (tier.input * defaults.cache_write_5m if write_5m is None else write_5m),
        (tier.input * defaults.cache_write_1h if write_1h is None else write_1h),
        (tier.input * defaults.cache_read if read is None else read),
    )


@cache
def load_prices() -> PriceList:
    """The bundled price list, read once per process."""
    raw = resources.files("service.ingest").joinpath("prices.json").read_bytes()
    data = msgspec.json.decode(raw, type=_PriceFile)
    models: dict[str, ModelPrice] = {}
    for name, row in data.models.items():
        base = _per_token(row, data.defaults)
        long = row.long_context
        price = ModelPrice(*base, fast_multiplier=row.fast_multiplier)
        if long is not None:
            long_rates = _per_token(long, data.defaults)
            price = ModelPrice(
                *base,
                fast_multiplier=row.fast_multiplier,
                long_context_threshold=long.threshold or data.defaults.long_context_threshold,
                long_input=long_rates[0],
                long_output=long_rates[1],
                long_cache_write_5m=long_rates[2],
                long_cache_write_1h=long_rates[3],
                long_cache_read=long_rates[4],
            )
        for alias in [name, *row.aliases]:
            models[alias] = price
    return PriceList(checked=data.checked, models=models)


def price_for(model: str | None) -> ModelPrice | None:
    """The price of a model name as transcripts spell it: a date suffix
    (``claude-sonnet-4-5-20250929``, ``...@20250929``) matches the base model."""
    if not model:
        return None
    models = load_prices().models
    price = models.get(model)
    if price is None:
        price = models.get(_DATE_SUFFIX.sub("", model))
    return price


def _tiered(tokens: int, rate: float, long_rate: float, threshold: int | None) -> float:
    if threshold is None or tokens <= threshold:
        return tokens * rate
    return threshold * rate + (tokens - threshold) * long_rate


def cost_usd(entry: _Priced) -> float | None:
    """Estimated USD for one entry (TRANSCRIPTS.md, Cost), or None when its model has
    no price. An entry without tokens costs 0 whatever its model, so ``<synthetic>``
    notices do not make a session look unpriced."""
    tokens = (
        entry.input_tokens,
        entry.output_tokens,
        entry.cache_creation_5m,
        entry.cache_creation_1h,
        entry.cache_read_tokens,
    )
    if not any(tokens):
        return 0.0
    price = price_for(entry.model)
    if price is None:
        return None
    threshold = price.long_context_threshold
    cost = (
        _tiered(tokens[0], price.input, price.long_input, threshold)
        + _tiered(tokens[1], price.output, price.long_output, threshold)
        + _tiered(tokens[2], price.cache_write_5m, price.long_cache_write_5m, threshold)
        + _tiered(tokens[3], price.cache_write_1h, price.long_cache_write_1h, threshold)
        + _tiered(tokens[4], price.cache_read, price.long_cache_read, threshold)
    )
    if entry.speed == "fast":
        cost *= price.fast_multiplier
    return cost / 1_000_000
