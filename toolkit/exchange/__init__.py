"""The exchange adapter: ccxt client construction, errors by reaction, retries of idempotent reads.

The only toolkit package that imports ccxt (besides the emulator's tests of ccxt's own
behaviour). The fetcher and the runner both go through it.
"""

from toolkit.exchange.client import BINANCE_API, SPOT_OPTIONS, exchange_client

__all__ = ["BINANCE_API", "SPOT_OPTIONS", "exchange_client"]
