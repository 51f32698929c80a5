"""The installed ``toolkit`` entry point: exit statuses reach the shell, JSON errors reach stdout, Ctrl-C is clean.

Each test runs the console script that ``pip install`` put in ``.venv/bin`` in a real
child process (not the typer app in-process), because that is what scripts and CI call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from suite_support import LONG_BACKTEST, assert_interrupted_keeping_nothing, ctrl_c_inside_template

ROOT = Path(__file__).resolve().parents[1]
TOOLKIT = str(Path(sys.executable).with_name("toolkit"))
HALT_DAY = ROOT / "tests" / "fixtures" / "BTCUSDT_1m_2023-03-24_halt.parquet"


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "TOOLKIT_ARTIFACTS": str(root / "artifacts"), "TOOLKIT_LEDGER": str(root / "trials.db"),
            "TOOLKIT_REPORTS_DIR": str(root / "reports"), "TOOLKIT_AUDIT": str(root / "audit.db")}


def _toolkit(args: list[str], root: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOLKIT, *args], env=_env(root), cwd=root, capture_output=True, text=True,
                          timeout=timeout)


def test_the_entry_point_is_installed() -> None:
    assert Path(TOOLKIT).is_file() and os.access(TOOLKIT, os.X_OK)


def test_data_check_exit_status_follows_the_certificate(tmp_path: Path) -> None:
    bad = _toolkit(["data", "check", "--timeframe", "1m", "--bars-file", str(HALT_DAY)], tmp_path)
    assert bad.returncode == 1, bad.stderr  # the halt day fails its certificate: a script must see it
    assert "FAILED" in bad.stdout and "longest_gap" in bad.stdout
    good = _toolkit(["data", "check", "--timeframe", "1h", "--start", "2024-01-01", "--end", "2024-01-31"],
                    tmp_path)
    assert good.returncode == 0, good.stderr
    assert "PASSED" in good.stdout
    asked = _toolkit(["data", "check", "--timeframe", "15m", "--start", "2024-04-01", "--end", "2024-06-30",
                      "--json"], tmp_path)
    cert = json.loads(asked.stdout)
    assert asked.returncode == 1 and "missing_bars" in cert["failed"]  # the requested range, not the data's


@pytest.mark.parametrize(("args", "code", "kind"), [
    (["status", "no.such.model", "--json"], 2, "ConfigurationError"),
    (["promote", "m", "--version", "1", "--json"], 2, "UsageError"),  # --reason is required
    (["backtest", "--strategy", "ma_cross", "--grid", "fast=5", "--grid", "fast=6", "--json"], 2,
     "ConfigurationError"),
    (["data", "check", "--bars-file", "nothing.csv", "--json"], 3, "DataError"),
])
def test_a_failing_json_command_prints_a_json_error_object(args: list[str], code: int, kind: str,
                                                          tmp_path: Path) -> None:
    proc = _toolkit(args, tmp_path)
    assert proc.returncode == code, proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["type"] == kind and error["exit_code"] == code and error["message"]
    assert "Traceback" not in proc.stderr


def _class_with_a_descriptor_interrupted_at_set_name() -> None:
    class Interrupted:
        def __set_name__(self, owner: type, name: str) -> None:
            raise KeyboardInterrupt  # a Ctrl-C landing while a module's classes are created

    type("Model", (), {"field": Interrupted()})


def test_a_ctrl_c_python_reports_as_another_error_is_still_an_interruption() -> None:
    from toolkit.errors import interrupted

    with pytest.raises(BaseException) as info:  # RuntimeError on Python 3.11, the interrupt itself on 3.12+
        _class_with_a_descriptor_interrupted_at_set_name()
    assert interrupted(info.value)
    assert isinstance(info.value, KeyboardInterrupt) or isinstance(info.value.__cause__, KeyboardInterrupt)
    assert not interrupted(RuntimeError("Error calling __set_name__"))
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("raised while handling, not caused by, the interrupt")  # noqa: B904
    except ValueError as exc:
        assert not interrupted(exc)


#: a ``sitecustomize`` interrupting the command's import of MLflow as a Ctrl-C landing there does (Python 3.11 turns
#: a KeyboardInterrupt raised while a class is created into a RuntimeError caused by it)
INTERRUPT_MLFLOW_IMPORT = """
import importlib.abc, sys

class _Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mlflow.utils.requirements_utils":
            sys.meta_path.remove(self)
            class Interrupted:
                def __set_name__(self, owner, name):
                    raise KeyboardInterrupt
            type("Model", (), {"field": Interrupted()})
        return None

sys.meta_path.insert(0, _Interrupt())
"""


def test_a_ctrl_c_inside_an_import_exits_130_with_one_line_and_keeps_nothing(tmp_path: Path) -> None:
    """Deterministic: the interrupt lands while the backtest imports MLflow (as one did in a CI run, where
    the command ended with a traceback)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(INTERRUPT_MLFLOW_IMPORT)
    proc = subprocess.run([TOOLKIT, "backtest", "--strategy", "ma_cross", "--timeframe", "1h", "--start",
                           "2024-01-01", "--end", "2024-01-31", "--grid", "fast=10", "--grid", "slow=50", "--json"],
                          env={**_env(tmp_path), "PYTHONPATH": str(site)}, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert_interrupted_keeping_nothing(proc, proc.stdout, proc.stderr, tmp_path / "reports")  # type: ignore[arg-type]


def test_ctrl_c_during_a_backtest_exits_130_with_one_line_and_keeps_nothing(tmp_path: Path) -> None:
    """SIGINT to the whole foreground process group (what a terminal sends) while the template runs."""
    proc = subprocess.Popen([TOOLKIT, *LONG_BACKTEST], env=_env(tmp_path), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    out, err, _ = ctrl_c_inside_template(proc, proc.pid, 1)  # its kernel, the command's one child, is up
    assert_interrupted_keeping_nothing(proc, out, err, tmp_path / "reports")
    assert not (tmp_path / "mlflow.db").exists() or _runs(tmp_path) == 0
    with pytest.raises(ProcessLookupError):  # nothing of the process group (the kernel) is left running
        os.killpg(proc.pid, 0)


def _runs(root: Path) -> int:
    from mlflow.entities import ViewType

    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    return len(c.search_runs([e.experiment_id for e in c.search_experiments(view_type=ViewType.ALL)],
                             run_view_type=ViewType.ALL))


#: what the commands need, each imported by the command that uses it when it runs (papermill, MLflow and
#: vectorbt by the workflows, ccxt by ``data fetch``, pandas by every command that reads bars)
COMMAND_DEPENDENCIES = ("aiohttp", "ccxt", "jsonschema", "matplotlib", "mlflow", "nbconvert", "nbformat", "numba",
                        "pandas", "papermill", "scipy", "vectorbt")


@pytest.mark.parametrize("args", [["--help"], ["backtest", "--help"], ["emulator", "serve", "--help"]])
def test_the_entry_point_imports_no_command_s_dependencies(args: list[str]) -> None:
    code = ("import json, sys\nfrom toolkit.cli import main\n"
            f"code = main({args!r})\n"
            "loaded = {m.split('.')[0] for m in sys.modules}\n"
            f"print(json.dumps([code, sorted(loaded & set({COMMAND_DEPENDENCIES!r}))]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0, []]


def test_the_entry_point_freezes_its_objects_before_exiting() -> None:
    """So the interpreter's finalisation skips full collections over them (seconds after mlflow, vectorbt)."""
    code = ("import atexit, gc, sys\natexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
            "sys.argv = ['toolkit', '--help']\nfrom toolkit.cli import cli\ncli()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "frozen True"
