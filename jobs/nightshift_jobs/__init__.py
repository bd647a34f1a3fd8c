"""The nightshift job runtime and its built-in jobs."""
