"""Write templates/gates.ipynb from the cell sources below (run by hand after editing).

    .venv/bin/python tools/make_gates_template.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from notebook_writer import ROOT, finish, write

PARAMETERS = '''# Parameters (papermill injects overrides after this cell)
model_name = "ma_cross.BTC-USDT.1h"   # registered model <strategy>.<BASE-QUOTE>.<timeframe>
version = 1                           # its version number
stage = "live"                        # paper or live: the stage whose policy judges the version
policy_path = None                    # None: the stage's policy in force ($TOOLKIT_POLICY_<STAGE> or shipped)
output_dir = None                     # receives verdict.json and gate_evidence.json (None: a temp dir)
evidence_dir = None                   # a local evidence bundle; None: download the version's evidence/
registry_trials = None                # trials the registry holds for this strategy and market (None: not asked)
latency_path = None                   # JSON of latency samples recorded earlier for this bundle (None: measure)
paper_record_path = None              # the version's paper_record.json from attribution (None: no paper record)'''

SETUP = '''%matplotlib inline
import json
import tempfile
from pathlib import Path

from IPython.display import Markdown, display

from toolkit.gates import evaluate_bundle, load_policy
from toolkit.gates import plots

policy = load_policy(policy_path, stage=stage)
out = Path(output_dir or tempfile.mkdtemp(prefix="gates-"))
if evidence_dir is None:
    from toolkit.registry.adapter import download_evidence
    evidence_dir = download_evidence(model_name, int(version), out / "evidence")
latency = json.loads(Path(latency_path).read_text()) if latency_path else None
paper_record = json.loads(Path(paper_record_path).read_text()) if paper_record_path else None
evidence, verdict = evaluate_bundle(evidence_dir, policy, out, registry_trials, latency, paper_record)
display(Markdown(plots.verdict_header(verdict, policy)))'''


REGIMES = '''from toolkit.errors import ToolkitError
from toolkit.ops.plots import regime_figure, regime_summary
from toolkit.ops.regimes import regime_map

try:  # an hour is a bucket: daily bars, or fewer than a few weeks of bars, have no map
    regimes = regime_map(evidence.bundle.bars, evidence.config.symbol, evidence.config.costs,
                         reference_notional=policy.capital.allocation_usdt)
except ToolkitError as exc:
    display(Markdown(f"No regime map for these bars: {exc}"))
else:
    (out / "regime_map.json").write_text(regimes.to_json(), encoding="utf-8")
    display(Markdown(regime_summary(regimes)))
    regime_figure(regimes);'''


def gates() -> nbformat.NotebookNode:
    params = new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[
        new_markdown_cell("*Promotion-gate template. Run by `toolkit gates <model> --version N --stage paper|live` "
                          "through papermill, or in JupyterLab after editing the parameters cell. The verdict is a "
                          "pure function of the evidence and the stage's policy.*"),
        params,
        new_code_cell(SETUP),
        new_markdown_cell("## Gates\n\nEach gate: what was measured, the policy's threshold, pass or fail, "
                          "whether it votes at this stage, and why. A gate whose measurement is undefined fails. "
                          "Advisory gates are computed and shown but do not vote at this stage."),
        new_code_cell("display(Markdown(plots.stage_note(verdict, policy)))\ndisplay(plots.gate_table(verdict))"),
        new_markdown_cell("## Deflated Sharpe ratio against the number of trials\n\nThe same out-of-sample "
                          "returns deflated by the expected best Sharpe of N unskilled trials; the dot is the "
                          "ledger's actual N."),
        new_code_cell("plots.dsr_figure(evidence, policy);"),
        new_markdown_cell("## Probability of backtest overfitting\n\nCSCV logits of the in-sample winner's "
                          "out-of-sample rank; mass left of 0 is overfitting."),
        new_code_cell("plots.pbo_figure(evidence, policy);"),
        new_markdown_cell("## Drawdown against its limit"),
        new_code_cell("plots.drawdown_figure(evidence, policy);"),
        new_markdown_cell("## Decision latency against the budget"),
        new_code_cell("plots.latency_figure(evidence, policy);"),
        new_markdown_cell("## Liquidity regimes by hour of the week\n\nWhat is normal at each UTC hour of the "
                          "week on this market (volume, spread estimate, volatility, the cost model's slippage for "
                          "an order of the whole allocation): the runner's alerts judge a live figure against its "
                          "hour's bucket, not against the week's average. Not a gate."),
        new_code_cell(REGIMES),
        new_markdown_cell("## Identity"),
        new_code_cell("display(Markdown(plots.verdict_footer(verdict)))\nprint(verdict.summary())"),
    ])
    # what the cells import lazily (the evidence replays: the numba kernel, the bars' parquet reader)
    return finish(nb, preload=["toolkit.backtest.fused", "pyarrow.parquet"])


def notebooks() -> dict[Path, nbformat.NotebookNode]:
    """Return every notebook this script writes, by path (``tests/test_templates.py`` compares them)."""
    return {ROOT / "templates" / "gates.ipynb": gates()}


if __name__ == "__main__":
    sys.exit(write(notebooks))
