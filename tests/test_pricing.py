"""Cost per entry (TRANSCRIPTS.md, Cost), with figures worked out by hand from the
public price list in ``prices.json``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pytest

from service.ingest.pricing import cost_usd, load_prices, price_for


@dataclass
class Tokens:
    model: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0
    cache_read_tokens: int = 0
    speed: str | None = None


def test_price_list_says_when_it_was_checked() -> None:
    checked = date.fromisoformat(load_prices().checked)
    assert date(2026, 1, 1) <= checked <= date.today()


@pytest.mark.parametrize(
    ("model", "input_rate", "output_rate"),
    [
        ("claude-opus-4-6", 5, 25),
        ("claude-opus-4-5-20251101", 5, 25),
        ("claude-opus-4-1-20250805", 15, 75),
        ("claude-opus-4-20250514", 15, 75),
        ("claude-sonnet-4-5-20250929", 3, 15),
        ("claude-sonnet-4-20250514", 3, 15),
        ("claude-haiku-4-5-20251001", 1, 5),
        ("claude-3-5-haiku-20241022", 0.8, 4),
    ],
)
def test_base_rates_and_date_suffixes(model: str, input_rate: float, output_rate: float) -> None:
    # 100k of each kind: under the 200k long-context threshold of the Sonnet 4 models.
    cost = cost_usd(Tokens(model, input_tokens=100_000, output_tokens=100_000))
    assert cost == pytest.approx((input_rate + output_rate) / 10)


def test_cache_writes_and_reads_use_their_multiples_of_input() -> None:
    # Opus 4.6: 5m writes 1.25 x $5, 1h writes 2 x $5, reads 0.1 x $5 per MTok.
    entry = Tokens(
        "claude-opus-4-6",
        cache_creation_5m=1_000_000,
        cache_creation_1h=1_000_000,
        cache_read_tokens=1_000_000,
    )
    assert cost_usd(entry) == pytest.approx(6.25 + 10 + 0.5)


def test_small_opus_entry_by_hand() -> None:
    entry = Tokens(
        "claude-opus-4-6",
        input_tokens=10,
        output_tokens=50,
        cache_creation_5m=20,
        cache_read_tokens=100,
    )
    assert cost_usd(entry) == pytest.approx((10 * 5 + 50 * 25 + 20 * 6.25 + 100 * 0.5) / 1e6)


def test_haiku_3_has_its_own_published_cache_rates() -> None:
    entry = Tokens(
        "claude-3-haiku-20240307", cache_creation_5m=1_000_000, cache_read_tokens=1_000_000
    )
    assert cost_usd(entry) == pytest.approx(0.30 + 0.03)


def test_long_context_prices_apply_beyond_200k_of_each_kind() -> None:
    # Sonnet 4.5: $3/$15 up to 200k tokens of a kind in one entry, $6/$22.50 beyond;
    # cache reads 0.1 x and 5m writes 1.25 x of the tier's input price.
    entry = Tokens(
        "claude-sonnet-4-5-20250929",
        input_tokens=250_000,
        output_tokens=10_000,
        cache_read_tokens=300_000,
        cache_creation_5m=200_000,
    )
    expected = (
        200_000 * 3
        + 50_000 * 6  # input
        + 10_000 * 15  # output, under the threshold
        + 200_000 * 0.3
        + 100_000 * 0.6  # cache reads
        + 200_000 * 3.75  # 5m writes, exactly at the threshold
    ) / 1e6
    assert cost_usd(entry) == pytest.approx(expected)


def test_models_without_long_context_prices_stay_flat() -> None:
    entry = Tokens("claude-opus-4-6", input_tokens=1_000_000)
    assert cost_usd(entry) == pytest.approx(5.0)


def test_fast_mode_multiplies_by_the_published_premium() -> None:
    standard = Tokens("claude-opus-4-6", input_tokens=1_000_000, output_tokens=1_000_000)
    fast = Tokens("claude-opus-4-6", input_tokens=1_000_000, output_tokens=1_000_000, speed="fast")
    assert cost_usd(standard) == pytest.approx(30.0)
    assert cost_usd(fast) == pytest.approx(180.0)  # $30 / $150 per MTok
    no_fast_price = Tokens("claude-sonnet-4-5", input_tokens=100_000, speed="fast")
    assert cost_usd(no_fast_price) == pytest.approx(0.3)


@pytest.mark.parametrize("model", ["gpt-5", "claude-opus-9", "<synthetic>", None, ""])
def test_unknown_models_are_unpriced_not_free(model: str | None) -> None:
    assert price_for(model) is None
    assert cost_usd(Tokens(model, input_tokens=10)) is None


def test_an_entry_without_tokens_costs_nothing_whatever_its_model() -> None:
    assert cost_usd(Tokens("<synthetic>")) == 0.0
    assert cost_usd(Tokens("claude-opus-4-6")) == 0.0
