"""Write templates/backtest.ipynb from the cell sources below (run by hand after editing)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
KERNEL = {"name": "desk-toolkit", "display_name": "Desk toolkit (.venv)", "language": "python"}


def notebook(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def backtest() -> nbformat.NotebookNode:
    params = new_code_cell('''# Parameters (papermill injects overrides after this cell; the run validates them strictly)
strategy = "ma_cross"                          # ma_cross | donchian | bollinger
symbol = "BTC/USDT"
timeframe = "15m"
start = "2024-01-01"
end = "2024-03-31"                             # a bare date includes that whole day (UTC)
grid = {"fast": [5, 10, 20], "slow": [50, 100]}
params = {}                                    # fixed parameters applied to every combination
taker_fee = 0.001
maker_fee = 0.001
spread_share = 0.5
impact_coef = 1.0
capital = 100_000.0                            # capital allocation, quote currency
split = 0.7                                    # in-sample share of the bars
experiment = "backtests"
model_name = None                              # default: <strategy>.<BASE-QUOTE>.<timeframe>
bars_file = None                               # a Parquet/CSV OHLCV file instead of the store
output_dir = None                              # where the evidence bundle goes (None: a temp dir)
register = False                               # True: log to MLflow from this notebook (JupyterLab use)
progress = True''')
    params.metadata["tags"] = ["parameters"]
    return notebook([
        new_markdown_cell("*Backtest template. Run by `toolkit backtest` through papermill, or in JupyterLab "
                          "as-is after editing the parameters cell.*"),
        params,
        new_code_cell('''from IPython.display import Markdown, display

from toolkit.backtest import config_from_params, run_backtest
from toolkit.backtest.bundle import save_bundle
from toolkit.data.quality import certify
from toolkit.reports import plots, views

cfg = config_from_params(
    strategy=strategy, symbol=symbol, timeframe=timeframe, start=start, end=end, grid=grid, params=params,
    taker_fee=taker_fee, maker_fee=maker_fee, spread_share=spread_share, impact_coef=impact_coef,
    capital=capital, split=split, experiment=experiment, model_name=model_name, bars_file=bars_file,
)
bars = views.bars_for(cfg)
display(Markdown(views.backtest_header(cfg, bars)))'''),
        new_markdown_cell("## Data quality"),
        new_code_cell('''certificate = certify(bars, cfg.symbol, cfg.timeframe)
print(certificate.to_table())'''),
        new_code_cell('''result = run_backtest(cfg, bars, progress=progress)
display(Markdown("## Result\\n\\n" + views.chosen_summary(result)))
display(plots.metrics_table(result))'''),
        new_markdown_cell("## Equity and drawdown"),
        new_code_cell('''plots.equity_figure(result, bars);'''),
        new_code_cell('''plots.underwater_figure(result);'''),
        new_markdown_cell("## Parameter sweep\n\nEvery combination below is a trial in the ledger; the gates "
                          "deflate the chosen Sharpe ratio by the number of trials."),
        new_code_cell('''plots.sweep_figure(result);
display(plots.sweep_table(result))'''),
        new_markdown_cell("## Trades (out-of-sample)"),
        new_code_cell('''plots.trades_figure(result, bars);
display(result.trades.head(20))'''),
        new_code_cell('''bundle = save_bundle(result, bars, certificate.to_dict(), output_dir or views.temp_bundle_dir())
if register:
    from toolkit.registry.mlflow_store import record_backtest
    recorded = record_backtest(bundle)
    display(Markdown(f"Registered **{recorded.model_name}** version {recorded.model_version} (run {recorded.run_id})."))'''),
    ])


def main() -> int:
    out = ROOT / "templates" / "backtest.ipynb"
    nbformat.write(backtest(), str(out))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
