"""numba caches: compiled once, loaded (not recompiled) by the next process, in an ignored, writable folder.

Every template run starts a fresh kernel, so a warm run depends on this. ``toolkit/strategies/sizing.py``
(``cache=True``, like vectorbt's kernels) is the toolkit's own compiled code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALL = ("import json, numpy as np\nfrom toolkit.strategies import sizing\n"
        "sizing.Sizing().apply_band(np.array([0.1, 0.2, 0.0, -0.1]))\n"
        "st = sizing._compiled[0].stats\n"
        "print(json.dumps([st.cache_path, sum(st.cache_hits.values()), sum(st.cache_misses.values())]))")


def _run() -> list:
    proc = subprocess.run([sys.executable, "-c", CALL], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_next_process_loads_the_compiled_band_from_the_cache() -> None:
    _run()  # compiles and writes the cache, unless an earlier run did
    path, hits, misses = _run()
    assert (hits, misses) == (1, 0)
    assert os.access(path, os.W_OK)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(Path(path) / "x.nbi")], cwd=ROOT)
    assert ignored.returncode == 0, f"{path} is not ignored by git"
