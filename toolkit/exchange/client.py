"""Build ccxt clients: the one place the toolkit constructs an exchange connection.

The same code talks to the real exchange (``url=None``), to Binance's spot testnet
(``sandbox=True``) or to the loopback emulator (``url=http://127.0.0.1:PORT``):
paper trading is this code pointed at another URL, never a branch inside it.
"""

from __future__ import annotations

import inspect
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async

from toolkit.clock import Clock
from toolkit.errors import ConfigurationError
from toolkit.exchange.pacing import BINANCE_SPOT_WEIGHT_PER_MINUTE, install_pacer

__all__ = ["BINANCE_API", "CLIENT_KEYS", "SPOT_OPTIONS", "exchange_client"]


def _sign_with(client: Any, clock: Clock) -> None:
    """Make ``client`` sign with ``clock``, its clock-skew correction measured against the same clock.

    ccxt's binance signs ``timestamp=self.nonce()`` = its clock minus ``options['timeDifference']``,
    and ``load_time_difference()`` measures that difference from its own wall clock; both are
    replaced on this one client object so that a resync after ``InvalidNonce`` works on a replay venue.
    """
    def nonce() -> int:
        return clock.now_ms() - int(client.options.get("timeDifference", 0) or 0)

    def load_time_difference(params: dict[str, Any] | None = None) -> int:
        server = client.fetch_time(params or {})
        client.options["timeDifference"] = clock.now_ms() - int(server)
        return int(client.options["timeDifference"])

    client.nonce = nonce
    if inspect.iscoroutinefunction(client.fetch_time):  # ccxt.async_support
        async def load_time_difference_async(params: dict[str, Any] | None = None) -> int:
            server = await client.fetch_time(params or {})
            client.options["timeDifference"] = clock.now_ms() - int(server)
            return int(client.options["timeDifference"])

        client.load_time_difference = load_time_difference_async
    else:
        client.load_time_difference = load_time_difference

#: The host that ``url`` replaces in every string of ccxt's ``urls['api']``.
BINANCE_API = "https://api.binance.com"
#: ccxt options that keep ``load_markets()`` on the spot exchangeInfo endpoint alone.
SPOT_OPTIONS: dict[str, Any] = {
    "defaultType": "spot", "fetchMarkets": ["spot"], "fetchCurrencies": False, "fetchMargins": False,
}
#: Constructor keys passed to ccxt as they are; any other keyword goes into ``options``.
CLIENT_KEYS = {"timeout", "enableRateLimit", "rateLimit", "verbose", "headers", "proxies", "userAgent"}


def exchange_client(exchange_id: str = "binance", url: str | None = None, api_key: str | None = None,
                    secret: str | None = None, async_: bool = False, sandbox: bool = False,
                    clock: Clock | None = None, **options: Any) -> Any:
    """Return a ccxt exchange (sync, or ``ccxt.async_support`` with ``async_=True``).

    Parameters
    ----------
    exchange_id
        A ccxt exchange id such as ``binance``.
    url
        Base URL of a Binance-compatible server (the loopback emulator): it
        replaces ``https://api.binance.com`` in every string of ``urls['api']``,
        and the client is restricted to spot (``defaultType='spot'``,
        ``fetchMarkets=['spot']``, ``fetchCurrencies=False``, ``fetchMargins=False``).
    api_key, secret
        Credentials; none for public data. They stay inside the client object.
    sandbox
        Use the exchange's own test venue (ccxt ``set_sandbox_mode(True)``, Binance's spot testnet).
    clock
        Sign requests (``timestamp``) with this clock instead of the local wall clock. For a
        venue whose time does not run at wall speed (the emulator replaying bars stepped or
        accelerated); against a real exchange, use ``adjustForTimeDifference=True`` instead.
    options
        ``timeout``, ``enableRateLimit``, ``rateLimit``, ``verbose``, ``headers``,
        ``proxies`` and ``userAgent`` go to the constructor; anything else into
        ccxt's ``options`` (e.g. ``adjustForTimeDifference=True``). With ``enableRateLimit``
        (the default) a sync client is paced by :class:`~toolkit.exchange.pacing.Pacer`
        (bursts, ccxt's average rate, Binance's used-weight header) instead of ccxt's fixed spacing.

    Raises
    ------
    ConfigurationError
        For an unknown exchange id, ``url`` with an exchange other than binance, or
        ``url`` together with ``sandbox``.
    """
    module = ccxt_async if async_ else ccxt
    if exchange_id not in ccxt.exchanges:
        raise ConfigurationError("exchange", "a ccxt exchange id such as binance", exchange_id)
    if url is not None and exchange_id != "binance":
        raise ConfigurationError("url", "only with exchange 'binance' (the emulator speaks Binance's API)",
                                 exchange_id)
    if url is not None and sandbox:
        raise ConfigurationError("sandbox", "either a url (the emulator) or the exchange's sandbox, not both",
                                 url)
    cfg: dict[str, Any] = {"enableRateLimit": True}
    extra: dict[str, Any] = {}
    for key, value in options.items():
        (cfg if key in CLIENT_KEYS else extra)[key] = value
    if api_key is not None:
        cfg["apiKey"] = api_key
    if secret is not None:
        cfg["secret"] = secret
    if url is not None:
        extra = {**SPOT_OPTIONS, **extra}
    if extra:
        cfg["options"] = extra
    client = getattr(module, exchange_id)(cfg)
    if not async_ and cfg["enableRateLimit"]:  # ccxt's async clients have a token bucket of their own
        install_pacer(client, weight_limit=BINANCE_SPOT_WEIGHT_PER_MINUTE if exchange_id == "binance" else None)
    if sandbox:
        client.set_sandbox_mode(True)
    if clock is not None:
        _sign_with(client, clock)
    if url is not None:
        base = url.rstrip("/")
        api = client.urls["api"]
        for name, value in list(api.items()):
            if isinstance(value, str):
                api[name] = value.replace(BINANCE_API, base)
    return client
