"""Built-in tasks, one package each; gapbench.registry imports them by name on first use."""
