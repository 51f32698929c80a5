"""MLflow models-from-code entry point for a strategy version.

This file is logged as the model's code; the strategies package travels with it
through ``code_paths`` under a top-level name unique to its code
(``model_config["strategies_package"]``, ``desk_strategies_<sha12>``), so versions
whose strategy code differs load side by side in one process and never collide with
another package called ``strategies``. It imports nothing from the toolkit, so a
version loads without this repository's checkout. ``model_config`` names the
strategy and its parameters.

``predict(bars)`` takes closed bars (a ``timestamp`` column or a datetime index,
plus open/high/low/close/volume) and returns, per bar's close: the strategy's
``direction``; the ``target`` the version's volatility-targeted sizing gives it
(``model_config["sizing"]``); and the ``position`` held after the rebalancing band,
starting flat on the first bar given. The runner applies the same band to the
position it actually holds (``rebalance`` of the strategies package); the target
of the last bar needs only the version's ``required_history`` bars.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

import mlflow


class StrategyModel(PythonModel):
    """A registered strategy version: bars in, target positions out."""

    def load_context(self, context: Any) -> None:
        import importlib

        cfg = context.model_config
        package = importlib.import_module(cfg.get("strategies_package", "strategies"))  # shipped in code_paths
        self.strategy = package.make_strategy(cfg["strategy"], dict(cfg["params"]))
        self.sizing = package.Sizing(**dict(cfg["sizing"]))
        self.bar_minutes = float(cfg["bar_minutes"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        bars = model_input
        if "timestamp" in bars.columns:
            bars = bars.set_index(pd.DatetimeIndex(pd.to_datetime(bars["timestamp"], utc=True), name="timestamp"))
            bars = bars.drop(columns=["timestamp"])
        ohlcv = {c: "float64" for c in ("open", "high", "low", "close", "volume")}
        bars = bars.astype(ohlcv)
        direction = self.strategy.positions(bars).to_numpy()
        target = self.sizing.targets(direction, bars["close"], self.bar_minutes)
        position = self.sizing.apply_band(target)
        return pd.DataFrame({"direction": direction, "target": target, "position": position})


mlflow.models.set_model(StrategyModel())
