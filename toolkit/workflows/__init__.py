"""Workflows: run a template end to end (validate → papermill → nbconvert → record in MLflow → index).

``backtest.run_backtest_workflow``, ``gates.run_gates_workflow`` and ``demo.run_demo``. This
is the layer above the registry and the reporting adapter; nothing below imports it.
"""
