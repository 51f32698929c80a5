"""``ExchangeSession``: one ccxt client behind the small interface the fetcher and the runner use.

Every read is idempotent and goes through :class:`~toolkit.exchange.retry.Retrier`
(converted at the call, temporary failures retried); order placement and cancellation go
through ``toolkit.exchange.orders`` and are sent exactly once. The same session talks to
the loopback emulator (``url=…``), Binance's spot testnet (``sandbox=True``) or production
(neither): paper trading is this code pointed at another URL.

Credentials come from arguments or the environment (:meth:`ExchangeConfig.from_env`) and
never reach a repr, a log line or an error message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any

import pydantic

from toolkit.canonical import canonical_sha256
from toolkit.clock import Clock
from toolkit.exchange import orders
from toolkit.exchange.client import exchange_client
from toolkit.exchange.errors import UnexpectedResponse
from toolkit.exchange.orders import Order
from toolkit.exchange.retry import Retrier, RetryEvent, RetryPolicy

__all__ = ["API_KEY_ENV", "SECRET_ENV", "ExchangeConfig", "ExchangeSession"]

#: Environment variables :meth:`ExchangeConfig.from_env` reads the credentials from.
API_KEY_ENV = "TOOLKIT_EXCHANGE_API_KEY"
SECRET_ENV = "TOOLKIT_EXCHANGE_SECRET"


class ExchangeConfig(pydantic.BaseModel):
    """Where and how to connect: frozen, unknown keys refused, secrets shown as ``***``.

    Parameters
    ----------
    exchange
        A ccxt exchange id.
    url
        Base URL of a Binance-compatible server (the loopback emulator); None for the real exchange.
    sandbox
        The exchange's own test venue (Binance spot testnet).
    api_key, secret
        Credentials (None for public data); prefer :meth:`from_env`.
    timeout_ms
        ccxt's HTTP timeout per request.
    rate_limit
        ccxt's client-side rate limiter (``enableRateLimit``).
    adjust_for_time_difference
        Sign with the exchange's clock (ccxt ``adjustForTimeDifference``).
    retry
        The retry policy of idempotent reads.
    options
        Further ccxt options (``recvWindow`` …).
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    exchange: str = "binance"
    url: str | None = None
    sandbox: bool = False
    api_key: pydantic.SecretStr | None = None
    secret: pydantic.SecretStr | None = None
    timeout_ms: int = pydantic.Field(10_000, gt=0)
    rate_limit: bool = True
    adjust_for_time_difference: bool = False
    retry: RetryPolicy = RetryPolicy()
    options: dict[str, Any] = pydantic.Field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, api_key_var: str = API_KEY_ENV,
                 secret_var: str = SECRET_ENV, **fields: Any) -> ExchangeConfig:
        """Return a config whose credentials come from the environment (unset variables: no credentials)."""
        env = os.environ if environ is None else environ
        return cls(api_key=env.get(api_key_var) or None, secret=env.get(secret_var) or None, **fields)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, ("***" if isinstance(value, pydantic.SecretStr) else value)

    def sha256(self) -> str:
        """Return the sha256 of the canonical JSON form without the credentials (the config's identity)."""
        doc = self.model_dump(mode="json", exclude={"api_key", "secret"})
        doc["authenticated"] = self.secret is not None
        return canonical_sha256(doc, ascii_only=True)


class ExchangeSession:
    """One exchange connection: retried reads, order helpers sent once, ``close()``.

    Not thread-safe (neither is a ccxt client): one session per thread or task.

    Parameters
    ----------
    config
        Where and how to connect (default: public Binance).
    client
        An existing sync ccxt client to use instead of building one (the session then
        does not close it).
    clock
        Sign requests with this clock (a replay venue); see ``exchange_client``.
    sleep, monotonic, on_retry
        Passed to the :class:`Retrier` (inject fakes in tests; count or log retries).
    """

    def __init__(self, config: ExchangeConfig | None = None, *, client: Any = None, clock: Clock | None = None,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic,
                 on_retry: Callable[[RetryEvent], None] | None = None) -> None:
        self.config = config or ExchangeConfig()
        self.retrier = Retrier(self.config.retry, sleep=sleep, monotonic=monotonic, on_retry=on_retry)
        self._owns_client = client is None
        if client is None:
            cfg = self.config
            extra: dict[str, Any] = dict(cfg.options)
            if cfg.adjust_for_time_difference:
                extra["adjustForTimeDifference"] = True
            client = exchange_client(
                cfg.exchange, url=cfg.url, sandbox=cfg.sandbox, clock=clock,
                api_key=None if cfg.api_key is None else cfg.api_key.get_secret_value(),
                secret=None if cfg.secret is None else cfg.secret.get_secret_value(),
                timeout=cfg.timeout_ms, enableRateLimit=cfg.rate_limit, **extra)
        self.client = client
        self.closed = False

    @property
    def exchange(self) -> str:
        """Return the ccxt exchange id."""
        return str(self.client.id)

    def __repr__(self) -> str:
        return f"ExchangeSession({self.config!r})"

    def __enter__(self) -> ExchangeSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's HTTP session (only a client the session built); safe to call twice."""
        if not self.closed and self._owns_client and hasattr(self.client, "close"):
            self.client.close()
        self.closed = True

    def _read(self, operation: str, fn: Callable[[], Any]) -> Any:
        return self.retrier.call(fn, operation, client=self.client)

    # --- reads (idempotent, retried) ----------------------------------------------------------

    def load_markets(self, reload: bool = False) -> dict[str, Any]:
        """Return the exchange's markets (loaded once, or again with ``reload``)."""
        return self._read("load_markets", lambda: self.client.load_markets(reload))  # type: ignore[no-any-return]

    def fetch_time(self) -> int:
        """Return the exchange's clock in epoch milliseconds."""
        return int(self._read("fetch_time", self.client.fetch_time))

    def sync_clock(self) -> int:
        """Resync the client's clock with the exchange's (``load_time_difference``); return the difference in ms."""
        return int(self._read("load_time_difference", self.client.load_time_difference))

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1m", since: int | None = None, limit: int | None = None,
                    params: Mapping[str, Any] | None = None) -> list[list[Any]]:
        """Return OHLCV rows ``[open time ms, open, high, low, close, volume]`` (closed bars as the exchange sends)."""
        return self._read(  # type: ignore[no-any-return]
            f"fetch_ohlcv {symbol} {timeframe}",
            lambda: self.client.fetch_ohlcv(symbol, timeframe, since=since, limit=limit, params=dict(params or {})))

    def fetch_ticker(self, symbol: str) -> dict[str, Any]:
        """Return ccxt's ticker structure of ``symbol``."""
        return self._read(f"fetch_ticker {symbol}", lambda: self.client.fetch_ticker(symbol))  # type: ignore[no-any-return]

    def fetch_last_price(self, symbol: str) -> Decimal:
        """Return the price of ``symbol``'s last trade (``GET /api/v3/ticker/price``: lighter than the 24 h ticker)."""
        prices = self._read(f"fetch_last_price {symbol}", lambda: self.client.fetch_last_prices([symbol]))
        entry = (prices or {}).get(symbol) or {}
        price = entry.get("price")
        if price is None or not float(price) > 0:  # what ccxt's BadResponse means: an operational error
            raise UnexpectedResponse(f"fetch_last_price {symbol}", self.exchange,
                                     f"no positive last price in {entry!r}")
        return Decimal(str(price))

    def fetch_balance(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Return ccxt's balance structure (``balance["USDT"]["free"]`` …)."""
        return self._read("fetch_balance",  # type: ignore[no-any-return]
                          lambda: self.client.fetch_balance(dict(params or {})))

    def fetch_open_orders(self, symbol: str) -> list[Order]:
        """Return the open orders of ``symbol`` (one symbol per call: Binance weighs all-symbol queries 40×)."""
        rows = self._read(f"fetch_open_orders {symbol}", lambda: self.client.fetch_open_orders(symbol))
        return [Order.from_ccxt(r) for r in rows]

    def fetch_orders(self, symbol: str) -> list[Order]:
        """Return the account's orders of ``symbol`` (open and closed, as far back as the exchange keeps)."""
        rows = self._read(f"fetch_orders {symbol}", lambda: self.client.fetch_orders(symbol))
        return [Order.from_ccxt(r) for r in rows]

    def fetch_order(self, symbol: str, order_id: str) -> Order:
        """Return the order with the exchange's ``order_id`` (``OrderNotFoundRejected`` when unknown)."""
        raw = self._read(f"fetch_order {order_id} {symbol}", lambda: self.client.fetch_order(order_id, symbol))
        return Order.from_ccxt(raw)

    def fetch_my_trades(self, symbol: str, since: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Return ccxt's trade structures of the account's fills in ``symbol``."""
        return self._read(f"fetch_my_trades {symbol}",  # type: ignore[no-any-return]
                          lambda: self.client.fetch_my_trades(symbol, since, limit))

    def find_order(self, symbol: str, client_order_id: str) -> Order | None:
        """Return the order with ``client_order_id``, or None when the exchange does not know it (retried)."""
        self.load_markets()
        return orders.find_order(self.client, symbol, client_order_id, retrier=self.retrier)

    def to_precision(self, symbol: str, amount: Decimal | str | float,
                     price: Decimal | str | float | None = None) -> tuple[Decimal, Decimal | None]:
        """Return ``amount`` and ``price`` rounded with the market's precision."""
        self.load_markets()
        return orders.to_precision(self.client, symbol, amount, price)

    # --- orders (sent once, never retried) -----------------------------------------------------

    def place_order(self, symbol: str, side: str, type: str, amount: Decimal | str | float,
                    price: Decimal | str | float | None = None, *, client_order_id: str,
                    params: Mapping[str, Any] | None = None) -> Order:
        """Send one order request exactly once (see :func:`toolkit.exchange.orders.place_order`)."""
        self.load_markets()  # retried here, so nothing but the order request is inside the unretried call
        return orders.place_order(self.client, symbol, side, type, amount, price, client_order_id=client_order_id,
                                  params=params)

    def cancel_order(self, symbol: str, *, order_id: str | None = None, client_order_id: str | None = None,
                     params: Mapping[str, Any] | None = None) -> Order:
        """Send one cancel request exactly once (see :func:`toolkit.exchange.orders.cancel_order`)."""
        self.load_markets()
        return orders.cancel_order(self.client, symbol, order_id=order_id, client_order_id=client_order_id,
                                   params=params)
