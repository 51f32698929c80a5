"""Write templates/backtest.ipynb and the research notebooks under notebooks/.

Run by hand after editing: ``.venv/bin/python tools/make_templates.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from notebook_writer import ROOT, finish, write


def notebook(cells: list, preload: list[str] | None = None) -> nbformat.NotebookNode:
    return finish(new_notebook(cells=cells), preload)


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
spread_model = "fixed"                         # fixed: spread_bps (measured on the book) | corwin_schultz
spread_bps = 0.0016                            # BTC/USDT book median: one tick (toolkit.backtest.costs)
spread_share = 0.5
impact_coef = 0.18                             # Y of the square-root law, fitted to BTC/USDT book walks
execution_horizon_minutes = 60                 # participation: notional over the quote volume of this horizon
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
    taker_fee=taker_fee, maker_fee=maker_fee, spread_model=spread_model, spread_bps=spread_bps,
    spread_share=spread_share, impact_coef=impact_coef, execution_horizon_minutes=execution_horizon_minutes,
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


def _tagged(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cell.metadata["tags"] = ["parameters"]
    return cell


def cost_calibration() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell('''# Calibrating the cost model on the real BTC/USDT book

The backtest's slippage is `spread_share · spread + Y · σ_h · participation^0.5` (`toolkit.backtest.costs`).
This notebook measures both terms on the bundled Binance spot BTC/USDT capture of 2024-08-08 23:54 → 2024-08-09 00:05 UTC
(book ticker, L2 depth, trades; `toolkit/data/bundled/book/SOURCES.md`): the quoted spread, and the cost of walking the
order book with market orders of several sizes. It then fits Y and compares the model, and the old bar-based default, with the book.'''),
        _tagged(new_code_cell('''sizes = [10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000]   # market orders, USDT
fit_sizes = [100_000, 250_000, 500_000, 1_000_000]   # the range Y is fitted on (the desk's order sizes)
every = "1s"   # book states sampled once per interval of exchange time''')),
        new_code_cell('''%matplotlib inline
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from toolkit.backtest.calibration import (book_states, book_walk_costs, compare_with_book, fit_impact_coef,
                                          load_book_sample, load_sample_bars, relative_spread, spread_summary,
                                          taker_orders)
from toolkit.backtest.costs import CostModel

quotes = load_book_sample("bookticker")
depth = load_book_sample("depth")
trades = load_book_sample("trades")
bars = load_sample_bars()
display(Markdown(f"{len(quotes):,} book-ticker updates, {len(depth):,} depth rows, {len(trades):,} trades, "
                 f"{len(bars):,} 1m bars ({bars.index[0]:%Y-%m-%d %H:%M} → {bars.index[-1]:%Y-%m-%d %H:%M} UTC)."))'''),
        new_markdown_cell('''## The spread

`(ask − bid) / mid` of every book-ticker update; time-weighted figures weigh each quote by how long it stood.
The 2021-01-08 micro-sample (46 s, 451 quotes) is another period, for comparison.'''),
        new_code_cell('''spread = pd.DataFrame({"2024-08-08/09": spread_summary(quotes),
                       "2021-01-08": spread_summary(load_book_sample("quotes_2021"))})
display(spread.round(5))
model = CostModel()
display(Markdown(f"The model's default `spread_bps` = {model.spread_bps} (charged: {model.spread_share} × it = "
                 f"{model.spread_share * model.spread_bps:.4f} bps a side). Book median: "
                 f"{spread.loc['median_bps', '2024-08-08/09']:.5f} bps, one tick "
                 f"{spread.loc['one_tick_time_share', '2024-08-08/09']:.1%} of the time."))
fig, ax = plt.subplots(figsize=(11, 3))
rs = relative_spread(quotes) * 1e4
ax.semilogy(quotes["local_time"], rs, lw=0.4, color="black")
ax.set_ylabel("spread, bps (log)")
ax.set_title("BTC/USDT quoted spread, every book-ticker update");'''),
        new_markdown_cell('''## Walking the book

The L2 book is rebuilt from the REST snapshot and every 100 ms diff (Binance's rule), and sampled once per `every`.
At each state a market buy (sell) of `Q` USDT walks the asks (bids); its cost is `|VWAP − mid| / mid`.'''),
        new_code_cell('''states = list(book_states(depth, every))
walks = book_walk_costs(states, sorted(set(sizes) | set(fit_sizes)))
stats = pd.DataFrame({"mean_bps": walks[sizes].mean(), "median_bps": walks[sizes].median(),
                      "p90_bps": walks[sizes].quantile(0.9), "max_bps": walks[sizes].max()}) * 1e4
stats.index.name = "order_usdt"
display(Markdown(f"{len(states)} book states, {states[0].time:%H:%M:%S} → {states[-1].time:%H:%M:%S} UTC, both sides."))
display(stats.round(3))'''),
        new_markdown_cell('''## Fitting Y and comparing

Each book state is priced by the model as an order at the open of the 1m bar containing it, with σ_h and the
horizon's quote volume from the bars before (60-minute execution horizon). Y makes the model's mean impact match
the book's mean walk cost net of the half spread, as a geometric mean over `fit_sizes`.'''),
        new_code_cell('''y = fit_impact_coef(walks, bars, fit_sizes)
old = CostModel(spread_model="corwin_schultz", impact_coef=1.0, execution_horizon_minutes=1)
display(Markdown(f"Fitted Y = **{y:.3f}**; the model's default `impact_coef` = {model.impact_coef}."))
new_table = compare_with_book(walks, bars, sizes, model)
old_table = compare_with_book(walks, bars, sizes, old)
old_cols = old_table[["model_bps", "factor"]].rename(columns=lambda c: f"{c}_old_default")
table = new_table.join(old_cols)
display(table.round(3))'''),
        new_markdown_cell('''Cross-check with real market orders: the trades sharing a trade time and aggressor side are one taker order;
its cost is the VWAP against its first fill price (vs the touch; the half spread, 0.0008 bps, is negligible here).'''),
        new_code_cell('''taker = taker_orders(trades)
bins = [0, 10_000, 50_000, 100_000, 250_000, 1_000_000, 10_000_000]
display(taker.groupby(pd.cut(taker["notional"], bins), observed=True)["cost_bps"].agg(["count", "mean", "median"]).round(3))'''),
        new_code_cell('''fig, ax = plt.subplots(figsize=(8, 5))
ax.loglog(new_table.index, new_table["book_bps"], "o-", color="black", label="book walk (mean)")
ax.loglog(new_table.index, new_table["model_bps"], "s-", color="tab:blue", label=f"model, Y={model.impact_coef}")
ax.loglog(old_table.index, old_table["model_bps"], "^--", color="tab:red", label="old default (Corwin–Schultz, Y=1, 1 bar)")
big = taker[taker["notional"] >= 10_000]
ax.scatter(big["notional"], big["cost_bps"].clip(lower=1e-3), s=6, alpha=0.4, color="grey", label="real taker orders (0 drawn at 0.001)")
ax.set_xlabel("market order, USDT")
ax.set_ylabel("cost vs mid, bps")
ax.legend()
ax.set_title("BTC/USDT market-order cost: book, model, old default");'''),
        new_markdown_cell('''## Reading

* The spread is one tick (0.0016 bps) almost all the time; the Corwin–Schultz estimate from bars is 1.1 bps on these 1m bars
  and 13–14 bps on 2024's 1h bars: charging it would cost a strategy about 7 bps a side that the market does not take.
* A 100k–250k USDT market order costs well under 1 bp in this book (mean 0.2–0.5 bps), 2.1 bps at 1M; the 10 bps taker fee dominates.
* The book's cost grows about linearly with size; the square-root model with the fitted Y overcharges small orders and
  undercharges large ones, within 2× over 100k–1M USDT. This is one 11-minute sample of a busy evening: Y is an order of
  magnitude, which the cost-stress gate (costs × 2) covers.'''),
    ]
    return notebook(cells)


def demo_selection() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell('''# Choosing the demo's strategy, market and period

`make demo` backtests one configuration on the bundled real data and takes it through the paper and live gates.
Which one is chosen here, by a rule stated **before** the results, and never by loosening a threshold.

**The rule.** Market: BTC/USDT, the only market with years of bundled history. Timeframe: 1 hour (the bundled hourly
history runs 2017-08..2025-11; minute bars cover only 2022-06..2024-12). Period: the last three complete calendar
years, 2022-2024 (three years give a walk-forward out-of-sample record of about 2.7 years, what a true Sharpe of 1.5
needs for an 80 % chance of passing a 5 % one-sided test; `bench/bench_gates_mc.py`). Candidates: the three built-in
strategies with the grids below (two trend-following families, the documented time-series momentum of crypto, and
mean reversion as the control). Choice: among the candidates whose **paper** verdict passes, the one with the highest
deflated Sharpe ratio; if none passes, the demo shows a failing verdict and says why. The earlier three years,
2019-2021, are evaluated too, to see whether the conclusion depends on the period.

Every candidate's trials are recorded in this notebook's own temporary ledger, per strategy family, as a backtest
run through the CLI would record them.'''),
        _tagged(new_code_cell('''candidates = {
    "ma_cross": {"fast": [10, 20, 40], "slow": [100, 200, 400]},
    "donchian": {"window": [48, 96, 192], "exit_window": [24, 48]},
    "bollinger": {"window": [24, 48, 96], "k": [1.5, 2.0, 2.5]},
}
periods = [("2022-01-01", "2024-12-31"), ("2019-01-01", "2021-12-31")]
timeframe = "1h"''')),
        new_code_cell('''import tempfile
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from toolkit.backtest import TrialLedger, config_from_params, run_backtest
from toolkit.backtest.bundle import save_bundle
from toolkit.data import load_bars
from toolkit.data.quality import certify
from toolkit.gates import collect_evidence, evaluate, load_policy

paper, live = load_policy(stage="paper"), load_policy(stage="live")
work = Path(tempfile.mkdtemp(prefix="demo-selection-"))
rows = []
for start, end in periods:
    for strategy, grid in candidates.items():
        cfg = config_from_params(strategy=strategy, timeframe=timeframe, start=start, end=end, grid=grid)
        bars = load_bars(cfg.symbol, cfg.timeframe, cfg.start, cfg.end)
        result = run_backtest(cfg, bars, ledger=TrialLedger(work / f"{start}.db"), progress=False)
        where = work / f"{strategy}-{start}"
        save_bundle(result, bars, certify(bars, cfg.symbol, cfg.timeframe, start=start, end=end).to_dict(), where)
        evidence = collect_evidence(where, paper)
        v_paper, v_live = evaluate(evidence, paper), evaluate(evidence, live)
        g = {x.name: x for x in v_live.gates}
        rows.append({"period": f"{start[:4]}-{end[:4]}", "strategy": strategy, "chosen": result.chosen,
                     "oos_sharpe": g["oos_sharpe"].inputs["sharpe_oos_annual"], "psr": g["psr"].inputs["psr"],
                     "dsr": g["dsr"].inputs["dsr"], "max_dd_pct": g["max_drawdown"].inputs["max_drawdown_pct_of_allocation"],
                     "var99_pct": g["var_99_1d"].inputs["var_pct"],
                     "paper": "PASSED" if v_paper.passed else "failed: " + ", ".join(v_paper.failed),
                     "live": "PASSED" if v_live.passed else "failed: " + ", ".join(v_live.failed)})
table = pd.DataFrame(rows)
display(table.round(3))'''),
        new_markdown_cell('''## The choice'''),
        new_code_cell('''first = f"{periods[0][0][:4]}-{periods[0][1][:4]}"
eligible = table[(table["period"] == first) & (table["paper"] == "PASSED")]
if eligible.empty:
    display(Markdown(f"No candidate passes the paper policy on {first}: the demo will show a failing verdict."))
else:
    pick = eligible.sort_values("dsr", ascending=False).iloc[0]
    display(Markdown(f"**Chosen: `{pick['strategy']}` on BTC/USDT {timeframe}, {first}** (paper verdict passed; "
                     f"out-of-sample Sharpe {pick['oos_sharpe']:.2f}, DSR {pick['dsr']:.3f}; live: {pick['live']}). "
                     f"`toolkit/workflows/demo.py` (`DEMO_BACKTEST`) uses it with the grid above."))
other = table[table["period"] != first]
if not other.empty:
    display(Markdown("On the other period: " + "; ".join(f"{r.strategy} paper {r.paper}" for r in other.itertuples())))'''),
    ]
    return notebook(cells)


def notebooks() -> dict[Path, nbformat.NotebookNode]:
    """Return every notebook this script writes, by path (``tests/test_templates.py`` compares them)."""
    return {ROOT / "templates" / "backtest.ipynb": finish(backtest(), ["vectorbt", "toolkit.backtest.fused"]),
            ROOT / "notebooks" / "explore_strategy.ipynb": explore(),
            ROOT / "notebooks" / "cost_calibration.ipynb": cost_calibration(),
            ROOT / "notebooks" / "demo_selection.ipynb": demo_selection()}


if __name__ == "__main__":
    sys.exit(write(notebooks))
