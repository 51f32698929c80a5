"""Attribution tests import the hand-built journal helpers beside them and the runner tests' registry helpers."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parent / "runner"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
