"""Import hooks that keep optional, expensive import-time work out of every toolkit process.

``toolkit/__init__.py`` installs them (:func:`install`), so the CLI, the papermill kernels running
the templates and plain scripts all get them before anything imports jsonschema or vectorbt.
Each hook changes *when* third-party code runs, never what it computes, and each checks that the
package still looks the way it was written for; when it does not, the normal import happens.

``rfc3987_syntax``
    jsonschema's format checker imports ``rfc3987_syntax.is_valid_syntax`` at import when that
    package is installed (it is: jupyter-events asks for ``jsonschema[format-nongpl]``), and
    ``rfc3987_syntax`` builds a lark Earley parser of the RFC 3987 grammar at import: about 3 s on
    this project's machine. nbformat imports jsonschema, and papermill, nbconvert and vectorbt
    (through plotly's renderers) import nbformat, so every template run paid it twice (the CLI and
    the kernel). The parser only serves the ``iri`` and ``iri-reference`` formats of a schema
    validated with a ``FormatChecker``, which none of these processes does. The hook imports the
    package as a facade whose names (``is_valid_syntax`` included) load the real
    ``syntax_helpers`` module, and build the parser, on first use; a validation that needs it
    still gets it (``tests/test_importhooks.py``).

``ccxt`` imported by ``vectorbt.data.custom``
    vectorbt imports ccxt's ``Exchange`` class only to annotate ``CCXTData.download_symbol``,
    inside ``try/except ImportError`` (falling back to ``Any``), and imports ccxt again inside the
    method that uses it. Importing ccxt costs about 1 s and a backtest never talks to an exchange.
    While that one module executes, and only when ccxt is not imported yet, ccxt is absent to it:
    the annotation becomes ``Any``; ``CCXTData.download`` imports the real ccxt when called.
    (``sys.modules`` is shared: another thread importing ccxt during those milliseconds would
    fail. Imports happen on the main thread in toolkit processes.)
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["DEFERRED_PACKAGE", "TYPING_ONLY_IMPORTS", "install", "installed", "preload"]

#: the package whose import is deferred to its first use, and the exact body of its ``__init__.py``
#: the facade stands in for (any other body: the normal import)
DEFERRED_PACKAGE = ("rfc3987_syntax", "from .syntax_helpers import *")
#: module -> top-level packages it imports only for annotations (inside ``try/except ImportError``)
TYPING_ONLY_IMPORTS = {"vectorbt.data.custom": ("ccxt",)}
#: the line of ``vectorbt.data.custom`` that the hook relies on; any other source: the normal import
_TYPING_ONLY_LINE = {"vectorbt.data.custom": "from ccxt.base.exchange import Exchange as ExchangeT"}


class _Facade(importlib.abc.Loader):
    """Load ``rfc3987_syntax`` as a module whose names come from ``syntax_helpers`` on first use."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        name = module.__name__

        def real() -> ModuleType:
            return importlib.import_module(f"{name}.syntax_helpers")  # builds the parser, once

        def is_valid_syntax(term: str, value: str) -> bool:
            """Return whether ``value`` matches the RFC 3987 rule ``term`` (loads the parser on first call)."""
            return bool(real().is_valid_syntax(term, value))

        def __getattr__(attr: str) -> Any:  # noqa: N807 - the module-level hook of PEP 562
            if attr == "__all__":  # what ``from rfc3987_syntax import *`` gave: the helpers' public names
                return [n for n in vars(real()) if not n.startswith("_")]
            if attr.startswith("__"):
                raise AttributeError(attr)
            return getattr(real(), attr)

        module.is_valid_syntax = is_valid_syntax  # type: ignore[attr-defined]
        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        module.__toolkit_deferred__ = True  # type: ignore[attr-defined]


class _WithoutTypingOnlyImports(importlib.abc.Loader):
    """Execute a module while the packages it imports only for annotations are absent to it."""

    def __init__(self, loader: importlib.abc.Loader, absent: Sequence[str]) -> None:
        self.loader = loader
        self.absent = tuple(absent)

    def __getattr__(self, attr: str) -> Any:  # get_source, get_code …: the real loader's
        return getattr(self.loader, attr)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        hidden = [name for name in self.absent if name not in sys.modules]
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]  # ``import name`` raises ImportError
        try:
            self.loader.exec_module(module)
        finally:
            for name in hidden:
                if sys.modules.get(name, 0) is None:
                    del sys.modules[name]


def _source_of(spec: importlib.machinery.ModuleSpec) -> str | None:
    loader = spec.loader
    get_source = getattr(loader, "get_source", None)
    try:
        return get_source(spec.name) if callable(get_source) else None
    except (ImportError, OSError):
        return None


class _Finder(importlib.abc.MetaPathFinder):
    """Find the real module with the other finders, then wrap its loading as described above."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        package, init_body = DEFERRED_PACKAGE
        if fullname != package and fullname not in TYPING_ONLY_IMPORTS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        source = _source_of(spec)
        if fullname == package:
            if source is None or source.strip() != init_body or not spec.submodule_search_locations:
                return None
            facade = importlib.machinery.ModuleSpec(fullname, _Facade(), origin=spec.origin, is_package=True)
            facade.submodule_search_locations = list(spec.submodule_search_locations)
            facade.has_location = spec.has_location
            return facade
        if source is None or _TYPING_ONLY_LINE[fullname] not in source:
            return None
        spec.loader = _WithoutTypingOnlyImports(spec.loader, TYPING_ONLY_IMPORTS[fullname])
        return spec


_FINDER = _Finder()


def install() -> None:
    """Put the hooks first on ``sys.meta_path`` (idempotent); modules imported already are left as they are."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def installed() -> bool:
    """Return whether the hooks are on ``sys.meta_path``."""
    return _FINDER in sys.meta_path


def preload(modules: Sequence[str]) -> None:
    """Import ``modules`` now, in order; skip any that fails, or that names no module, silently.

    A template kernel runs this at start-up with the modules its template imports
    (``toolkit.reporting.kernels.template_imports``), so the cells find them loaded; an import that
    fails is left for its cell to report where the reader sees it.
    """
    for name in modules:
        try:
            if "." in name and importlib.util.find_spec(name) is None:  # ``from m import a``: a is no module
                continue
            importlib.import_module(name)
        except Exception:  # reported by the cell that imports it
            continue
