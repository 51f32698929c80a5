"""Research-to-production toolkit for a digital-asset trading desk.

Importing it installs :mod:`toolkit.importhooks` (optional third-party import-time work deferred to
its first use), so every process that uses the toolkit starts without it.
"""

from toolkit import importhooks as _importhooks

_importhooks.install()

__version__ = "0.1.0"
__all__ = ["__version__"]
