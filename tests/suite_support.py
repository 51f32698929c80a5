"""What the test folders' conftests share: the folders are not packages, so a folder whose tests import another
folder's helper modules (``*_support.py``) puts that folder on ``sys.path``. ``tests/`` itself is on it (the
suite's root conftest), which is how this module imports."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def import_helpers_from(*folders: Path | str) -> None:
    """Put ``folders`` (paths, or names of folders under ``tests/``) first on ``sys.path``, each once."""
    for folder in folders:
        p = str(folder if isinstance(folder, Path) else TESTS / folder)
        if p not in sys.path:
            sys.path.insert(0, p)
