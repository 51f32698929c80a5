"""Write templates/attribution.ipynb from the cell sources below (run by hand after editing).

    .venv/bin/python tools/make_attribution_template.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from notebook_writer import ROOT, finish, write

PARAMETERS = '''# Parameters (papermill injects overrides after this cell)
model = "ma_cross.BTC-USDT.1h"   # registered model the journal's deployment trades
version = None                    # its version (None: the latest the journal traded)
journal = "runner.sqlite"         # the runner's journal (read-only)
start = None                      # period start (UTC; None: the first decision)
end = None                        # period end, excluded (None: the last decision)
capital = None                    # the deployment's capital (None: inferred from its first order from flat)
quotes = None                     # Parquet of best bid/ask by time: splits trading cost in half-spread and impact
deployment = None                 # the journal's deployment (None: the one trading the model)
execution_tolerance_bps = None    # bps above the fill model before execution is "worse" (None: the paper policy's)
output_dir = None                 # receives attribution.pickle for the calling workflow (None: nothing kept)'''

SETUP = '''%matplotlib inline
import pickle
from pathlib import Path

from IPython.display import Markdown, display

from toolkit.attribution import plots
from toolkit.workflows.attribution import load_attribution

att = load_attribution(model, journal, version, start, end, capital, quotes, deployment,
                       execution_tolerance_bps=execution_tolerance_bps)
if output_dir:
    (Path(output_dir) / "attribution.pickle").write_bytes(pickle.dumps(att))
display(Markdown(plots.header(att)))'''


def attribution() -> nbformat.NotebookNode:
    params = new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[
        new_markdown_cell("*Post-trade attribution template. Run by `toolkit attribute <model> --journal PATH` "
                          "through papermill, or in JupyterLab after editing the parameters cell.*"),
        params,
        new_code_cell(SETUP),
        new_markdown_cell("## Implementation shortfall\n\nPer decision (all its legs): delay (decision → arrival), "
                          "trading (fills against the arrival price; split into half-spread and impact where quotes "
                          "exist), opportunity (the unfilled part, to the price when the order ended) and fees, in "
                          "bps of the paper notional X·P_d. Positive is a cost."),
        new_code_cell("plots.waterfall_figure(att);"),
        new_code_cell("plots.heatmap_figure(att);"),
        new_code_cell("for key in ('hour', 'weekend', 'regime', 'size_bucket'):\n"
                      "    display(Markdown(f'**By {key.replace(\"_\", \" \")}**'))\n"
                      "    display(plots.orders_table(att, key))"),
        new_markdown_cell("## Slippage by hour of the week\n\nThe trading cost against the arrival price (bps of "
                          "each order's notional) in the hour-of-week bucket its bar closed in, beside the slippage "
                          "the version's regime map models for that bucket (stored with its verdict; the alert "
                          "rules' thresholds come from the same map). By regime first — the map's regime of the hour: the tercile of its "
                          "median volume among the week's 168 hours, unlike the *By regime* table above, which "
                          "compares the bar's volume with its own last 30 days — then per bucket traded."),
        new_code_cell("from toolkit.ops.slippage import slippage_table\n\n"
                      "display(slippage_table(att.slippage, by_regime=True))\n"
                      "display(slippage_table(att.slippage))"),
        new_markdown_cell("## Live against the backtest\n\nThe same version replayed over the same bars by the "
                          "backtest's engine. The gap is split into signal (different holdings, with the reason), "
                          "execution (fills against the decision price, live minus the fill model), fees, and a "
                          "residual that should be close to zero."),
        new_code_cell("plots.equity_figure(att);"),
        new_code_cell("display(plots.gap_table(att))\ndisplay(Markdown('**Signal differences by reason**'))\n"
                      "display(plots.reasons_table(att))"),
        new_markdown_cell("## Drawdowns\n\nThe deepest episodes of the live equity, what they came from and their "
                          "class; dashed lines: the backtest's block-bootstrap drawdown quantiles over as many bars."),
        new_code_cell("plots.drawdown_figure(att);"),
        new_code_cell("display(plots.drawdown_table(att))"),
        new_markdown_cell("## Paper record\n\nWhat the `live` stage's `paper_record` gate reads (inputs stored with "
                          "the verdict, so it re-derives)."),
        new_code_cell("rec = att.paper_record()\n"
                      "display({k: v for k, v in rec.items() if k != 'inputs'})"),
    ])
    return finish(nb)


def notebooks() -> dict[Path, nbformat.NotebookNode]:
    """Return every notebook this script writes, by path (``tests/test_templates.py`` compares them)."""
    return {ROOT / "templates" / "attribution.ipynb": attribution()}


if __name__ == "__main__":
    sys.exit(write(notebooks))
