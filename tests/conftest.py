"""Shared test setup: one embedded-data cache for the whole session, so each data set is generated
once (the same code path a user hits on first run)."""

import os
import tempfile

import pytest

if "GAPBENCH_CACHE" not in os.environ:
    os.environ["GAPBENCH_CACHE"] = tempfile.mkdtemp(prefix="gapbench-test-cache-")


@pytest.fixture(scope="session")
def cache_dir() -> str:
    return os.environ["GAPBENCH_CACHE"]


# The tiny models slow down badly when two torch threads compete for the 2 cores with other work;
# one thread per test process is faster and keeps timings stable.
import torch  # noqa: E402

torch.set_num_threads(1)
