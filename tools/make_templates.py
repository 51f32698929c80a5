"""Write templates/backtest.ipynb and notebooks/explore_strategy.ipynb from the sources below.

Run by hand after editing: ``.venv/bin/python tools/make_templates.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
KERNEL = {"name": "desk-toolkit", "display_name": "Desk toolkit (.venv)", "language": "python"}


def notebook(cells: list) -> nbformat.NotebookNode:
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating a template changes only what was edited
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
allow_failed_quality = False                   # True: register even if the bars fail their certificate
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
from toolkit.reporting import plots, views

cfg = config_from_params(
    strategy=strategy, symbol=symbol, timeframe=timeframe, start=start, end=end, grid=grid, params=params,
    taker_fee=taker_fee, maker_fee=maker_fee, spread_share=spread_share, impact_coef=impact_coef,
    capital=capital, split=split, experiment=experiment, model_name=model_name, bars_file=bars_file,
)
bars = views.bars_for(cfg)
display(Markdown(views.backtest_header(cfg, bars)))'''),
        new_markdown_cell("## Data quality"),
        new_code_cell('''certificate = certify(bars, cfg.symbol, cfg.timeframe, start=cfg.start, end=cfg.end)
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
    from toolkit.registry.record import record_backtest
    recorded = record_backtest(bundle, allow_failed_quality=allow_failed_quality)
    display(Markdown(f"Registered **{recorded.model_name}** version {recorded.model_version} (run {recorded.run_id})."))'''),
    ])


def explore() -> nbformat.NotebookNode:
    params = new_code_cell('''strategy = "donchian"
symbol = "BTC/USDT"
timeframe = "1h"
start = "2024-01-01"
end = "2024-04-30"
grid = {"window": [24, 48, 96], "exit_window": [12, 24]}
launch = False          # True: run the backtest template (papermill -> HTML -> MLflow version)''')
    params.metadata["tags"] = ["parameters"]
    return notebook([
        new_markdown_cell("# Exploring a strategy\n\nHow a researcher looks at a strategy with the same "
                          "`toolkit` calls the templates use, then launches the template run that registers "
                          "a version. Every sweep here is recorded in the trial ledger: exploring *is* trying."),
        params,
        new_code_cell('''from IPython.display import Markdown, display

from toolkit.backtest import config_from_params, run_backtest
from toolkit.data import load_bars
from toolkit.data.quality import certify
from toolkit.reporting import plots
from toolkit.strategies import make_strategy

bars = load_bars(symbol, timeframe, start, end)
print(certify(bars, symbol, timeframe, start=start, end=end).to_table())'''),
        new_markdown_cell("## One parameter set, by hand\n\nPositions are decided on each bar's close "
                          "and executed at the next bar's open."),
        new_code_cell('''first = {k: v[0] for k, v in grid.items()}
positions = make_strategy(strategy, first).positions(bars)
display(positions.value_counts().rename("bars").to_frame())
ax = bars["close"].plot(figsize=(11, 3), lw=0.8, color="black", title=f"{strategy} {first}")
ax2 = ax.twinx()
positions.plot(ax=ax2, lw=0.8, color="tab:blue", alpha=0.6);'''),
        new_markdown_cell("## A small sweep (recorded in the ledger)"),
        new_code_cell('''cfg = config_from_params(strategy=strategy, symbol=symbol, timeframe=timeframe, start=start, end=end, grid=grid)
result = run_backtest(cfg, bars, progress=True)
display(plots.sweep_table(result))
plots.sweep_figure(result);
display(Markdown(f"{result.n_trials} trials recorded so far for {strategy} on {symbol}."))'''),
        new_markdown_cell("## Launch the template run\n\nWhen the idea is worth recording, run the "
                          "parameterised template: it executes `templates/backtest.ipynb` with papermill, "
                          "renders the HTML report and registers a new version in MLflow. The CLI equivalent is "
                          "`toolkit backtest --strategy ... --grid ...`."),
        new_code_cell('''if launch:
    from toolkit.workflows.backtest import run_backtest_workflow

    run = run_backtest_workflow(dict(strategy=strategy, symbol=symbol, timeframe=timeframe, start=start, end=end, grid=grid))
    display(Markdown(f"Registered **{run.model_name}** v{run.model_version}: report `{run.report_path}`"))'''),
    ])


def notebooks() -> dict[Path, nbformat.NotebookNode]:
    """Return every notebook this script writes, by path (``tests/test_templates.py`` compares them)."""
    return {ROOT / "templates" / "backtest.ipynb": backtest(),
            ROOT / "notebooks" / "explore_strategy.ipynb": explore()}


def main() -> int:
    for path, nb in notebooks().items():
        nbformat.write(nb, str(path))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
