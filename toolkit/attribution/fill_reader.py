"""Read a journal's fills in a process of its own (:func:`toolkit.attribution.frames.read_journal_frames`).

Run as a script (``python fill_reader.py OUT``) with a pickled job on stdin: the journal's path,
the fills' query (``/*ASSETS*/`` where the fee asset's code goes), its named parameters (a range
of rowids ``first``…``last`` among them) and the row dtype. It reads the range's fee assets, then
the rows with ``np.fromiter``, and pickles ``("rows", rows, assets)`` to ``OUT`` (or ``("error",
exception)``): the parent reads the other tables and the rest of the fills meanwhile, each process
on its own core and with its own GIL (threads would hand the GIL over at every row). Imports only
the standard library and numpy, so it starts in a fraction of a second.
"""

from __future__ import annotations

import gc
import pickle
import sqlite3
import sys
from typing import Any

import numpy as np


def read(con: sqlite3.Connection, job: dict[str, Any]) -> tuple[np.ndarray, list[Any]]:
    """Return the rows of ``job["sql"]`` and the fee assets its codes index (the fills of its rowid range)."""
    assets = [r[0] for r in con.execute("SELECT DISTINCT fee_asset FROM fills WHERE rowid BETWEEN :first AND :last",
                                        {"first": job["params"]["first"], "last": job["params"]["last"]})]
    case = "(CASE f.fee_asset " + " ".join(f"WHEN :asset{k} THEN {k}" for k in range(len(assets))) + " END)" \
        if assets else "0"
    params = {**job["params"], **{f"asset{k}": a for k, a in enumerate(assets)}}
    return np.fromiter(con.execute(job["sql"].replace("/*ASSETS*/", case), params), dtype=job["dtype"]), assets


def main(out: str) -> int:
    gc.disable()  # a million row tuples, none cyclic
    job = pickle.load(sys.stdin.buffer)
    try:
        con = sqlite3.connect(f"file:{job['path']}?mode=ro", uri=True, timeout=30)
        try:
            result: tuple[Any, ...] = ("rows", *read(con, job))
        finally:
            con.close()
    except Exception as exc:  # handed to the parent, which raises it
        result = ("error", exc)
    with open(out, "wb") as fh:
        pickle.dump(result, fh, protocol=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
