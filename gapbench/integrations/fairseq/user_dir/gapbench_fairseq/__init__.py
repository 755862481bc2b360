"""fairseq `--user-dir` entry: registers the `gapbench_translation` task.

fairseq imports a user dir as a top-level module named after its folder, so this folder has a
globally unique name and imports the real code by its package path."""

from gapbench.integrations.fairseq import task  # noqa: F401  (registers the task)
