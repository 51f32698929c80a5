"""``toolkit warm``: an opt-in server that keeps the toolkit's imports in memory and forks each command from it.

A cold ``toolkit backtest`` imports mlflow, pandas, papermill and nbconvert in the CLI process, then starts a
kernel that imports ipykernel, vectorbt and the template's modules again: seconds of the same imports on
every run. ``toolkit warm start`` starts one detached process that imports all of it once and then only
accepts requests and forks. The ``toolkit`` entry point (:func:`toolkit.warm.client.run_warm`) hands its
argv, cwd, environment, umask and terminal descriptors to the server when one runs for this install; the
server forks a worker that runs the command and reports its exit status. A template's kernel started
inside a worker is forked by the server too (:mod:`toolkit.warm.kernels`).

Modules: :mod:`~toolkit.warm.paths` (imported by every ``toolkit`` process, so it imports almost
nothing), :mod:`~toolkit.warm.protocol` (messages), :mod:`~toolkit.warm.client`, :mod:`~toolkit.warm.server`
(the fork-safety rules are in its docstring), :mod:`~toolkit.warm.child` (what it imports and watches, how a
child adopts the requester), :mod:`~toolkit.warm.kernels`, :mod:`~toolkit.warm.cli`.
"""
