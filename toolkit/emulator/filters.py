"""Real Binance exchangeInfo filters from the bundled snapshots, and order checks.

The newest bundled ``exchangeInfo`` snapshot of each symbol is served as is
(minus the empty placeholder keys of the normalised dump); the same filters
decide whether an order passes: PRICE_FILTER, LOT_SIZE / MARKET_LOT_SIZE,
PERCENT_PRICE_BY_SIDE, NOTIONAL (or the older MIN_NOTIONAL), MAX_NUM_ORDERS and
MAX_NUM_ALGO_ORDERS (open stop orders per symbol).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from toolkit import config
from toolkit.emulator.errors import BinanceError, filter_failure
from toolkit.errors import ConfigurationError

__all__ = ["SymbolRules", "load_rules", "round_step"]

EXCHANGE_DIR = config.BUNDLED_DIR / "exchange"
ZERO = Decimal(0)


def round_step(value: Decimal, step: Decimal, up: bool = False) -> Decimal:
    """Round ``value`` down (or up) to a multiple of ``step``; a zero step leaves it unchanged."""
    if step <= 0:
        return value
    units = (value / step).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return (units * step).quantize(step)


def _dec(raw: object, default: str = "0") -> Decimal:
    text = str(raw) if raw not in (None, "") else default
    return Decimal(text)


@dataclass(frozen=True)
class SymbolRules:
    """Trading rules of one spot symbol, parsed from its exchangeInfo entry."""

    symbol: str
    base: str
    quote: str
    info: dict[str, Any] = field(repr=False)
    tick: Decimal = Decimal("0.01")
    min_price: Decimal = ZERO
    max_price: Decimal = ZERO
    step: Decimal = Decimal("0.00001")
    min_qty: Decimal = ZERO
    max_qty: Decimal = ZERO
    market_max_qty: Decimal = ZERO
    min_notional: Decimal = ZERO
    max_notional: Decimal = ZERO
    min_notional_market: bool = True
    bid_up: Decimal = ZERO
    bid_down: Decimal = ZERO
    ask_up: Decimal = ZERO
    ask_down: Decimal = ZERO
    max_num_orders: int = 200
    max_num_algo_orders: int = 0

    @property
    def unified(self) -> str:
        """Return the ccxt symbol, e.g. ``BTC/USDT``."""
        return f"{self.base}/{self.quote}"

    def check(self, order_type: str, side: str, qty: Decimal, price: Decimal | None, ref_price: Decimal,
              open_orders: int, stop_price: Decimal | None = None, open_algo: int = 0) -> None:
        """Raise ``BinanceError`` (-1013 / -2010) when an order breaks a filter.

        ``open_orders`` and ``open_algo`` count the symbol's open orders and open stop orders
        before this one (MAX_NUM_ORDERS, MAX_NUM_ALGO_ORDERS).
        """
        for value in (price, stop_price):
            if value is None:
                continue
            if value <= 0 or (self.max_price > 0 and value > self.max_price) or value < self.min_price:
                raise filter_failure("PRICE_FILTER")
            if self.tick > 0 and (value - self.min_price) % self.tick != 0:
                raise filter_failure("PRICE_FILTER")
        if qty <= 0 or qty < self.min_qty or (self.max_qty > 0 and qty > self.max_qty):
            raise filter_failure("LOT_SIZE")
        if self.step > 0 and qty % self.step != 0:  # Binance since 2023-03: quantity % stepSize == 0
            raise filter_failure("LOT_SIZE")
        if order_type == "MARKET" and self.market_max_qty > 0 and qty > self.market_max_qty:
            raise filter_failure("MARKET_LOT_SIZE")
        if price is not None and self.bid_up > 0:
            up, down = (self.bid_up, self.bid_down) if side == "BUY" else (self.ask_up, self.ask_down)
            if price > ref_price * up or price < ref_price * down:
                raise filter_failure("PERCENT_PRICE_BY_SIDE")
        if order_type != "MARKET" or self.min_notional_market:
            notional = qty * (price if price is not None else ref_price)
            if notional < self.min_notional or (self.max_notional > 0 and notional > self.max_notional):
                raise filter_failure("NOTIONAL")
        if open_orders >= self.max_num_orders:
            raise BinanceError(400, -2010, "Filter failure: MAX_NUM_ORDERS")
        if stop_price is not None and self.max_num_algo_orders > 0 and open_algo >= self.max_num_algo_orders:
            raise BinanceError(400, -2010, "Filter failure: MAX_NUM_ALGO_ORDERS")

    def check_quote_order(self, quote_qty: Decimal, ref_price: Decimal) -> None:
        """Raise -1013 when a ``quoteOrderQty`` market order's value breaks NOTIONAL."""
        if quote_qty <= 0 or (self.min_notional_market and quote_qty < self.min_notional):
            raise filter_failure("NOTIONAL")
        if self.max_notional > 0 and quote_qty > self.max_notional:
            raise filter_failure("NOTIONAL")
        if self.market_max_qty > 0 and ref_price > 0 and quote_qty / ref_price > self.market_max_qty:
            raise filter_failure("MARKET_LOT_SIZE")


def _clean(entry: dict[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    out["filters"] = [{k: v for k, v in f.items() if v != ""} for f in entry.get("filters", [])]
    if not out.get("permissions"):
        out["permissions"] = ["SPOT"]
    return out


def _parse(entry: dict[str, Any]) -> SymbolRules:
    kw: dict[str, Any] = {}
    for f in entry["filters"]:
        kind = f["filterType"]
        if kind == "PRICE_FILTER":
            kw |= {"tick": _dec(f.get("tickSize")), "min_price": _dec(f.get("minPrice")),
                   "max_price": _dec(f.get("maxPrice"))}
        elif kind == "LOT_SIZE":
            kw |= {"step": _dec(f.get("stepSize")), "min_qty": _dec(f.get("minQty")),
                   "max_qty": _dec(f.get("maxQty"))}
        elif kind == "MARKET_LOT_SIZE":
            kw["market_max_qty"] = _dec(f.get("maxQty"))
        elif kind == "NOTIONAL":
            kw |= {"min_notional": _dec(f.get("minNotional")), "max_notional": _dec(f.get("maxNotional")),
                   "min_notional_market": bool(f.get("applyMinToMarket", True))}
        elif kind == "MIN_NOTIONAL":
            kw |= {"min_notional": _dec(f.get("minNotional")),
                   "min_notional_market": bool(f.get("applyToMarket", True))}
        elif kind == "PERCENT_PRICE_BY_SIDE":
            kw |= {"bid_up": _dec(f.get("bidMultiplierUp")), "bid_down": _dec(f.get("bidMultiplierDown")),
                   "ask_up": _dec(f.get("askMultiplierUp")), "ask_down": _dec(f.get("askMultiplierDown"))}
        elif kind == "MAX_NUM_ORDERS":
            kw["max_num_orders"] = int(f.get("maxNumOrders") or 200)
        elif kind == "MAX_NUM_ALGO_ORDERS":
            kw["max_num_algo_orders"] = int(f.get("maxNumAlgoOrders") or 0)
    return SymbolRules(symbol=entry["symbol"], base=entry["baseAsset"], quote=entry["quoteAsset"],
                       info=entry, **kw)


def load_rules(symbols: list[str], directory: Path = EXCHANGE_DIR) -> dict[str, SymbolRules]:
    """Return rules keyed by Binance id (``BTCUSDT``) for ccxt symbols such as ``BTC/USDT``.

    The newest snapshot (by ``serverTime``) that lists a symbol wins.

    Raises
    ------
    ConfigurationError
        When a symbol has no bundled exchangeInfo entry.
    """
    newest: dict[str, tuple[int, dict[str, Any]]] = {}
    for path in sorted(directory.glob("*exchangeInfo*.json")):
        doc = json.loads(path.read_text())
        doc = doc.get("result", doc)
        when = int(doc.get("serverTime") or 0)
        for entry in doc.get("symbols", []):
            if entry["symbol"] not in newest or when > newest[entry["symbol"]][0]:
                newest[entry["symbol"]] = (when, entry)
    rules: dict[str, SymbolRules] = {}
    for sym in symbols:
        market_id = sym.replace("/", "").replace("-", "").upper()
        if market_id not in newest:
            known = sorted(f"{e['baseAsset']}/{e['quoteAsset']}" for _, e in newest.values())
            raise ConfigurationError("symbols", f"symbols with a bundled exchangeInfo entry {known}", sym)
        rules[market_id] = _parse(_clean(newest[market_id][1]))
    return rules
