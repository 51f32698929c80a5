"""Write templates/incident.ipynb from the cell sources below (run by hand after editing).

    .venv/bin/python tools/make_incident_template.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from notebook_writer import ROOT, finish, write

PARAMETERS = '''# Parameters (papermill injects overrides after this cell)
incident_id = 1              # the incident (`runner incidents --all` lists the ids)
journal = "runner.sqlite"    # the runner's journal (read-only)
hours = 6.0                  # the window: hours before the incident opened and after it was resolved
deployment = None            # an account-wide incident in a journal of several deployments: whose PnL to show
symbol = None                # the market (None: the deployment's orders say which)
capital = None               # the deployment's capital for bps (None: inferred from its first order from flat)
output_dir = None            # receives incident.json for the calling workflow (None: nothing kept)'''

SETUP = '''%matplotlib inline
import json
from pathlib import Path

from IPython.display import Markdown, display

from toolkit.ops import incident_plots as plots
from toolkit.ops.incident import incident_report

report = incident_report(journal, int(incident_id), hours, deployment, symbol, capital)
if output_dir:
    (Path(output_dir) / "incident.json").write_text(json.dumps(report.to_dict(), indent=1, sort_keys=True,
                                                               default=str), encoding="utf-8")
display(Markdown(plots.header(report)))'''

RUNBOOK = '''book = Path(plots.__file__).resolve().parents[2] / "runner" / "runbooks" / f"{report.incident['kind']}.md"
display(Markdown(f"Runbook: `{book}`" if book.is_file() else
                 f"No runbook named `{report.incident['kind']}.md`: see `runner/runbooks/` and docs/operations.md."))'''


def incident() -> nbformat.NotebookNode:
    params = new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[
        new_markdown_cell("*Incident report template. Run by `toolkit incident <ID> --journal PATH` through "
                          "papermill, or in JupyterLab after editing the parameters cell.*"),
        params,
        new_code_cell(SETUP),
        new_markdown_cell("## What the runner did\n\nFrom the journal: decisions that sent no order while this "
                          "incident blocked new orders, orders cancelled, refused or never placed, flatten orders, "
                          "version rollbacks and halts inside the window."),
        new_code_cell("display(Markdown(plots.actions_markdown(report)))\n" + RUNBOOK),
        new_markdown_cell("## Timeline\n\nEverything the journal holds in the window, oldest first: closed bars, "
                          "decisions, order state changes, fills, incidents (opened, acknowledged, resolved), "
                          "version switches and reconciliations. This incident's rows are in bold."),
        new_code_cell("display(plots.timeline_table(report))"),
        new_markdown_cell("## Market context\n\nThe incident's hour against what is normal in its hour-of-week "
                          "bucket: the regime map measured on the 1-minute bars of the four weeks before it "
                          "(`toolkit regimes`). Each figure is the median over the hour's 1-minute bars; "
                          "*where* is the interval of the bucket's quantiles it falls in."),
        new_code_cell("c = report.context\n"
                      "if c.unavailable:\n"
                      "    display(Markdown(f'**No market context**: {c.unavailable}'))\n"
                      "else:\n"
                      "    display(Markdown(f'**{c.bucket_label}**, regime **{c.regime}** (map `{c.map_sha256[:12]}` "
                      "measured on {c.map_source})'))\n"
                      "    display(plots.context_table(report))\n"
                      "fig = plots.context_figure(report)"),
        new_markdown_cell("## PnL impact\n\nThe deployment's position marked to market at its bar closes over the "
                          "window, against holding flat (zero): the move of the position held at the start "
                          "(carry) and the window's fills (trading, fees included). Exact, from the journal's "
                          "fills."),
        new_code_cell("p = report.pnl\n"
                      "if p is None:\n"
                      "    display(Markdown('An account-wide incident in a journal of several deployments: pass "
                      "`--deployment` for a PnL.'))\n"
                      "else:\n"
                      "    display(Markdown(p.sentence() + '.'))\n"
                      "    fig = plots.pnl_figure(report)"),
    ])
    # what the cells import lazily (the bar store's parquet reader, the regime map's cost model)
    return finish(nb, preload=["pyarrow.parquet", "toolkit.ops.regimes", "toolkit.data.store"])


def notebooks() -> dict[Path, nbformat.NotebookNode]:
    """Return every notebook this script writes, by path (``tests/test_templates.py`` compares them)."""
    return {ROOT / "templates" / "incident.ipynb": incident()}


if __name__ == "__main__":
    sys.exit(write(notebooks))
