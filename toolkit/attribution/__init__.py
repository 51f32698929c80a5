"""Post-trade attribution of a deployed version: implementation shortfall, PnL split, verdict, drawdowns.

``read_journal`` reads the runner's journal (read-only, exact decimals; ``read_journal_frames`` the same as
checked float64 columns, and ``fast_shortfall_frame`` decomposes them vectorised, the path ``attribute``
runs, held equal to the exact ``shortfalls``); ``attribute`` runs the
whole analysis on what the caller loaded and returns an ``Attribution``; ``evaluate_record``
is the edge-vs-execution verdict, a pure function of its ``RecordInputs``; the ``paper_record``
block it yields is what the ``live`` stage's gate reads (``rederive_paper_record`` re-checks it).
This package talks to no registry and renders nothing (``toolkit.workflows.attribution`` does).
"""

from toolkit.attribution.errors import JournalError
from toolkit.attribution.fast import fast_shortfall_frame, read_journal_frames
from toolkit.attribution.journal import JournalData, read_journal
from toolkit.attribution.record import PAPER_RECORD_FILE, paper_record_block, rederive_paper_record
from toolkit.attribution.report import Attribution, attribute, backtest_decision_returns
from toolkit.attribution.shortfall import OrderShortfall, order_shortfall, shortfalls
from toolkit.attribution.verdict import VERDICTS, RecordInputs, RecordVerdict, evaluate_record

__all__ = [
    "PAPER_RECORD_FILE",
    "VERDICTS",
    "Attribution",
    "JournalData",
    "JournalError",
    "OrderShortfall",
    "RecordInputs",
    "RecordVerdict",
    "attribute",
    "backtest_decision_returns",
    "evaluate_record",
    "fast_shortfall_frame",
    "order_shortfall",
    "paper_record_block",
    "read_journal",
    "read_journal_frames",
    "rederive_paper_record",
    "shortfalls",
]
