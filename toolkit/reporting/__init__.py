"""Reports: papermill execution, nbconvert HTML, the index, figures for the templates."""
