"""toolkit.importhooks: jsonschema without the RFC 3987 parser, vectorbt without ccxt, same answers.

Each check runs in a fresh interpreter (``sys.modules`` is the thing under test). The real packages
are checked to still have the shape the hooks were written for: a release that changes it would
silently turn a hook off, which these tests report.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit import importhooks

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # a top-level name: found, not imported
    assert spec is not None and spec.submodule_search_locations, name
    return Path(next(iter(spec.submodule_search_locations)))


def test_the_installed_packages_still_have_the_shape_the_hooks_expect() -> None:
    package, body = importhooks.DEFERRED_PACKAGE
    assert (_package_dir(package) / "__init__.py").read_text().strip() == body
    custom = (_package_dir("vectorbt") / "data" / "custom.py").read_text()
    assert "from ccxt.base.exchange import Exchange as ExchangeT" in custom
    assert "except ImportError:\n    ExchangeT = tp.Any" in custom  # the fallback the hook relies on
    assert "        import ccxt\n" in custom  # CCXTData.download imports the real ccxt when called


def test_nbformat_and_jsonschema_import_without_building_the_parser() -> None:
    found = _python("import json, sys, toolkit, nbformat, jsonschema, rfc3987_syntax as r\n"
                    "built = sorted(m for m in ('rfc3987_syntax.syntax_helpers', 'lark') if m in sys.modules)\n"
                    "print(json.dumps([built, getattr(r, '__toolkit_deferred__', False)]))")
    assert found == [[], True]


@pytest.mark.slow  # builds the real Earley parser (seconds)
def test_the_iri_formats_are_still_checked_with_the_same_answers() -> None:
    found = _python(
        "import json, sys, toolkit, jsonschema\n"
        "v = jsonschema.Draft7Validator({'format': 'iri'}, format_checker=jsonschema.FormatChecker())\n"
        "good, bad = v.is_valid('http://example.com/r\u00e9sum\u00e9?q=1#x'), v.is_valid('http://exa mple.com/<>')\n"
        "import rfc3987_syntax as facade, rfc3987_syntax.syntax_helpers as real\n"
        "values = ['http://example.com', 'urn:isbn:0451450523', '//no/scheme', 'a b', 'http://[::1]:80/x', '']\n"
        "same = all(facade.is_valid_syntax(t, x) == real.is_valid_syntax(t, x)\n"
        "           for t in ('iri', 'iri_reference', 'absolute_iri') for x in values)\n"
        "ns = {}\n"
        "exec('from rfc3987_syntax import *', ns)\n"
        "print(json.dumps({'good': good, 'bad': bad, 'same': same,\n"
        "                  'star': sorted(k for k in ('parse', 'is_valid_syntax', 'syntax_parser') if k in ns)}))")
    assert found["good"] is True and found["bad"] is False  # the iri format is still checked
    assert found["same"] is True
    assert found["star"] == ["is_valid_syntax", "parse", "syntax_parser"]


def test_a_package_of_another_shape_is_imported_as_it_is(tmp_path: Path) -> None:
    package = tmp_path / importhooks.DEFERRED_PACKAGE[0]
    package.mkdir()
    (package / "__init__.py").write_text("MARK = 'own body'\n")
    found = _python("import json, toolkit, rfc3987_syntax as r\n"
                    "print(json.dumps([r.MARK, getattr(r, '__toolkit_deferred__', False)]))",
                    env={"PYTHONPATH": str(tmp_path)})
    assert found == ["own body", False]


def test_the_facade_loads_the_helpers_on_first_use_only(tmp_path: Path) -> None:
    package = tmp_path / importhooks.DEFERRED_PACKAGE[0]
    package.mkdir()
    (package / "__init__.py").write_text(importhooks.DEFERRED_PACKAGE[1] + "\n")
    (package / "syntax_helpers.py").write_text("import builtins\nbuiltins.LOADED = True\n"
                                               "def is_valid_syntax(term, value):\n    return (term, value)\n"
                                               "OTHER = 7\n")
    found = _python("import builtins, json, toolkit, rfc3987_syntax as r\n"
                    "first = getattr(builtins, 'LOADED', False)\n"
                    "answer = r.is_valid_syntax('iri', 'x')\n"
                    "print(json.dumps([first, getattr(builtins, 'LOADED', False), answer, r.OTHER]))",
                    env={"PYTHONPATH": str(tmp_path)})
    assert found == [False, True, True, 7]


def test_a_typing_only_import_is_absent_while_its_module_runs_and_present_after(tmp_path: Path) -> None:
    """The mechanism on stand-ins of vectorbt and ccxt (the real ones take seconds: the slow test below)."""
    (tmp_path / "ccxt" / "base").mkdir(parents=True)
    (tmp_path / "ccxt" / "__init__.py").write_text("import builtins\nbuiltins.CCXT_IMPORTS += 1\n")
    (tmp_path / "ccxt" / "base" / "__init__.py").write_text("")
    (tmp_path / "ccxt" / "base" / "exchange.py").write_text("class Exchange:\n    pass\n")
    (tmp_path / "vectorbt" / "data").mkdir(parents=True)
    (tmp_path / "vectorbt" / "__init__.py").write_text("")
    (tmp_path / "vectorbt" / "data" / "__init__.py").write_text("")
    (tmp_path / "vectorbt" / "data" / "custom.py").write_text(
        "try:\n    from ccxt.base.exchange import Exchange as ExchangeT\nexcept ImportError:\n    ExchangeT = None\n")
    found = _python("import builtins, json, sys, toolkit\n"
                    "builtins.CCXT_IMPORTS = 0\n"
                    "import vectorbt.data.custom as c\n"
                    "during = [builtins.CCXT_IMPORTS, c.ExchangeT is None, 'ccxt' in sys.modules]\n"
                    "import ccxt.base.exchange\n"
                    "print(json.dumps([during, builtins.CCXT_IMPORTS]))", env={"PYTHONPATH": str(tmp_path)})
    assert found == [[0, True, False], 1]


@pytest.mark.slow  # imports vectorbt and ccxt (seconds)
def test_vectorbt_imports_without_ccxt_which_still_imports_afterwards() -> None:
    found = _python("import json, sys, toolkit, vectorbt\n"
                    "during = 'ccxt' in sys.modules\n"
                    "import ccxt\n"
                    "print(json.dumps([during, hasattr(ccxt, 'binance'), hasattr(vectorbt, 'CCXTData')]))")
    assert found == [False, True, True]


def test_preload_imports_modules_and_skips_what_is_not_one() -> None:
    found = _python("import json, sys, toolkit.importhooks as h\n"
                    "h.preload(['colorsys', 'json.decoder', 'json.JSONDecoder', 'no_such_module_xyz',\n"
                    "           'toolkit.naming'])\n"
                    "print(json.dumps(sorted(m for m in ('colorsys', 'json.decoder', 'toolkit.naming',\n"
                    "                                    'no_such_module_xyz') if m in sys.modules)))")
    assert found == ["colorsys", "json.decoder", "toolkit.naming"]
