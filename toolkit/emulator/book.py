"""The synthesised order book of one minute, and the walks that take liquidity from it.

The replayed data has bars, not books, so the book is a model (docs/emulator.md,
"Book and fills"): around the reference price ``mid`` (the open of the forming
minute) the touch sits ``half_spread`` away on each side, and behind it each side
holds ``participation`` of the previous bar's volume, cut into equal-quantity levels
whose distance from the touch follows a square-root law: the level that starts
after cumulative quantity ``q`` lies ``impact * sqrt(q / volume)`` (relative) behind
the touch. ``GET /api/v3/depth`` shows these levels and market orders fill at them;
what a taker takes is gone from the book until the next minute.

Prices are held as integer ticks and quantities as integer steps, so walks are exact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np

__all__ = ["Book", "BookSide", "Fill", "build_book"]


@dataclass(frozen=True)
class Fill:
    """One level taken by a walk: price in ticks, quantity in steps."""

    price: int
    qty: int


@dataclass(frozen=True)
class BookSide:
    """One side of the book, best level first: prices in ticks, sizes in steps."""

    prices: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    @property
    def depth(self) -> int:
        """Total quantity of the side, in steps."""
        return sum(self.sizes)

    def levels_after(self, taken: int) -> Iterator[Fill]:
        """Yield the levels left after ``taken`` steps were taken from the top, best first."""
        skip = taken
        for price, size in zip(self.prices, self.sizes, strict=True):
            if skip >= size:
                skip -= size
                continue
            yield Fill(price, size - skip)
            skip = 0

    def visible(self, taken: int, limit: int | None = None) -> list[Fill]:
        """Return the levels left after ``taken`` steps were taken from the top (at most ``limit``)."""
        return list(itertools.islice(self.levels_after(taken), limit))


@dataclass(frozen=True)
class Book:
    """The synthesised book of one symbol during one minute (the bar opening at ``bar_ms``)."""

    bar_ms: int
    tick: Decimal
    step: Decimal
    bids: BookSide
    asks: BookSide

    def side(self, taker_side: str) -> BookSide:
        """Return the side a taker of ``taker_side`` ("BUY" or "SELL") takes from."""
        return self.asks if taker_side == "BUY" else self.bids

    def price(self, ticks: int) -> Decimal:
        """Return a price in ticks as a Decimal."""
        return (self.tick * ticks).normalize() if ticks else Decimal(0)

    def qty(self, steps: int) -> Decimal:
        """Return a quantity in steps as a Decimal."""
        return self.step * steps

    def ticks(self, price: Decimal, up: bool) -> int:
        """Return ``price`` in ticks, rounded down (or up)."""
        return int((price / self.tick).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR))

    def walk(self, taker_side: str, taken: int, qty: int | None = None, limit: int | None = None,
             budget: Decimal | None = None) -> tuple[list[Fill], bool]:
        """Walk the levels a taker meets, best first; return the fills and whether the side ran out.

        Parameters
        ----------
        taker_side
            "BUY" takes the asks, "SELL" the bids.
        taken
            Steps already taken from this side in this minute.
        qty
            Steps wanted; ``None`` with a ``budget``.
        limit
            The worst acceptable price in ticks (a limit order); ``None`` for a market order.
        budget
            Quote to spend (a buy) or to receive (a sell) for a ``quoteOrderQty`` order.
        """
        fills: list[Fill] = []
        left_qty = qty
        left_budget = budget
        buy = taker_side == "BUY"
        for level in self.side(taker_side).levels_after(taken):
            if limit is not None and (level.price > limit if buy else level.price < limit):
                return fills, False
            take = level.qty
            if left_qty is not None:
                take = min(take, left_qty)
            if left_budget is not None:
                unit = self.price(level.price) * self.step
                take = min(take, int((left_budget / unit).to_integral_value(rounding=ROUND_FLOOR)))
            if take <= 0:
                return fills, False
            fills.append(Fill(level.price, take))
            if left_qty is not None:
                left_qty -= take
                if left_qty == 0:
                    return fills, False
            if left_budget is not None:
                left_budget -= self.price(level.price) * self.step * take
        return fills, True


def build_book(bar_ms: int, mid: float, half_spread: float, volume: float, tick: Decimal, step: Decimal,
               participation: float, impact: float, levels: int) -> Book:
    """Build the book of the minute opening at ``bar_ms`` (see the module docstring for the model).

    Parameters
    ----------
    mid
        The reference price (the forming minute's open).
    half_spread
        Relative distance from ``mid`` to each touch.
    volume
        The reference volume (the previous bar's, in base units); 0 gives an empty book.
    participation
        Share of ``volume`` each side holds.
    impact
        Square-root coefficient of the distance of deeper levels from the touch.
    levels
        Number of equal-quantity levels each side is cut into (fewer when it holds fewer steps).
    """
    tick_f, step_f = float(tick), float(step)
    cap = math.floor(volume * participation / step_f + 1e-9) if volume > 0 and mid > 0 else 0
    if cap <= 0:
        return Book(bar_ms, tick, step, BookSide(), BookSide())
    unit = -(-cap // levels)  # the last level holds the remainder: each side holds exactly ``cap`` steps
    n = -(-cap // unit)
    sizes = np.full(n, unit, dtype="int64")
    sizes[-1] = cap - (n - 1) * unit
    rel = impact * np.sqrt(np.arange(n, dtype="float64") * unit * step_f / volume)
    bid0 = math.floor(mid * (1 - half_spread) / tick_f + 1e-6)
    ask0 = max(math.ceil(mid * (1 + half_spread) / tick_f - 1e-6), bid0 + 1)
    asks = np.ceil(ask0 * (1 + rel) - 1e-6).astype("int64")
    bids = np.floor(bid0 * (1 - rel) + 1e-6).astype("int64")
    return Book(bar_ms, tick, step, _merge(bids[bids > 0], sizes[bids > 0]), _merge(asks, sizes))


def _merge(prices: np.ndarray, sizes: np.ndarray) -> BookSide:
    """Merge equal neighbouring prices (levels that round to one tick) into one level."""
    if prices.size == 0:
        return BookSide()
    starts = np.flatnonzero(np.r_[True, prices[1:] != prices[:-1]])
    return BookSide([int(p) for p in prices[starts]], [int(q) for q in np.add.reduceat(sizes, starts)])
