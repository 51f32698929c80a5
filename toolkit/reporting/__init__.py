"""Reports: papermill execution and nbconvert HTML (``notebooks``), the index page (``index``), figures and
presentation helpers for the templates (``plots``, ``views``). Nothing here runs a workflow or touches MLflow."""
