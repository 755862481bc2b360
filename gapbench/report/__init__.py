"""Reports: run records, leaderboards and plots, made from records alone."""
