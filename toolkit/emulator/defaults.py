"""The emulator's local-only default credentials (documented in docs/emulator.md).

A leaf module: ``toolkit emulator serve --help`` shows them as option defaults, and the ``toolkit``
entry point mounts that command without importing the server (or pandas).
"""

__all__ = ["DEFAULT_API_KEY", "DEFAULT_API_SECRET"]

DEFAULT_API_KEY = "emulator-api-key"
DEFAULT_API_SECRET = "emulator-api-secret"
