"""gapbench: a benchmark suite for sparse training (Scheduled Grow-and-Prune and baselines)."""

__version__ = "0.1.0"
