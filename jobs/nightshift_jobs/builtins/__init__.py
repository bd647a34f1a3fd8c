"""Built-in jobs, one module each; registry.py imports a module only when its job runs."""
